"""The hubspot-api-client APIs the connector uses, and the one place that maps their failures.

Every call goes through :meth:`HubSpotClient.call`: HubSpot's ``ApiException`` (``.status``, ``.headers``,
``.body``) and urllib3's transport errors become :mod:`connectors.errors`; the one retry policy
(:mod:`connectors.retry`) retries only :class:`RetriableError`, for POSTs (search, batch) as for GETs,
since the client's own retry skips POSTs and is switched off here. The daily-usage headers feed the
shared quota guard.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.companies.exceptions import ApiException as CompaniesApiException
from hubspot.crm.deals.exceptions import ApiException as DealsApiException
from hubspot.crm.owners.exceptions import ApiException as OwnersApiException

from connectors.errors import (
    ConnectorConfigError,
    ConnectorError,
    FatalError,
    QuotaExhausted,
    RetriableError,
)
from connectors.hubspot.settings import HubSpotSettings
from connectors.retry import QuotaGuard, RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

API_EXCEPTIONS: Final = (
    CompaniesApiException,
    DealsApiException,
    OwnersApiException,
    AssociationsApiException,
)
TRANSPORT_ERRORS: Final = (
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.MaxRetryError,
    ConnectionError,
    TimeoutError,
)
_TOKEN_ENV: Final = HubSpotSettings.env("access_token")
_SECONDLY_WAIT: Final = 1.0  # a 429 without Retry-After under the per-second policy


def _body(raw: Any) -> dict[str, Any]:
    """HubSpot's JSON error body as a mapping (empty when it is not JSON)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:300]}
    return parsed if isinstance(parsed, dict) else {"message": str(parsed)[:300]}


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    return parse_retry_after(value, dt.datetime.now(dt.UTC))


def map_error(exc: BaseException, what: str) -> BaseException:
    """The connector error for a failure of the client (anything else is returned unchanged)."""
    if isinstance(exc, API_EXCEPTIONS):
        status = int(exc.status or 0)
        body = _body(exc.body)
        message = str(body.get("message") or exc.reason or "").strip()
        category = body.get("category") or body.get("errorType") or ""
        detail = f"{what}: HubSpot answered {status} {category}: {message}".rstrip(": ")
        headers = exc.headers
        if status == 401:
            return ConnectorConfigError(
                f"{what}: HubSpot refused the access token (401 {category}); set a valid private app token "
                f"in {_TOKEN_ENV}. HubSpot said: {message}"
            )
        if status == 403:
            return ConnectorConfigError(
                f"{what}: the access token lacks a scope this needs (403 {category}): {message}"
            )
        if status == 429:
            if str(body.get("policyName", "")).upper() == "DAILY":
                return QuotaExhausted(f"{what}: HubSpot's daily API limit is used up: {message}")
            wait = _retry_after(headers)
            return RetriableError(detail, wait if wait is not None else _SECONDLY_WAIT)
        if status >= 500:
            return RetriableError(detail, _retry_after(headers))
        if status == 0:
            return ConnectorConfigError(f"{what}: the request could not be made: {exc.reason}")
        return FatalError(detail)
    if isinstance(exc, TRANSPORT_ERRORS):
        return RetriableError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, urllib3.exceptions.LocationValueError):
        return ConnectorConfigError(f"{what}: hubspot.base_url is not a usable URL: {exc}")
    return exc


class HubSpotClient:
    """One ``hubspot.HubSpot`` client's APIs, built once, with retries and error mapping."""

    def __init__(
        self,
        settings: HubSpotSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        token = settings.access_token.get_secret_value().strip() if settings.access_token else ""
        if not token:
            raise ConnectorConfigError(f"hubspot.access_token is not set: set {_TOKEN_ENV}")
        if not settings.base_url.startswith(("http://", "https://")):
            raise ConnectorConfigError(f"hubspot.base_url must be an http(s) URL, got {settings.base_url!r}")
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._last_search = -math.inf
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.retries = 0
        self.policy = RetryPolicy(settings.max_attempts, settings.max_wait_seconds)
        self.quota = QuotaGuard(
            settings.quota_share, crm="HubSpot", setting=HubSpotSettings.setting("quota_share")
        )
        # retry=False: the client does no retries of its own (they would skip POSTs); the policy's apply.
        hs = HubSpot(access_token=token, host=settings.base_url.rstrip("/"), retry=False)
        crm = hs.crm
        self.owners = crm.owners.owners_api
        self.companies_basic = crm.companies.basic_api
        self.companies_search = crm.companies.search_api
        self.companies_batch = crm.companies.batch_api
        self.deals_basic = crm.deals.basic_api
        self.deals_search = crm.deals.search_api
        self.deals_batch = crm.deals.batch_api
        self.associations = crm.associations.v4.batch_api

    def pace_search(self) -> None:
        """Wait until the next search request keeps to ``search_requests_per_second``.

        HubSpot allows each account five searches a second, shared by every app; pacing below that
        avoids a stream of 429s (which are still handled, should other apps use the budget).
        """
        rate = self.settings.search_requests_per_second
        if rate <= 0:
            return
        wait = self._last_search + 1.0 / rate - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._last_search = self._clock()

    def _count_retry(self, attempt: int, wait: float, error: RetriableError) -> None:
        """Count the retries (the tests and the sync summary's logs compare them with the faults)."""
        self.retries += 1

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with the timeout, the retries and the error mapping."""
        return self.policy.call(
            lambda: self._once(what, fn, *args, **kwargs),
            sleep=self._sleep,
            rng=self._rng,
            what=f"hubspot {what}",
            on_retry=self._count_retry,
        )

    def call_json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Like :meth:`call`, but the response body as parsed JSON, skipping the client's model layer.

        Pages of hundreds of records parse several times faster this way; the sandbox contract tests
        check that the same bodies also deserialise into the client's models.
        """
        body, headers = self.call(what, _json_body, fn, *args, **kwargs)
        self._note_quota(headers)
        return body  # type: ignore[no-any-return]

    def _note_quota(self, headers: Mapping[str, str]) -> None:
        """Hand the account's daily usage to the quota guard, which stops a call that would pass the share."""
        try:
            daily = int(headers.get("X-HubSpot-RateLimit-Daily", ""))
            remaining = int(headers.get("X-HubSpot-RateLimit-Daily-Remaining", ""))
        except ValueError:
            return  # not every endpoint (or auth type) reports the daily limit
        self.quota.observe(daily - remaining, daily)

    def _once(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.quota.check(what)
        try:
            return fn(*args, _request_timeout=self.settings.timeout_seconds, **kwargs)
        except ConnectorError:
            raise
        except Exception as exc:
            mapped = map_error(exc, what)
            if mapped is exc:
                raise
            raise mapped from exc


def _json_body(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[dict[str, Any], Mapping[str, str]]:
    """Call ``fn`` without preloading; the parsed body and the headers (a dropped connection is retriable)."""
    response = fn(*args, _preload_content=False, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise FatalError(f"HubSpot answered {response.status} with a body that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise FatalError(f"HubSpot answered {response.status} with JSON that is not an object")
    return parsed, response.headers
