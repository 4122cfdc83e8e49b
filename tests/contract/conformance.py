"""What the connector conformance suite needs of a CRM, and how each sandbox provides it.

``test_conformance.py`` runs one suite of the behaviours every CRM connector shares (Retry-After,
5xx, churn while paging, the quota stop, a refused credential, conflict-checked write-back) against
each :class:`Crm` here, as meltano's ``get_tap_test_class`` runs one suite against every tap. A new
CRM joins the suite by adding a harness to :data:`HARNESSES`; its quirks stay in its own test module.
This module is a helper, not a test module: pytest collects nothing from it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from connectors.base import Connector
from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.connector import HubSpotConnector
from connectors.hubspot.settings import HubSpotSettings
from connectors.salesforce.auth import AuthMethod, Credentials
from connectors.salesforce.client import SalesforceClient, make_session
from connectors.salesforce.connector import SalesforceConnector
from connectors.salesforce.mapping import build_mappings
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.streams import StreamOptions
from connectors.sandbox import hubspot as hs
from connectors.sandbox import salesforce as sf
from connectors.sandbox.generator import DEFAULT_NOW, Org, generate_org

ORG: Org = generate_org(accounts=300, reps=8, seed=5, now=DEFAULT_NOW)

Sleep = Callable[[float], None]


class RecordedSleep:
    """Stands in for ``time.sleep``: records each wait; sleeps the short ones for real, so tests stay fast."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        if seconds <= 0.2:
            time.sleep(seconds)


class Crm(Protocol):
    """One CRM's sandbox and connector, as the shared suite drives them."""

    name: str
    org: Org
    secret_env: str  # the variable a refused credential's message names
    server_error: str  # what the error of a request that kept failing says (a regex)

    def connector(
        self,
        *,
        sleep: Sleep | None = None,
        max_attempts: int = 4,
        quota_share: float = 0.8,
        page_size: int = 100,
        refused_credential: bool = False,
    ) -> Connector:
        """A connector of the sandbox; ``refused_credential``: one the CRM refuses and it cannot renew."""
        ...

    def throttle(self, retry_after: float) -> None:
        """Answer some of the next requests 429 (or 503) with this ``Retry-After``."""
        ...

    def fail(self, *, share: float) -> None:
        """Answer this share of the requests with a 5xx."""
        ...

    def churn(self, *, modify: int, delete: int) -> None:
        """After each page served, rename ``modify`` and delete ``delete`` records of the paged object."""
        ...

    def calm(self) -> None:
        """No more faults."""
        ...

    def throttled(self) -> int:
        """Throttled answers (with Retry-After) given so far."""
        ...

    def api_calls(self) -> int:
        """API requests counted against the daily allowance so far."""
        ...

    def set_usage(self, used: int, limit: int) -> None:
        """The daily allowance and how much of it is spent."""
        ...

    def live_accounts(self) -> dict[str, str]:
        """Id -> name of every account the CRM holds (not deleted)."""
        ...

    def owner_of(self, account_id: str) -> str:
        """The account's owner as the CRM holds it now."""
        ...

    def set_owner(self, account_id: str, owner_id: str) -> None:
        """Someone changes the account's owner in the CRM."""
        ...

    def account_ids(self) -> list[str]:
        """The ids of the org's accounts, in the org's order."""
        ...

    def owner_ids(self) -> list[str]:
        """The ids of the org's active owners."""
        ...


class SalesforceCrm:
    """The Salesforce sandbox (TLS, simple-salesforce) behind :class:`Crm`."""

    name = "salesforce"
    org = ORG
    secret_env = SalesforceSettings.env("access_token")
    server_error = r"salesforce answered 500"

    def __init__(self, server: sf.SandboxServer) -> None:
        self.server = server
        self._planned_failures = 0

    def connector(
        self,
        *,
        sleep: Sleep | None = None,
        max_attempts: int = 4,
        quota_share: float = 0.8,
        page_size: int = 200,
        refused_credential: bool = False,
    ) -> Connector:
        server = self.server
        if refused_credential:
            server.faults.session_requests = 0  # every session is refused: an expired access token
        creds = Credentials(
            method=AuthMethod.access_token if refused_credential else AuthMethod.password,
            login_url=server.url,
            instance_url=server.url,
            access_token=server.access_token,
            username=sf.DEFAULT_USERNAME,
            password=sf.DEFAULT_PASSWORD,
            security_token=sf.DEFAULT_SECURITY_TOKEN,
        )
        client = SalesforceClient(
            creds,
            session=make_session(str(server.ca_path), 10.0),
            quota_share=quota_share,
            max_attempts=max_attempts,
            sleep=sleep or RecordedSleep(),
        )
        options = StreamOptions(
            lookback=timedelta(0),
            page_size=max(200, page_size),
            bulk_threshold_rows=10_000,
            bulk_poll_seconds=0.01,
        )
        return SalesforceConnector(client, build_mappings(), options)

    def throttle(self, retry_after: float) -> None:
        self.server.faults.retry_after = retry_after
        self.server.faults.fail_next = [429, 503]  # both carry Retry-After in Salesforce
        self._planned_failures = 2

    def fail(self, *, share: float) -> None:
        self.server.faults.error_share = share

    def churn(self, *, modify: int, delete: int) -> None:
        self.server.faults.modify_per_page, self.server.faults.delete_per_page = modify, delete

    def calm(self) -> None:
        faults = self.server.faults
        faults.fail_next = []
        faults.error_share = faults.throttle_share = faults.unavailable_share = 0.0
        faults.modify_per_page = faults.delete_per_page = 0
        faults.session_requests = None

    def throttled(self) -> int:
        return self._planned_failures - len(self.server.faults.fail_next)

    def api_calls(self) -> int:
        return self.server.state.api_used

    def set_usage(self, used: int, limit: int) -> None:
        self.server.state.api_limit, self.server.state.api_used = limit, used

    def live_accounts(self) -> dict[str, str]:
        state = self.server.state
        with state.lock:
            cols = state.tables["Account"].cols
            return {
                str(i): str(n)
                for i, n, gone in zip(cols["Id"], cols["Name"], cols["IsDeleted"], strict=True)
                if not gone
            }

    def owner_of(self, account_id: str) -> str:
        record = self.server.state.record("Account", account_id)
        assert record is not None
        return str(record["OwnerId"])

    def set_owner(self, account_id: str, owner_id: str) -> None:
        self.server.state.update("Account", account_id, {"OwnerId": owner_id})

    def account_ids(self) -> list[str]:
        return [str(i) for i in self.org.accounts["id"]]

    def owner_ids(self) -> list[str]:
        return [str(i) for i in self.org.owners["id"]]


