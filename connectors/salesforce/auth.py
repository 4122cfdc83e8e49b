"""Getting a Salesforce session: a given access token, a SOAP username/password login, or OAuth JWT bearer.

Logins go to the configured ``login_url`` (``https://login.salesforce.com``, ``https://test...`` or a
My Domain), through simple-salesforce's own response parsing (``soap_login``, ``token_login``). Vendor
exceptions pass through; :mod:`connectors.salesforce.client` maps them in one place.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from html import escape
from pathlib import Path

import jwt
import requests
from simple_salesforce.login import soap_login, token_login

from connectors.errors import ConnectorConfigError
from connectors.salesforce.settings import SalesforceSettings
from connectors.settings import is_secret


class AuthMethod(enum.StrEnum):
    """How the connector gets its session."""

    access_token = "access_token"  # noqa: S105 - the name of a method, not a secret
    password = "password"  # noqa: S105
    jwt = "jwt"


@dataclass(frozen=True)
class Credentials:
    """Everything a login needs; secrets are plain strings here, read from the environment upstream."""

    method: AuthMethod
    login_url: str = "https://login.salesforce.com"
    instance_url: str | None = None
    access_token: str | None = None
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    consumer_key: str | None = None
    private_key_path: Path | None = None
    api_version: str = "59.0"

    @property
    def can_reauthenticate(self) -> bool:
        """A given access token cannot be renewed by the connector; the logins can."""
        return self.method is not AuthMethod.access_token

    def check(self) -> None:
        """Refuse, with the setting to fix, a method whose inputs are missing."""
        need: dict[AuthMethod, tuple[str, ...]] = {
            AuthMethod.access_token: ("instance_url", "access_token"),
            AuthMethod.password: ("username", "password"),
            AuthMethod.jwt: ("username", "consumer_key", "private_key_path"),
        }
        for attr in need[self.method]:
            if not getattr(self, attr):
                raise ConnectorConfigError(f"salesforce auth {self.method.value}: {_where(attr)} is not set")


def _where(field: str) -> str:
    """Where the operator sets ``field``: its environment variable for a secret, else its key."""
    if is_secret(SalesforceSettings.model_fields[field].annotation):
        return SalesforceSettings.env(field)
    return SalesforceSettings.setting(field)


def _soap_body(username: str, password: str) -> str:
    """The partner API login envelope (password followed by the security token)."""
    return (
        '<?xml version="1.0" encoding="utf-8" ?>'
        '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com">'
        "<env:Header><urn:CallOptions><urn:client>territory-monitor</urn:client>"
        "<urn:defaultNamespace>sf</urn:defaultNamespace></urn:CallOptions></env:Header>"
        '<env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
        f"<n1:username>{escape(username)}</n1:username><n1:password>{escape(password)}</n1:password>"
        "</n1:login></env:Body></env:Envelope>"
    )


def login(creds: Credentials, session: requests.Session, now: dt.datetime) -> tuple[str, str]:
    """A fresh ``(session_id, instance_url)``; ``now`` dates the JWT assertion."""
    creds.check()
    base = creds.login_url.rstrip("/")
    if creds.method is AuthMethod.access_token:
        return str(creds.access_token), str(creds.instance_url).rstrip("/")
    if creds.method is AuthMethod.password:
        secret = (creds.password or "") + (creds.security_token or "")
        session_id, instance = soap_login(
            f"{base}/services/Soap/u/{creds.api_version}",
            _soap_body(str(creds.username), secret),
            {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"},
            None,
            session,
        )
        return str(session_id), f"https://{instance}"
    key_path = Path(str(creds.private_key_path))
    try:
        key = key_path.read_bytes()
    except OSError as exc:
        raise ConnectorConfigError(
            f"salesforce.private_key_path: cannot read {key_path}: {exc.strerror}"
        ) from None
    claims = {
        "iss": creds.consumer_key,
        "sub": creds.username,
        "aud": base,
        "exp": int((now + dt.timedelta(minutes=3)).timestamp()),
    }
    try:
        assertion = jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConnectorConfigError(
            f"salesforce.private_key_path: {key_path} is not an RSA private key: {exc}"
        ) from None
    token, instance = token_login(
        f"{base}/services/oauth2/token",
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
        "login",
        str(creds.consumer_key),
        None,
        None,
        session,
    )
    return str(token), f"https://{instance}"
