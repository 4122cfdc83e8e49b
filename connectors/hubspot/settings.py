"""The ``hubspot`` settings section: what the HubSpot connector needs, declared beside it.

The service composes this section into its settings model; the connector is built from it alone.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from connectors.settings import Section


class HubSpotCompanyProperties(Section):
    """Which HubSpot company property feeds each account column (null: not held in HubSpot)."""

    name: str = "name"
    owner_id: str = "hubspot_owner_id"
    tier: str | None = "territory_tier"
    industry: str | None = "industry"
    arr: str | None = "annualrevenue"
    potential: str | None = "territory_potential"
    lat: str | None = "territory_lat"
    lon: str | None = "territory_lon"
    protected: str | None = "territory_protected"


class HubSpotDealProperties(Section):
    """Which HubSpot deal property feeds each opportunity column (null: not held in HubSpot)."""

    name: str | None = "dealname"
    owner_id: str | None = "hubspot_owner_id"
    stage: str | None = "dealstage"
    amount: str | None = "amount"
    probability: str | None = "hs_deal_stage_probability"
    close_date: str | None = "closedate"
    is_closed: str | None = "hs_is_closed"
    is_won: str | None = "hs_is_closed_won"


class HubSpotSettings(Section):
    """The HubSpot connector: API host, paging, retries and the property mapping.

    The private app's access token is a secret: ``TERRITORY_HUBSPOT__ACCESS_TOKEN``, environment only.
    """

    key: ClassVar[str] = "hubspot"

    base_url: str = Field("https://api.hubapi.com", description="API host; the sandbox's URL in tests")
    access_token: SecretStr | None = Field(None, description="private app access token (environment only)")
    search_page_size: int = Field(200, ge=1, le=200, description="records per search request")
    search_requests_per_second: float = Field(
        4.0, ge=0, le=1000, description="pace of search requests (HubSpot allows 5/s); 0: unpaced"
    )
    list_page_size: int = Field(100, ge=1, le=100, description="records per list request (archived)")
    batch_size: int = Field(100, ge=1, le=100, description="records per batch read or update")
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="per request")
    max_attempts: int = Field(6, ge=1, le=20, description="tries per request on 429, 5xx, timeouts")
    max_wait_seconds: float = Field(60.0, ge=0, le=3600, description="longest wait between tries")
    quota_share: float = Field(
        0.8, gt=0, le=1, description="stop before the account's daily API usage passes this share"
    )
    companies: HubSpotCompanyProperties = Field(default_factory=HubSpotCompanyProperties)
    deals: HubSpotDealProperties = Field(default_factory=HubSpotDealProperties)
