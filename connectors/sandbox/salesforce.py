"""A local Salesforce that the real ``simple-salesforce`` client cannot tell from the service.

It serves a generated org as User, Account and Opportunity with their real field names over HTTPS:
SOQL ``query``/``queryAll`` with ``nextRecordsUrl`` paging, ``sobjects`` GET/PATCH with
``If-Unmodified-Since``, ``composite`` and ``composite/sobjects``, Bulk API 2.0 query jobs with CSV
result pages, the SOAP and OAuth (JWT bearer, password) logins, ``Sforce-Limit-Info`` on every answer
and error bodies as ``[{"message", "errorCode", "fields"}]``. Faults are injected by flags
(:class:`SalesforceFaults`). Records are held column-wise so 800k rows stay a few hundred MB, and
pages are encoded column by column, the hot path of a full sync.
"""

from __future__ import annotations

import base64
import bisect
import csv
import datetime as dt
import email.utils
import io
import itertools
import json
import logging
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import jwt
import numpy as np
import pandas as pd

from connectors.sandbox.generator import Org
from connectors.sandbox.http import App, Request, Response, SandboxHttpServer
from connectors.sandbox.soql import Query, SoqlError, format_datetime, parse
from connectors.sandbox.tls import make_certificates, make_jwt_key, server_context

log = logging.getLogger(__name__)

API_VERSION: Final = "59.0"
ORG_ID: Final = "00D000000000001AAA"
DEFAULT_USERNAME: Final = "sandbox@territory.example"
DEFAULT_PASSWORD: Final = "sandbox-password"  # noqa: S105 - the sandbox's published demo login
DEFAULT_SECURITY_TOKEN: Final = "sandboxtoken"  # noqa: S105
DEFAULT_CONSUMER_KEY: Final = "territory-sandbox-connected-app"
QUERY_PAGE: Final = 2000
BULK_PAGE: Final = 50_000

# Field names per object; datetimes are stored as fixed-width UTC strings (``format_datetime``), so
# they compare and sort as text, and dates as ``YYYY-MM-DD``.
SCHEMA: Final[dict[str, tuple[str, ...]]] = {
    "User": (
        "Id", "Username", "Name", "Email", "IsActive", "Division", "Department", "Capacity__c",
        "Home_Latitude__c", "Home_Longitude__c", "Quota__c", "CreatedDate", "LastModifiedDate",
        "SystemModstamp",
    ),
    "Account": (
        "Id", "Name", "OwnerId", "Tier__c", "Industry", "ARR__c", "Potential__c", "BillingLatitude",
        "BillingLongitude", "Protected__c", "IsDeleted", "CreatedDate", "LastModifiedDate",
        "SystemModstamp",
    ),
    "Opportunity": (
        "Id", "AccountId", "OwnerId", "Name", "StageName", "Amount", "Probability", "CloseDate",
        "IsClosed", "IsWon", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp",
    ),
}  # fmt: skip
_DATETIME_FIELDS: Final = frozenset({"CreatedDate", "LastModifiedDate", "SystemModstamp"})
_READ_ONLY: Final = frozenset({"Id", "IsDeleted", *_DATETIME_FIELDS})
_KEY_PREFIX: Final = {"User": "005", "Account": "001", "Opportunity": "006"}


@dataclass
class SalesforceFaults:
    """Which faults the sandbox injects; mutable so a test can change them while a sync runs.

    Shares are probabilities per API request (logins excluded), drawn from a generator seeded with
    ``seed``; ``fail_next`` answers the next requests with these statuses, in order, whatever the shares.
    """

    throttle_share: float = 0.0  # 429 REQUEST_LIMIT_EXCEEDED with Retry-After
    unavailable_share: float = 0.0  # 503 SERVER_UNAVAILABLE with Retry-After
    error_share: float = 0.0  # 500 UNKNOWN_EXCEPTION
    retry_after: float = 1.0  # seconds, sent in Retry-After with 429 and 503
    delay_seconds: float = 0.0  # every API answer is this slow
    session_requests: int | None = None  # a session expires after this many API requests
    modify_per_page: int = 0  # records of the queried object modified after each page is served
    delete_per_page: int = 0  # ... and deleted (IsDeleted, SystemModstamp bumped)
    seed: int = 0
    fail_next: list[int] = field(default_factory=list)


class _Row:
    """A read-only view of one row, what SOQL predicates read."""

    __slots__ = ("cols", "i")

    def __init__(self, cols: Mapping[str, list[Any]], i: int) -> None:
        self.cols = cols
        self.i = i

    def get(self, key: str, /) -> Any:
        return self.cols[key][self.i]


