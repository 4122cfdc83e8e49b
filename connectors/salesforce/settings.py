"""The ``salesforce`` settings section: what the Salesforce connector needs, declared beside it.

The field mapping's defaults are declared here once; :mod:`connectors.salesforce.mapping` reads them
from these models. The service composes this section into its settings model.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from connectors.settings import Section


class SalesforceUserFields(Section):
    """Which User field feeds each owner column (null: not held in Salesforce, e.g. from sync.roster)."""

    id: str = "Id"
    name: str | None = "Name"
    email: str | None = "Email"
    region: str | None = "Division"
    team: str | None = "Department"
    capacity: str | None = "Capacity__c"
    home_lat: str | None = "Home_Latitude__c"
    home_lon: str | None = "Home_Longitude__c"
    quota: str | None = "Quota__c"
    active: str | None = "IsActive"
    modified_at: str | None = "SystemModstamp"


class SalesforceAccountFields(Section):
    """Which Account field feeds each account column (null: not held in Salesforce)."""

    id: str = "Id"
    name: str | None = "Name"
    owner_id: str | None = "OwnerId"
    tier: str | None = "Tier__c"
    industry: str | None = "Industry"
    arr: str | None = "ARR__c"
    potential: str | None = "Potential__c"
    lat: str | None = "BillingLatitude"
    lon: str | None = "BillingLongitude"
    protected: str | None = "Protected__c"
    modified_at: str | None = "SystemModstamp"


class SalesforceOpportunityFields(Section):
    """Which Opportunity field feeds each opportunity column (null: not held in Salesforce)."""

    id: str = "Id"
    account_id: str | None = "AccountId"
    owner_id: str | None = "OwnerId"
    name: str | None = "Name"
    stage: str | None = "StageName"
    amount: str | None = "Amount"
    probability: str | None = "Probability"
    close_date: str | None = "CloseDate"
    is_closed: str | None = "IsClosed"
    is_won: str | None = "IsWon"
    modified_at: str | None = "SystemModstamp"


class SalesforceFields(Section):
    """The field mapping of the three objects the connector reads."""

    owners: SalesforceUserFields = Field(default_factory=SalesforceUserFields)
    accounts: SalesforceAccountFields = Field(default_factory=SalesforceAccountFields)
    opportunities: SalesforceOpportunityFields = Field(default_factory=SalesforceOpportunityFields)


class SalesforceSettings(Section):
    """The Salesforce connector: auth, API version, reads, quota guard, field mapping.

    Secrets, environment only: ``TERRITORY_SALESFORCE__ACCESS_TOKEN``, ``..._PASSWORD``,
    ``..._SECURITY_TOKEN``.
    """

    key: ClassVar[str] = "salesforce"

    auth: Literal["access_token", "password", "jwt"] = Field(
        "password", description="access_token (+ instance_url), password (+ token) or jwt (bearer flow)"
    )
    login_url: str = Field("https://login.salesforce.com", description="login host: login, test or My Domain")
    instance_url: str | None = Field(None, description="the org's URL, for auth: access_token")
    username: str | None = Field(None, description="API user, for password and jwt")
    consumer_key: str | None = Field(None, description="connected app's consumer key, for jwt")
    private_key_path: Path | None = Field(None, description="PEM RSA key the connected app trusts, for jwt")
    access_token: SecretStr | None = Field(None, description="session id (environment only)")
    password: SecretStr | None = Field(None, description="API user's password (environment only)")
    security_token: SecretStr | None = Field(None, description="API user's security token (environment only)")
    api_version: str = Field("59.0", pattern=r"^\d+\.\d$", description="REST API version, without the v")
    ca_bundle: Path | None = Field(None, description="CA file to trust instead of the system's (the sandbox)")

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no CA file at {value}")
        return value

    lookback_seconds: int = Field(
        0, ge=0, le=86_400, description="extra re-read before the cursor, on top of sync.lookback_seconds"
    )
    page_size: int = Field(2000, ge=200, le=2000, description="records per REST query page")
    bulk_threshold_rows: int = Field(
        50_000, ge=0, description="a full read of more rows than this uses Bulk API 2.0"
    )
    bulk_page_rows: int = Field(50_000, ge=1, le=1_000_000, description="rows per Bulk API 2.0 result page")
    bulk_poll_seconds: float = Field(0.5, gt=0, le=60, description="first wait before polling a bulk job")
    quota_share: float = Field(
        0.8, gt=0, le=1, description="stop before the org's daily API usage passes this share"
    )
    timeout_seconds: float = Field(60.0, gt=0, le=600, description="per request")
    max_attempts: int = Field(5, ge=1, le=20, description="tries per request on 429, 5xx, timeouts")
    max_wait_seconds: float = Field(60.0, ge=0, le=3600, description="longest wait between tries")
    probability_is_percent: bool = Field(True, description="Probability holds 0-100 (Salesforce's own)")
    fields: SalesforceFields = Field(default_factory=SalesforceFields)
