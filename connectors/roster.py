"""The rep roster: capacity, home location, quota, region and team per owner when the CRM lacks them.

A CSV file in config with a header row: ``id`` or ``email`` (at least one of the two, to match an owner)
and any of ``capacity, home_lat, home_lon, quota, region, team``. A roster value fills an owner's field
only where the CRM left it empty; the CRM wins where it has a value. Matching is by id first, then by
email (case-insensitive). Values are validated with the owner's own rules (connectors/records.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd

from connectors.errors import ConnectorConfigError

ROSTER_FIELDS: Final = ("capacity", "home_lat", "home_lon", "quota", "region", "team")
KEYS: Final = ("id", "email")


def load_roster(path: Path) -> pd.DataFrame:
    """Read and check the roster file: a frame of ``id, email`` and the roster fields, all text."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise ConnectorConfigError(f"roster file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConnectorConfigError(f"roster file {path} is not UTF-8: {exc.reason}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConnectorConfigError(f"roster file {path} is not valid CSV: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if not any(k in frame.columns for k in KEYS):
        raise ConnectorConfigError(f"roster file {path}: needs an 'id' or an 'email' column")
    unknown = [c for c in frame.columns if c not in (*KEYS, *ROSTER_FIELDS)]
    if unknown:
        raise ConnectorConfigError(
            f"roster file {path}: unknown column {unknown[0]!r} "
            f"(expected id, email, {', '.join(ROSTER_FIELDS)})"
        )
    for column in (*KEYS, *ROSTER_FIELDS):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.map(lambda v: v.strip())
    frame["email"] = frame["email"].str.lower()
    return frame[[*KEYS, *ROSTER_FIELDS]].astype(object)


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def apply_roster(owners: pd.DataFrame, roster: pd.DataFrame) -> pd.DataFrame:
    """``owners`` (canonical owner columns, any values) with empty roster fields filled from ``roster``."""
    if roster.empty or owners.empty:
        return owners
    out = owners.copy()
    by_id = roster[roster["id"] != ""].drop_duplicates("id", keep="last").set_index("id")
    by_email = roster[roster["email"] != ""].drop_duplicates("email", keep="last").set_index("email")
    ids = out["id"].astype(object).where(out["id"].notna(), "").astype(str).str.strip()
    emails = out["email"].astype(object).where(out["email"].notna(), "").astype(str).str.strip().str.lower()
    for field in ROSTER_FIELDS:
        from_id = ids.map(by_id[field]) if not by_id.empty else pd.Series(None, index=out.index)
        from_email = emails.map(by_email[field]) if not by_email.empty else pd.Series(None, index=out.index)
        filled = from_id.where(~_blank(from_id), from_email)
        current = out[field] if field in out.columns else pd.Series(None, index=out.index, dtype=object)
        out[field] = current.astype(object).where(~_blank(current), filled.astype(object))
    return out