class HubSpotCrm:
    """The HubSpot sandbox (hubspot-api-client) behind :class:`Crm`."""

    name = "hubspot"
    org = ORG
    secret_env = HubSpotSettings.env("access_token")
    server_error = r"search companies: HubSpot answered 50[023]"

    def __init__(self, server: hs.SandboxServer) -> None:
        self.server = server

    def connector(
        self,
        *,
        sleep: Sleep | None = None,
        max_attempts: int = 4,
        quota_share: float = 0.8,
        page_size: int = 100,
        refused_credential: bool = False,
    ) -> Connector:
        token = "pat-na1-not-the-token" if refused_credential else self.server.access_token
        settings = HubSpotSettings(
            base_url=self.server.url,
            access_token=SecretStr(token),
            search_requests_per_second=0,
            search_page_size=page_size,
            max_attempts=max_attempts,
            quota_share=quota_share,
        )
        client = HubSpotClient(settings, sleep=sleep or RecordedSleep())
        # A page's records modified at its last timestamp wait for the next page: batches a little smaller.
        return HubSpotConnector(client, settings, batch_rows=max(1, page_size // 2))

    def _faults(self, **changes: Any) -> None:
        self.server.faults = dataclasses.replace(self.server.faults, **changes)

    def throttle(self, retry_after: float) -> None:
        self._faults(rate_limit_share=0.3, retry_after_seconds=retry_after, seed=3)

    def fail(self, *, share: float) -> None:
        self._faults(server_error_share=share, seed=8)

    def churn(self, *, modify: int, delete: int) -> None:
        self._faults(modify_during_paging=modify, delete_during_paging=delete, seed=6)

    def calm(self) -> None:
        self.server.faults = hs.HubSpotFaults(daily_limit=self.server.faults.daily_limit)

    def throttled(self) -> int:
        return self.server.counters.faults.get(429, 0)

    def api_calls(self) -> int:
        return self.server.state.requests

    def set_usage(self, used: int, limit: int) -> None:
        self._faults(daily_limit=limit)
        self.server.state.requests = used

    def live_accounts(self) -> dict[str, str]:
        table = self.server.state.companies
        out: dict[str, str] = {}
        for object_id in self.server.state.company_ids():
            row = table.row(object_id)
            assert row is not None
            out[object_id] = str(table.prop(row, "name"))
        return out

    def owner_of(self, account_id: str) -> str:
        table = self.server.state.companies
        row = table.row(account_id)
        assert row is not None
        return str(table.prop(row, "hubspot_owner_id"))

    def set_owner(self, account_id: str, owner_id: str) -> None:
        self.server.state.modify("companies", account_id, {"hubspot_owner_id": owner_id})

    def account_ids(self) -> list[str]:
        return self.server.state.company_ids()

    def owner_ids(self) -> list[str]:
        return [o.id for o in self.server.state.owners if not o.archived]


@contextmanager
def _salesforce(tmp_path: Path) -> Iterator[Crm]:
    server = sf.start_salesforce_sandbox(ORG, faults=sf.SalesforceFaults(), cert_dir=tmp_path / "certs")
    try:
        yield SalesforceCrm(server)
    finally:
        server.stop()


@contextmanager
def _hubspot(tmp_path: Path) -> Iterator[Crm]:
    with hs.start_hubspot_sandbox(ORG, now=DEFAULT_NOW) as server:
        yield HubSpotCrm(server)


HARNESSES: dict[str, Callable[[Path], AbstractContextManager[Crm]]] = {
    "salesforce": _salesforce,
    "hubspot": _hubspot,
}

__all__ = ["HARNESSES", "ORG", "Crm", "RecordedSleep"]