class _Table:
    """One object's records, column-wise, with an id index and a SystemModstamp index."""

    def __init__(self, name: str, cols: dict[str, list[Any]]) -> None:
        self.name = name
        self.cols = cols
        self.index = dict(zip(cols["Id"], range(len(cols["Id"])), strict=True))
        self._rebuild()

    def _rebuild(self) -> None:
        stamps = self.cols["SystemModstamp"]
        order = sorted(range(len(stamps)), key=stamps.__getitem__)  # fixed-width strings sort as time
        self._sorted_stamps: list[str] = list(map(stamps.__getitem__, order))
        self._sorted_rows = order
        self._touched: set[int] = set()

    def __len__(self) -> int:
        return len(self.cols["Id"])

    def touch(self, row: int) -> None:
        """Note that ``row``'s SystemModstamp moved, so the stamp index sees it."""
        self._touched.add(row)
        if len(self._touched) > max(1000, len(self) // 10):
            self._rebuild()

    def append(self, values: Mapping[str, Any]) -> int:
        row = len(self)
        for name, col in self.cols.items():
            col.append(values.get(name))
        self.index[values["Id"]] = row
        self.touch(row)
        return row

    def candidates(self, query: Query) -> Iterable[int]:
        """Rows that may match ``query``: by id, by a SystemModstamp lower bound, or all."""
        cond = query.where
        if cond is not None and cond.ids is not None:
            return sorted(self.index[i] for i in cond.ids if i in self.index)
        if cond is not None and "SystemModstamp" in cond.lower:
            start = bisect.bisect_left(self._sorted_stamps, cond.lower["SystemModstamp"])
            return sorted(set(self._sorted_rows[start:]) | self._touched)
        return range(len(self))


def _org_tables(org: Org) -> dict[str, _Table]:
    """The generator's frames as Salesforce objects with their real field names."""

    def text(values: Any) -> list[Any]:
        """Values as Python strings (None for missing); repeated values share one object."""
        codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
        table = np.array([*uniques.tolist(), None], dtype=object)
        return table[codes].tolist()  # type: ignore[no-any-return]

    def unique(series: pd.Series[Any]) -> list[Any]:
        """Mostly distinct values (ids, names): no sharing to gain, so no factorizing."""
        return series.astype(object).where(series.notna(), None).tolist()

    def nums(series: pd.Series[Any], scale: float = 1.0) -> list[Any]:
        values = series.to_numpy(dtype=float)
        if scale != 1.0:
            values = np.round(values * scale, 2)
        return [None if v != v else v for v in values.tolist()]

    def flags(series: pd.Series[Any]) -> list[Any]:
        return [bool(v) for v in series.tolist()]

    def stamps(series: pd.Series[Any]) -> list[Any]:
        seconds = series.dt.tz_convert(None).to_numpy(dtype="datetime64[s]")
        codes, uniques = pd.factorize(seconds.astype(np.int64))
        shown = np.datetime_as_string(uniques.astype("datetime64[s]"), unit="s")
        table = np.array([s + ".000+0000" for s in shown.tolist()], dtype=object)
        return table[codes].tolist()  # type: ignore[no-any-return]

    acc, opp, own = org.accounts, org.opportunities, org.owners
    org_time = acc["modified_at"].min() if len(acc) else pd.Timestamp("2026-01-01", tz="UTC")
    own_stamp = [org_time.strftime("%Y-%m-%dT%H:%M:%S.000+0000")] * len(own)
    emails = text(own["email"])
    users = {
        "Id": text(own["id"]),
        "Username": [None if e is None else e + ".sandbox" for e in emails],
        "Name": text(own["name"]),
        "Email": emails,
        "IsActive": flags(own["active"]),
        "Division": text(own["region"]),
        "Department": text(own["team"]),
        "Capacity__c": nums(own["capacity"]),
        "Home_Latitude__c": nums(own["home_lat"]),
        "Home_Longitude__c": nums(own["home_lon"]),
        "Quota__c": nums(own["quota"]),
        "CreatedDate": own_stamp,
        "LastModifiedDate": list(own_stamp),
        "SystemModstamp": list(own_stamp),
    }
    acc_stamp = stamps(acc["modified_at"])
    accounts = {
        "Id": unique(acc["id"]),
        "Name": unique(acc["name"]),
        "OwnerId": text(acc["owner_id"]),
        "Tier__c": text(acc["tier"]),
        "Industry": text(acc["industry"]),
        "ARR__c": nums(acc["arr"]),
        "Potential__c": nums(acc["potential"]),
        "BillingLatitude": nums(acc["lat"]),
        "BillingLongitude": nums(acc["lon"]),
        "Protected__c": flags(acc["protected"]),
        "IsDeleted": [False] * len(acc),
        "CreatedDate": list(acc_stamp),
        "LastModifiedDate": list(acc_stamp),
        "SystemModstamp": acc_stamp,
    }
    opp_stamp = stamps(opp["modified_at"])
    close = np.datetime_as_string(opp["close_date"].to_numpy(dtype="datetime64[D]"), unit="D")
    opportunities = {
        "Id": unique(opp["id"]),
        "AccountId": text(opp["account_id"]),
        "OwnerId": text(opp["owner_id"]),
        "Name": unique(opp["name"]),
        "StageName": text(opp["stage"]),
        "Amount": nums(opp["amount"]),
        "Probability": nums(opp["probability"], 100.0),
        "CloseDate": [None if v == "NaT" else v for v in text(close)],
        "IsClosed": flags(opp["is_closed"]),
        "IsWon": flags(opp["is_won"]),
        "IsDeleted": [False] * len(opp),
        "CreatedDate": list(opp_stamp),
        "LastModifiedDate": list(opp_stamp),
        "SystemModstamp": opp_stamp,
    }
    return {
        "User": _Table("User", users),
        "Account": _Table("Account", accounts),
        "Opportunity": _Table("Opportunity", opportunities),
    }


class ApiError(Exception):
    """An error answer: HTTP status, Salesforce error code, message, and extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class _Cursor:
    obj: str
    fields: tuple[str, ...]
    rows: list[int]
    page: int


class SandboxState:
    """The in-memory org and the server's bookkeeping; tests change records through it mid-sync."""

    def __init__(
        self, org: Org, *, api_limit: int = 1_000_000, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self.tables = _org_tables(org)
        self.lock = threading.RLock()
        self.api_limit = api_limit
        self.api_used = 0
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.username = DEFAULT_USERNAME
        self.password = DEFAULT_PASSWORD
        self.security_token = DEFAULT_SECURITY_TOKEN
        self.consumer_key = DEFAULT_CONSUMER_KEY
        self.jwt_public_keys: list[bytes] = []
        self.tokens: dict[str, int] = {}  # token -> API requests made with it
        self.cursors: dict[str, _Cursor] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_rows: dict[str, list[int]] = {}
        self.requests_by_path: dict[str, int] = {}
        self.api_writes: Counter[tuple[str, str]] = Counter()  # (sobject, id) -> API updates
        self._ids = itertools.count(1)

    def record(self, obj: str, record_id: str) -> dict[str, Any] | None:
        """A copy of one record's fields, or None when the id is unknown."""
        with self.lock:
            table = self.tables[obj]
            row = table.index.get(record_id)
            if row is None:
                return None
            return {name: col[row] for name, col in table.cols.items()}

    def update(
        self, obj: str, record_id: str, values: Mapping[str, Any], at: dt.datetime | None = None
    ) -> None:
        """Change fields as a user would: SystemModstamp and LastModifiedDate move to ``at`` (now)."""
        with self.lock:
            table = self.tables[obj]
            row = table.index[record_id]
            for name, value in values.items():
                table.cols[name][row] = value
            stamp = format_datetime(at or self.clock())
            table.cols["SystemModstamp"][row] = stamp
            table.cols["LastModifiedDate"][row] = stamp
            table.touch(row)

    def delete(self, obj: str, record_id: str, at: dt.datetime | None = None) -> None:
        """Move a record to the recycle bin: queryAll still returns it with IsDeleted = true."""
        if "IsDeleted" not in self.tables[obj].cols:
            raise ValueError(f"{obj} records cannot be deleted")
        self.update(obj, record_id, {"IsDeleted": True}, at)

    def insert(self, obj: str, values: Mapping[str, Any], at: dt.datetime | None = None) -> str:
        """Create a record; returns its new 18-character id."""
        with self.lock:
            table = self.tables[obj]
            stamp = format_datetime(at or self.clock())
            record_id = values.get("Id") or f"{_KEY_PREFIX[obj]}9{next(self._ids):011d}AAA"
            full = {"IsDeleted": False, **values, "Id": record_id}
            full.update(CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp)
            table.append({k: v for k, v in full.items() if k in table.cols})
            return str(record_id)

    def new_token(self) -> str:
        """A fresh session id, as a login hands out."""
        token = f"{ORG_ID}!" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = 0
        return token


@dataclass(frozen=True)
class _Raw:
    """A JSON answer already encoded (query pages are built as text, not as dicts to encode)."""

    text: str


_encode_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return _encode_string(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else "null"
    return json.dumps(value)


def _json_records(table: _Table, rows: list[int], fields: Iterable[str]) -> str:
    """The records of ``rows`` as the inside of a JSON array, encoded column by column (the hot path)."""
    ids = table.cols["Id"]
    prefix = (
        f'{{"attributes":{{"type":"{table.name}","url":"/services/data/v{API_VERSION}/sobjects/{table.name}/'
    )
    columns = [[prefix + ids[i] + '"}' for i in rows]]
    for name in fields:
        col = table.cols[name]
        key = _encode_string(name) + ":"
        columns.append([key + _json_value(col[i]) for i in rows])
    return "},".join(",".join(parts) for parts in zip(*columns, strict=True)) + ("}" if rows else "")


def _csv_column(values: list[Any], is_datetime: bool) -> list[str]:
    """One column of a Bulk API 2.0 result page as text: empty for null, true/false, ``...Z`` datetimes."""
    if is_datetime:
        return ["" if v is None else v[:23] + "Z" for v in values]
    return ["" if v is None else "true" if v is True else "false" if v is False else str(v) for v in values]


def _error_body(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": code, "fields": fields or []}]


def _http_date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=True)


_NOT_FOUND = "The requested resource does not exist"


class SalesforceApi:
    """Routes one request to an answer; independent of the socket so ``composite`` can reuse it."""

    def __init__(self, state: SandboxState, faults: SalesforceFaults, base_url: str) -> None:
        self.state = state
        self.faults = faults
        self.base_url = base_url
        self.rng = random.Random(faults.seed)  # noqa: S311 - fault injection, not security

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one HTTP request: status, headers, body."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        out_headers: dict[str, str] = {}
        payload: Any
        try:
            if path.startswith("/services/Soap/u/"):
                return self._soap_login(body)
            if path == "/services/oauth2/token":
                return self._oauth_token(body)
            self._authorise(headers)
            self._inject_faults()
            status, payload, extra = self._route(method, path, query, headers, body)
            out_headers.update(extra)
        except ApiError as exc:
            status, payload = exc.status, _error_body(exc.code, exc.message)
            out_headers.update(exc.headers)
        except SoqlError as exc:
            status, payload = 400, _error_body(exc.code, exc.message)
        if self.faults.delay_seconds:
            time.sleep(self.faults.delay_seconds)
        with self.state.lock:
            out_headers["Sforce-Limit-Info"] = f"api-usage={self.state.api_used}/{self.state.api_limit}"
        if isinstance(payload, bytes):
            out_headers.setdefault("Content-Type", "text/csv")
            return status, out_headers, payload
        if payload is None:
            return status, out_headers, b""
        out_headers["Content-Type"] = "application/json;charset=UTF-8"
        if isinstance(payload, _Raw):
            return status, out_headers, payload.text.encode()
        return status, out_headers, json.dumps(payload, separators=(",", ":")).encode()

    def _authorise(self, headers: Mapping[str, str]) -> None:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").removeprefix("OAuth ").strip()
        with self.state.lock:
            if token not in self.state.tokens:
                raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            limit = self.faults.session_requests
            if limit is not None and self.state.tokens[token] >= limit:
                del self.state.tokens[token]
                raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            self.state.tokens[token] += 1
            if self.state.api_used >= self.state.api_limit:
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.state.api_used += 1

    def _inject_faults(self) -> None:
        faults = self.faults
        with self.state.lock:
            status = faults.fail_next.pop(0) if faults.fail_next else 0
            if not status:
                draw = self.rng.random()
                if draw < faults.throttle_share:
                    status = 429
                elif draw < faults.throttle_share + faults.unavailable_share:
                    status = 503
                elif draw < faults.throttle_share + faults.unavailable_share + faults.error_share:
                    status = 500
        retry = {"Retry-After": f"{faults.retry_after:g}"}
        if status == 429:
            raise ApiError(429, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", retry)
        if status == 503:
            raise ApiError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable", retry)
        if status == 401:
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if status:
            raise ApiError(status, "UNKNOWN_EXCEPTION", "An unexpected error occurred.")

    # --- logins --------------------------------------------------------------------------------
    def _soap_login(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            root = ET.fromstring(body)  # noqa: S314 - a login envelope sent to a local test server
        except ET.ParseError:
            return self._soap_fault("INVALID_LOGIN", "Invalid request body")
        values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        expected = self.state.password + self.state.security_token
        if values.get("username") != self.state.username or values.get("password") != expected:
            return self._soap_fault(
                "INVALID_LOGIN",
                "INVALID_LOGIN: Invalid username, password, security token; or user locked out.",
            )
        token = self.state.new_token()
        server_url = f"{self.base_url}/services/Soap/u/{API_VERSION}/{ORG_ID}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{API_VERSION}/{ORG_ID}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{server_url}</serverUrl><sessionId>{token}</sessionId>"
            f"<userId>005000000000001AAA</userId><userInfo><organizationId>{ORG_ID}</organizationId>"
            f"<userName>{self.state.username}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return 200, {"Content-Type": "text/xml; charset=utf-8"}, xml.encode()

    @staticmethod
    def _soap_fault(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:sf="urn:fault.partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
            f"<faultcode>sf:{code}</faultcode><faultstring>{message}</faultstring><detail>"
            f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
            f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )
        return 500, {"Content-Type": "text/xml; charset=utf-8"}, xml.encode()

    def _oauth_token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            ok = self._valid_assertion(form.get("assertion", ""))
        elif grant == "password":
            ok = (
                form.get("client_id") == self.state.consumer_key
                and form.get("username") == self.state.username
                and form.get("password")
                in (self.state.password, self.state.password + self.state.security_token)
            )
        else:
            return self._oauth_error("unsupported_grant_type", "grant type not supported")
        if not ok:
            why = "invalid assertion" if grant != "password" else "authentication failure"
            return self._oauth_error("invalid_grant", why)
        token = self.state.new_token()
        payload = {
            "access_token": token,
            "instance_url": self.base_url,
            "id": f"{self.base_url}/id/{ORG_ID}/005000000000001AAA",
            "token_type": "Bearer",
            "scope": "api",
            "issued_at": str(int(self.state.clock().timestamp() * 1000)),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _valid_assertion(self, assertion: str) -> bool:
        for key in self.state.jwt_public_keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key,
                    algorithms=["RS256"],
                    options={"verify_aud": False, "require": ["iss", "sub", "exp"]},
                )
            except jwt.PyJWTError:
                continue
            return bool(claims["iss"] == self.state.consumer_key and claims["sub"] == self.state.username)
        return False

    @staticmethod
    def _oauth_error(code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps({"error": code, "error_description": message}).encode()
        return 400, {"Content-Type": "application/json"}, body

    # --- REST ----------------------------------------------------------------------------------
    def _route(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, Any, dict[str, str]]:
        match = re.fullmatch(r"/services/data/v(\d+\.\d+)/?(.*)", path)
        if match is None:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        rest = match.group(2).rstrip("/")
        with self.state.lock:
            key = rest.split("/", 1)[0]
            self.state.requests_by_path[key] = self.state.requests_by_path.get(key, 0) + 1
        if rest in ("query", "queryAll") and method == "GET":
            text = query.get("q", [""])[0]
            page = self._page_size(headers)
            return 200, self._start_query(text, include_deleted=rest == "queryAll", page=page), {}
        m = re.fullmatch(r"(?:query|queryAll)/(\w+)-(\d+)", rest)
        if m and method == "GET":
            return 200, self._query_page(m.group(1), int(m.group(2))), {}
        m = re.fullmatch(r"sobjects/(\w+)/(\w+)", rest)
        if m:
            return self._sobject(method, m.group(1), m.group(2), query, headers, body)
        if rest == "composite" and method == "POST":
            return 200, self._composite(json.loads(body or b"{}")), {}
        m = re.fullmatch(r"composite/sobjects(?:/(\w+))?", rest)
        if m:
            return 200, self._composite_sobjects(method, m.group(1), query, body), {}
        if rest.startswith("jobs/query"):
            return self._bulk(method, rest, query, body)
        if rest == "limits" and method == "GET":
            with self.state.lock:
                used, limit = self.state.api_used, self.state.api_limit
            return 200, {"DailyApiRequests": {"Max": limit, "Remaining": limit - used}}, {}
        raise ApiError(404, "NOT_FOUND", _NOT_FOUND)

    @staticmethod
    def _page_size(headers: Mapping[str, str]) -> int:
        options = headers.get("Sforce-Query-Options", "")
        m = re.search(r"batchSize=(\d+)", options)
        return min(QUERY_PAGE, max(200, int(m.group(1)))) if m else QUERY_PAGE

    def _select(self, text: str, include_deleted: bool) -> tuple[Query, list[int]]:
        parsed = parse(text, SCHEMA)
        table = self.state.tables[parsed.obj]
        cols = table.cols
        test = parsed.where.test if parsed.where is not None else None
        deleted = cols.get("IsDeleted")
        rows = []
        for i in table.candidates(parsed):
            if not include_deleted and deleted is not None and deleted[i]:
                continue
            if test is None or test(_Row(cols, i)):
                rows.append(i)
        for name, desc in reversed(parsed.order):
            col = cols[name]
            if all(col[i] is not None for i in rows):
                rows.sort(key=col.__getitem__, reverse=desc)
            else:  # nulls first, as Salesforce sorts them ascending
                rows.sort(
                    key=lambda i: (col[i] is not None, col[i] if col[i] is not None else 0), reverse=desc
                )
        if parsed.limit is not None:
            rows = rows[: parsed.limit]
        return parsed, rows

    def _start_query(self, text: str, *, include_deleted: bool, page: int) -> dict[str, Any] | _Raw:
        with self.state.lock:
            parsed, rows = self._select(text, include_deleted)
            if parsed.count:
                return {"totalSize": len(rows), "done": True, "records": []}
            locator = "01g" + secrets.token_hex(6)
            self.state.cursors[locator] = _Cursor(parsed.obj, parsed.fields, rows, page)
        return self._query_page(locator, 0)

    def _query_page(self, locator: str, offset: int) -> _Raw:
        with self.state.lock:
            cursor = self.state.cursors.get(locator)
            if cursor is None:
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            table = self.state.tables[cursor.obj]
            chunk = cursor.rows[offset : offset + cursor.page]
            records = _json_records(table, chunk, cursor.fields)
            end = offset + len(chunk)
            done = end >= len(cursor.rows)
            head = f'{{"totalSize":{len(cursor.rows)},"done":{"true" if done else "false"},'
            if done:
                del self.state.cursors[locator]
            else:
                head += f'"nextRecordsUrl":"/services/data/v{API_VERSION}/query/{locator}-{end}",'
            self._churn(table, cursor.rows)
        return _Raw(head + '"records":[' + records + "]}")

    def _churn(self, table: _Table, rows: list[int]) -> None:
        """The ``modify_per_page``/``delete_per_page`` faults: users at work while a sync pages."""
        if not rows or not (self.faults.modify_per_page or self.faults.delete_per_page):
            return
        ids, names = table.cols["Id"], table.cols["Name"]
        for _ in range(self.faults.modify_per_page):
            row = self.rng.choice(rows)
            self.state.update(table.name, ids[row], {"Name": f"{names[row]}*"})
        if "IsDeleted" in table.cols:
            for _ in range(self.faults.delete_per_page):
                self.state.delete(table.name, ids[self.rng.choice(rows)])

    def _json_record(self, table: _Table, i: int, fields: Iterable[str]) -> dict[str, Any]:
        cols = table.cols
        rid = cols["Id"][i]
        record: dict[str, Any] = {
            "attributes": {
                "type": table.name,
                "url": f"/services/data/v{API_VERSION}/sobjects/{table.name}/{rid}",
            }
        }
        for name in fields:
            record[name] = cols[name][i]
        return record

    # --- sobjects ------------------------------------------------------------------------------
    def _table(self, obj: str) -> _Table:
        for name, table in self.state.tables.items():
            if name.lower() == obj.lower():
                return table
        raise ApiError(404, "NOT_FOUND", f"{_NOT_FOUND}: sobject type '{obj}'")

    def _sobject(
        self,
        method: str,
        obj: str,
        record_id: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, Any, dict[str, str]]:
        with self.state.lock:
            table = self._table(obj)
            row = table.index.get(record_id)
            deleted = table.cols.get("IsDeleted")
            if row is None or (deleted is not None and deleted[row]):
                raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
            if method == "GET":
                wanted = query.get("fields", [""])[0]
                fields = [f.strip() for f in wanted.split(",") if f.strip()] or list(table.cols)
                unknown = [f for f in fields if f not in table.cols]
                if unknown:
                    raise ApiError(
                        400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {table.name}"
                    )
                return 200, self._json_record(table, row, fields), {}
            if method == "PATCH":
                self._check_unmodified(table, row, headers.get("If-Unmodified-Since"))
                values = self._writable(table, json.loads(body or b"{}"))
                self.state.update(table.name, record_id, values)
                self.state.api_writes[(table.name, record_id)] += 1
                return 204, None, {}
            if method == "DELETE" and deleted is not None:
                self.state.delete(table.name, record_id)
                return 204, None, {}
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")

    @staticmethod
    def _check_unmodified(table: _Table, row: int, header: str | None) -> None:
        """412 when the record changed after the given HTTP date (compared at whole seconds)."""
        if not header:
            return
        try:
            limit = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            raise ApiError(400, "MALFORMED_QUERY", f"Invalid If-Unmodified-Since: {header}") from None
        if limit.tzinfo is None:
            limit = limit.replace(tzinfo=dt.UTC)
        modified = dt.datetime.fromisoformat(table.cols["LastModifiedDate"][row][:19] + "+00:00")
        if modified > limit:
            raise ApiError(
                412,
                "PRECONDITION_FAILED",
                f"The requested resource has been modified since {header}",
                {"Last-Modified": _http_date(modified)},
            )

    def _writable(self, table: _Table, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name == "attributes" or name.lower() == "id":
                continue
            if name not in table.cols:
                raise ApiError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {table.name}"
                )
            if name in _READ_ONLY:
                raise ApiError(
                    400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}."
                )
            if name in ("OwnerId", "AccountId") and value is not None:
                target = "User" if name == "OwnerId" else "Account"
                if value not in self.state.tables[target].index:
                    raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}")
            out[name] = value
        return out

    # --- composite -----------------------------------------------------------------------------
    def _composite(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        subrequests = payload.get("compositeRequest") or []
        if len(subrequests) > 25:
            raise ApiError(
                400, "INVALID_BATCH_REQUEST", "A composite request may hold at most 25 subrequests"
            )
        all_or_none = bool(payload.get("allOrNone"))
        responses: list[dict[str, Any]] = []
        with self.state.lock:
            snapshot = self._before_images(subrequests) if all_or_none else None
            failed = False
            for sub in subrequests:
                ref = sub.get("referenceId", "")
                if failed and all_or_none:
                    halted = _error_body(
                        "PROCESSING_HALTED",
                        "The transaction was rolled back since another operation in the same "
                        "transaction failed.",
                    )
                    responses.append(
                        {"body": halted, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": ref}
                    )
                    continue
                url = urlsplit(str(sub.get("url", "")))
                body = json.dumps(sub["body"]).encode() if "body" in sub else b""
                sub_headers = {str(k): str(v) for k, v in (sub.get("httpHeaders") or {}).items()}
                try:
                    status, answer, extra = self._route(
                        str(sub.get("method", "GET")).upper(),
                        url.path,
                        parse_qs(url.query),
                        sub_headers,
                        body,
                    )
                except ApiError as exc:
                    status, answer, extra = exc.status, _error_body(exc.code, exc.message), exc.headers
                except SoqlError as exc:
                    status, answer, extra = 400, _error_body(exc.code, exc.message), {}
                if isinstance(answer, _Raw):
                    answer = json.loads(answer.text)
                failed = failed or status >= 400
                responses.append(
                    {"body": answer, "httpHeaders": extra, "httpStatusCode": status, "referenceId": ref}
                )
            if failed and snapshot is not None:
                for (obj, row), values in snapshot.items():
                    table = self.state.tables[obj]
                    for name, value in values.items():
                        table.cols[name][row] = value
                    table.touch(row)
        return {"compositeResponse": responses}

    def _before_images(
        self, subrequests: Iterable[Mapping[str, Any]]
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """The records the subrequests name, as they are now, for an all-or-none rollback."""
        images: dict[tuple[str, int], dict[str, Any]] = {}
        for sub in subrequests:
            m = re.search(r"/sobjects/(\w+)/(\w+)", str(sub.get("url", "")))
            if m is None:
                continue
            table = next((t for n, t in self.state.tables.items() if n.lower() == m.group(1).lower()), None)
            row = table.index.get(m.group(2)) if table is not None else None
            if table is not None and row is not None:
                images[(table.name, row)] = {name: col[row] for name, col in table.cols.items()}
        return images

    def _composite_sobjects(
        self, method: str, obj: str | None, query: Mapping[str, list[str]], body: bytes
    ) -> Any:
        if method == "GET" and obj:
            ids = [i for i in query.get("ids", [""])[0].split(",") if i]
            fields = [f for f in query.get("fields", [""])[0].split(",") if f]
            with self.state.lock:
                table = self._table(obj)
                out: list[Any] = []
                for rid in ids:
                    row = table.index.get(rid)
                    out.append(
                        None if row is None else self._json_record(table, row, fields or list(table.cols))
                    )
            return out
        if method == "PATCH":
            payload = json.loads(body or b"{}")
            results = []
            with self.state.lock:
                for rec in payload.get("records", []):
                    rid = rec.get("id") or rec.get("Id")
                    obj_name = (rec.get("attributes") or {}).get("type", "")
                    try:
                        self._sobject("PATCH", obj_name, rid, {}, {}, json.dumps(rec).encode())
                        results.append({"id": rid, "success": True, "errors": []})
                    except ApiError as exc:
                        results.append(
                            {"id": rid, "success": False, "errors": _error_body(exc.code, exc.message)}
                        )
            return results
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")

    # --- Bulk API 2.0 --------------------------------------------------------------------------
    def _bulk(
        self, method: str, rest: str, query: Mapping[str, list[str]], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = rest.split("/")
        if len(parts) == 2 and method == "POST":
            payload = json.loads(body or b"{}")
            operation = payload.get("operation")
            if operation not in ("query", "queryAll"):
                raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
            with self.state.lock:
                parsed, rows = self._select(str(payload.get("query", "")), operation == "queryAll")
                if parsed.count:
                    raise ApiError(400, "INVALIDJOB", "Aggregate queries are not supported in Bulk API 2.0")
                job_id = "750" + f"{next(self.state._ids):012d}AAA"
                now = format_datetime(self.state.clock())
                job = {
                    "id": job_id, "operation": operation, "object": parsed.obj,
                    "createdById": "005000000000001AAA", "createdDate": now, "systemModstamp": now,
                    "state": "UploadComplete", "concurrencyMode": "Parallel", "contentType": "CSV",
                    "apiVersion": float(API_VERSION), "lineEnding": payload.get("lineEnding", "LF"),
                    "columnDelimiter": payload.get("columnDelimiter", "COMMA"),
                }  # fmt: skip
                self.state.jobs[job_id] = {**job, "_fields": parsed.fields, "_polls": 0}
                self.state.job_rows[job_id] = rows
            return 200, job, {}
        if len(parts) < 3:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        with self.state.lock:
            found = self.state.jobs.get(parts[2])
            if found is None:
                raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
            job, rows = found, self.state.job_rows[parts[2]]
            if len(parts) == 3 and method == "GET":
                job["_polls"] += 1
                job["state"] = "InProgress" if job["_polls"] == 1 and len(rows) > BULK_PAGE else "JobComplete"
                info = {k: v for k, v in job.items() if not k.startswith("_")}
                if job["state"] == "JobComplete":
                    info.update(numberRecordsProcessed=len(rows), retries=0, totalProcessingTime=1)
                return 200, info, {}
            if len(parts) == 3 and method == "DELETE":
                del self.state.jobs[parts[2]], self.state.job_rows[parts[2]]
                return 204, None, {}
            if len(parts) == 3 and method == "PATCH":
                job["state"] = json.loads(body or b"{}").get("state", job["state"])
                return 200, {k: v for k, v in job.items() if not k.startswith("_")}, {}
            if len(parts) == 4 and parts[3] == "results" and method == "GET":
                if job["state"] != "JobComplete":
                    raise ApiError(400, "INVALIDJOBSTATE", "Job is not complete")
                size = int(query.get("maxRecords", [str(BULK_PAGE)])[0])
                raw = query.get("locator", [""])[0]
                offset = int(base64.b64decode(raw + "=" * (-len(raw) % 4)).decode()) if raw else 0
                chunk = rows[offset : offset + size]
                end = offset + len(chunk)
                table = self.state.tables[job["object"]]
                text = self._csv(table, job["_fields"], chunk)
                locator = (
                    base64.b64encode(str(end).encode()).decode().rstrip("=") if end < len(rows) else "null"
                )
                self._churn(table, rows)
                headers = {
                    "Content-Type": "text/csv",
                    "Sforce-Locator": locator,
                    "Sforce-NumberOfRecords": str(len(chunk)),
                }
                return 200, text, headers
        raise ApiError(404, "NOT_FOUND", _NOT_FOUND)

    @staticmethod
    def _csv(table: _Table, fields: tuple[str, ...], rows: list[int]) -> bytes:
        """A result page: header, then every value quoted, built column by column."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(fields)
        columns = [_csv_column([table.cols[f][i] for i in rows], f in _DATETIME_FIELDS) for f in fields]
        writer.writerows(zip(*columns, strict=True))
        return buffer.getvalue().encode()


def _serve(api: SalesforceApi) -> App:
    """The sandbox's HTTP app: every request to ``api``."""

    def app(request: Request) -> Response:
        status, headers, body = api.handle(
            request.method, request.target, dict(request.headers.items()), request.body
        )
        return Response(status, body, headers)

    return app


@dataclass
class SandboxServer:
    """A running sandbox: its URL, the CA to trust, a ready access token, the org, and ``stop``."""

    url: str
    ca_path: Path
    access_token: str
    state: SandboxState
    faults: SalesforceFaults
    jwt_key_path: Path
    _http: SandboxHttpServer

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.stop()


def start_salesforce_sandbox(
    org: Org,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: SalesforceFaults | None = None,
    cert_dir: Path,
    api_limit: int = 1_000_000,
) -> SandboxServer:
    """Serve ``org`` on ``https://host:port`` (0 picks a free port) in a background thread.

    ``cert_dir`` receives the CA (``ca.pem``, what clients trust), the server's certificate and key,
    and ``jwt-client-key.pem``, the private key of the connected app the JWT bearer flow signs with.
    """
    faults = faults if faults is not None else SalesforceFaults()
    state = SandboxState(org, api_limit=api_limit)
    certs = make_certificates(cert_dir, dt.datetime.now(dt.UTC), (host,))
    jwt_key_path = cert_dir / "jwt-client-key.pem"
    state.jwt_public_keys.append(make_jwt_key(jwt_key_path))
    api = SalesforceApi(state, faults, "")
    http = SandboxHttpServer(
        _serve(api), name="salesforce-sandbox", host=host, port=port, tls=server_context(certs)
    )
    url = api.base_url = http.url
    token = state.new_token()
    http.start()
    log.info("salesforce sandbox serving", extra={"url": url, "accounts": len(state.tables["Account"])})
    return SandboxServer(url, certs.ca_path, token, state, faults, jwt_key_path, http)
