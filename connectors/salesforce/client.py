"""The connector's one door to Salesforce: vendor exceptions mapped, retries, re-auth and the quota guard.

Every API call goes through :meth:`SalesforceClient.call`, which maps simple-salesforce and requests
exceptions onto :mod:`connectors.errors`, retries only :class:`RetriableError` with the one retry policy
of :mod:`connectors.retry` (``Retry-After`` honoured, jitter), re-authenticates once on
``INVALID_SESSION_ID``, and, through the shared quota guard, refuses to start a call once the org's
daily API usage (``Sforce-Limit-Info``) has reached the configured share.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.errors import (
    AuthExpiredError,
    ConnectorConfigError,
    ConnectorError,
    FatalError,
    QuotaExhausted,
    RetriableError,
)
from connectors.retry import QuotaGuard, RetryPolicy, parse_retry_after
from connectors.salesforce.auth import Credentials, login
from connectors.salesforce.settings import SalesforceSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRIABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


class PreconditionFailed(FatalError):
    """A write refused with 412: the record changed since the time we said it must not have."""


class _Session(requests.Session):
    """A requests session with a default timeout, whose ``verify`` wins over ``REQUESTS_CA_BUNDLE``.

    Plain requests lets that environment variable replace a session's CA file, which would silently
    trust the system store instead of the CA configured for the org (or the sandbox's).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


def make_session(ca_bundle: str | None = None, timeout: float = 60.0) -> requests.Session:
    """The HTTP session every Salesforce call uses; ``ca_bundle`` pins the CA file to trust."""
    session = _Session(timeout)
    if ca_bundle:
        session.verify = ca_bundle
    return session


def _error_code(content: Any) -> str:
    """The ``errorCode`` of a Salesforce error body (a JSON array of errors), or ''."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return str(content[0].get("errorCode", ""))
    if isinstance(content, bytes | str):
        try:
            return _error_code(json.loads(content))
        except ValueError:
            return ""
    return ""


def translate(exc: Exception, retry_after: float | None = None) -> ConnectorError:
    """The one mapping of vendor exceptions onto what the caller does about them."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, SalesforceAuthenticationFailed):
        return ConnectorConfigError(f"salesforce login refused: {exc}")
    if isinstance(exc, SalesforceExpiredSession):
        return AuthExpiredError(f"salesforce session expired or invalid ({_error_code(exc.content)})")
    if isinstance(exc, SalesforceRefusedRequest):
        if _error_code(exc.content) == "REQUEST_LIMIT_EXCEEDED":
            return QuotaExhausted(f"salesforce daily API request limit exceeded: {exc.content!r}")
        return FatalError(f"salesforce refused the request: {exc.content!r}")
    if isinstance(exc, SalesforceMalformedRequest):
        if _error_code(exc.content) in ("INVALID_FIELD", "INVALID_TYPE"):
            return ConnectorConfigError(
                f"salesforce rejected a field or object name (check salesforce.fields): {exc.content!r}"
            )
        return FatalError(f"salesforce rejected the request: {exc.content!r}")
    if isinstance(exc, SalesforceResourceNotFound):
        return FatalError(f"salesforce resource not found: {exc.url}")
    if isinstance(exc, SalesforceError):
        if exc.status == 412:
            return PreconditionFailed(f"salesforce precondition failed: {exc.content!r}")
        if exc.status in _RETRIABLE_STATUS:
            return RetriableError(f"salesforce answered {exc.status}: {exc.content!r}", retry_after)
        return FatalError(f"salesforce answered {exc.status}: {exc.content!r}")
    if isinstance(exc, SalesforceOperationError):
        return FatalError(f"salesforce bulk job failed: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectorConfigError(f"TLS to salesforce failed (check salesforce.ca_bundle): {exc}")
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return RetriableError(f"salesforce unreachable: {exc}")
    if isinstance(exc, requests.RequestException):
        return FatalError(f"salesforce request failed: {exc}")
    raise exc


@dataclass
class ApiUsage:
    """The org's daily API usage as the last response reported it."""

    used: int = 0
    limit: int = 0


class SalesforceClient:
    """A logged-in simple-salesforce client behind retries, re-auth and the quota guard."""

    def __init__(
        self,
        creds: Credentials,
        *,
        session: requests.Session | None = None,
        quota_share: float = 0.8,
        max_attempts: int = 5,
        max_wait_seconds: float = 60.0,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.creds = creds
        self.session = session or make_session()
        self.quota = QuotaGuard(
            quota_share, crm="salesforce", setting=SalesforceSettings.setting("quota_share")
        )
        self.policy = RetryPolicy(max_attempts, max_wait_seconds)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.logins = 0
        self._local = threading.local()
        self._sf: Salesforce | None = None
        self.session.hooks["response"].append(self._observe)

    @property
    def usage(self) -> ApiUsage:
        """The org's daily API usage as the last response reported it."""
        used, limit = self.quota.usage
        return ApiUsage(used, limit)

    # --- observing every response -----------------------------------------------------------------
    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Read ``Sforce-Limit-Info`` and ``Retry-After`` from every answer, the bulk ones included."""
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.quota.observe(int(match.group(1)), int(match.group(2)))
        retry_after = response.headers.get("Retry-After")
        failed = response.status_code >= 400
        self._local.retry_after = parse_retry_after(retry_after, self.clock()) if failed else None

    def forget_usage(self) -> None:
        """Let the next call through to learn the usage afresh (a new run: the quota may have reset)."""
        self.quota.forget()

    # --- session ----------------------------------------------------------------------------------
    def _connect(self) -> Salesforce:
        try:
            session_id, instance_url = login(self.creds, self.session, self.clock())
        except Exception as exc:
            raise translate(exc, getattr(self._local, "retry_after", None)) from exc
        self.logins += 1
        log.info(
            "salesforce session opened", extra={"instance_url": instance_url, "method": self.creds.method}
        )
        return Salesforce(
            session_id=session_id,
            instance_url=instance_url,
            session=self.session,
            version=self.creds.api_version,
            object_pairs_hook=None,  # plain dicts: the C decoder, several times faster than OrderedDict
        )

    @property
    def sf(self) -> Salesforce:
        """The current simple-salesforce client, logging in on first use."""
        if self._sf is None:
            self._sf = self._call_with_retries(self._connect)
        return self._sf

    # --- calls ------------------------------------------------------------------------------------
    def call(self, fn: Callable[[Salesforce], T], what: str = "call") -> T:
        """Run one API call ``fn(sf)`` with the quota guard, retries and one re-auth on a 401."""

        def attempt() -> T:
            self.quota.check(what)
            sf = self.sf
            try:
                return self._mapped(fn, sf)
            except AuthExpiredError:
                if not self.creds.can_reauthenticate:
                    raise ConnectorConfigError(
                        "salesforce rejected the access token (expired or invalid); set a fresh "
                        f"{SalesforceSettings.env('access_token')} or use the password or jwt auth method"
                    ) from None
                log.info("salesforce session expired; logging in again", extra={"what": what})
                self._sf = None
                sf = self.sf
            try:
                return self._mapped(fn, sf)
            except AuthExpiredError:
                raise ConnectorConfigError(
                    "salesforce rejected a session it had just issued (INVALID_SESSION_ID twice); "
                    "check the user's API permission and the connected app's policies"
                ) from None

        return self._call_with_retries(attempt, what)

    def _mapped(self, fn: Callable[[Salesforce], T], sf: Salesforce) -> T:
        try:
            return fn(sf)
        except Exception as exc:
            raise translate(exc, getattr(self._local, "retry_after", None)) from exc

    def _call_with_retries(self, fn: Callable[[], T], what: str = "login") -> T:
        return self.policy.call(fn, sleep=self.sleep, rng=self.rng, what=f"salesforce {what}")

    # --- the calls the streams and the write-back make --------------------------------------------
    def query_pages(
        self, soql: str, *, include_deleted: bool, page_size: int = 2000
    ) -> Iterator[Mapping[str, Any]]:
        """Each page of a SOQL query (``queryAll`` when ``include_deleted``), following ``nextRecordsUrl``."""
        headers = {"Sforce-Query-Options": f"batchSize={page_size}"} if page_size != 2000 else {}
        page: Mapping[str, Any] = self.call(
            lambda sf: sf.query(soql, include_deleted=include_deleted, headers=headers), "query"
        )
        yield page
        while not page.get("done", True):
            next_url = str(page["nextRecordsUrl"])

            def more(sf: Salesforce, url: str = next_url) -> Any:
                return sf.query_more(url, identifier_is_url=True, headers=headers)

            page = self.call(more, "query_more")
            yield page

    def count(self, sobject: str, *, include_deleted: bool) -> int:
        """How many records of ``sobject`` a full read returns."""
        page = self.call(
            lambda sf: sf.query(
                f"SELECT COUNT() FROM {sobject}",  # noqa: S608 - SOQL, a fixed object name
                include_deleted=include_deleted,
            ),
            "count",
        )
        return int(page.get("totalSize", 0))

    def bulk_query_pages(
        self, sobject: str, soql: str, *, include_deleted: bool, page_rows: int, poll_seconds: float
    ) -> Iterator[str]:
        """The CSV pages of a Bulk API 2.0 query job, fetched one ``Sforce-Locator`` at a time."""
        operation = "queryAll" if include_deleted else "query"

        def bulk(sf: Salesforce) -> Any:
            # The handler's per-call client (create_job, wait_for_job, get_query_results) makes each
            # request retriable on its own; the public generator would restart the job on any error.
            return getattr(sf.bulk2, sobject)._client

        job = self.call(lambda sf: bulk(sf).create_job(operation, soql), "bulk create")
        job_id = str(job["id"])
        self.call(lambda sf: bulk(sf).wait_for_job(job_id, True, poll_seconds), "bulk wait")
        locator = ""
        while True:

            def results(sf: Salesforce, at: str = locator) -> Any:
                return bulk(sf).get_query_results(job_id, at, page_rows)

            page = self.call(results, "bulk results")
            yield str(page["records"])
            locator = str(page.get("locator") or "")
            if not locator:
                break
        try:  # the results are read; free them in the org (they would expire after 7 days anyway)
            # Not bulk2's delete_job: it parses the 204 answer as JSON and fails.
            self.call(lambda sf: sf.restful(f"jobs/query/{job_id}", method="DELETE"), "bulk delete")
        except ConnectorError as exc:
            log.warning("salesforce bulk job not deleted", extra={"job_id": job_id, "error": str(exc)})

    def composite(self, subrequests: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
        """One ``composite`` request (at most 25 subrequests, not all-or-none); their answers in order."""
        body = {"allOrNone": False, "compositeRequest": subrequests}
        answer = self.call(
            lambda sf: sf.restful("composite", method="POST", data=json.dumps(body)), "composite"
        )
        return list(answer["compositeResponse"]) if answer else []

    def base_path(self) -> str:
        """The REST path prefix composite subrequests use, e.g. ``/services/data/v59.0``."""
        return f"/services/data/v{self.creds.api_version}"
