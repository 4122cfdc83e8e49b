"""Per-territory health metrics as of a date: plain DataFrames in, one row per territory out.

Every definition is in docs/metrics.md; this module is the executable version of that page. The inputs
are already "as of D" (see ``monitor.frames``): one row per territory owner, one row per account, and the
opportunities either summed per territory (what Postgres hands over) or per account (the reference
form, :func:`account_opportunities`). Sums are vectorised ``np.bincount`` over territory codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

UNLOCATED: Final = "unlocated_accounts"
"""Data-quality count stored next to the metrics: accounts left out of ``travel_km`` (no location)."""

TIERS: Final = ("strategic", "growth", "core")
DEFAULT_TOUCHES: Final[Mapping[str, float]] = {"strategic": 12.0, "growth": 6.0, "core": 2.0}
WON_WINDOW_DAYS: Final = 365
EARTH_RADIUS_KM: Final = 6371.0

OWNER_COLUMNS: Final = ("name", "capacity", "quota", "home_lat", "home_lon")
BOOK_COLUMNS: Final = ("owner_id", "tier", "arr", "potential", "lat", "lon")
"""Per-account input: the account's owner as of D and its attributes."""
PIPELINE_COLUMNS: Final = ("open_amount", "weighted_amount", "won_amount", "won_count", "closed_count")
"""Opportunities as of D summed per account (:func:`account_opportunities`) or per territory."""
ACCOUNT_COLUMNS: Final = (*BOOK_COLUMNS, *PIPELINE_COLUMNS)
"""The reference per-account input: the account and its own opportunities as of D."""
BOOK_SUMS: Final = ("arr", "potential", "largest_arr")
TERRITORY_SUMS: Final = (*BOOK_SUMS, *PIPELINE_COLUMNS)
"""The money and counts of a territory's accounts and opportunities (:func:`territory_sums`)."""


def territory_codes(values: pd.Series, categories: pd.Index) -> npt.NDArray[np.intp]:
    """Position of each value in ``categories`` (-1 where absent): an account's territory or tier."""
    if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.categories.equals(categories):
        return np.asarray(values.cat.codes, dtype=np.intp)
    return np.asarray(categories.get_indexer(pd.Index(values.astype(object))), dtype=np.intp)


def _floats(column: pd.Series) -> FloatArray:
    """A numeric column as float64 with NaN for missing values."""
    return np.asarray(pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))


def haversine_km(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Great-circle distance in km on a sphere of radius ``EARTH_RADIUS_KM`` (NaN where a point is)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat = p2 - p1
    dlon = np.radians(lon2) - np.radians(lon1)
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """``numerator / denominator``, NaN where the denominator is missing or not positive."""
    ok = np.isfinite(denominator) & (denominator > 0)
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=ok)
    return out


def territory_sums(owners: pd.Index, accounts: pd.DataFrame) -> pd.DataFrame:
    """``TERRITORY_SUMS`` per territory from one row per account with ``ACCOUNT_COLUMNS``.

    ``largest_arr`` is the largest account ARR (0 for an empty book). Missing money counts as zero;
    accounts whose owner is not a territory are ignored. Postgres computes the same sums in frames.
    """
    n = len(owners)
    codes = territory_codes(accounts["owner_id"], owners)
    keep = codes >= 0
    code = codes[keep]
    acc = accounts.loc[keep] if not keep.all() else accounts

    def money(column: str) -> FloatArray:
        return np.nan_to_num(_floats(acc[column]), nan=0.0)

    out = {
        c: np.bincount(code, weights=money(c), minlength=n).astype(np.float64) for c in ("arr", "potential")
    }
    largest = np.zeros(n)
    np.maximum.at(largest, code, money("arr"))
    out["largest_arr"] = largest
    for column in PIPELINE_COLUMNS:
        out[column] = np.bincount(code, weights=money(column), minlength=n).astype(np.float64)
    return pd.DataFrame(out, index=owners)


def territory_metrics(
    owners: pd.DataFrame,
    accounts: pd.DataFrame,
    touches: Mapping[str, float] = DEFAULT_TOUCHES,
    *,
    sums: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every metric of every territory: one row per row of ``owners`` (index: owner id).

    ``owners`` holds the territories (index owner id, columns ``OWNER_COLUMNS``); ``accounts`` holds one
    row per account with ``ACCOUNT_COLUMNS``, or, when ``sums`` brings the money and counts per
    territory (index owner id, ``TERRITORY_SUMS``, as Postgres computes them), only ``owner_id``,
    ``tier``, ``lat`` and ``lon``. Accounts whose owner is not a territory are ignored. Missing money
    (ARR, potential, amounts) counts as zero; missing ratios are NaN. The result has the columns
    ``METRICS`` then ``UNLOCATED``.
    """
    n = len(owners)
    if sums is None:
        sums = territory_sums(owners.index, accounts)
    per = {c: np.nan_to_num(_floats(sums[c].reindex(owners.index)), nan=0.0) for c in TERRITORY_SUMS}
    codes = territory_codes(accounts["owner_id"], owners.index)
    keep = codes >= 0
    code = codes[keep]
    acc = accounts.loc[keep] if not keep.all() else accounts

    def total(values: FloatArray | None = None) -> FloatArray:
        return np.bincount(code, weights=values, minlength=n).astype(np.float64)

    tier_code = territory_codes(acc["tier"], pd.Index(TIERS))
    out: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]] = {}
    out["accounts"] = np.bincount(code, minlength=n).astype(np.int64)
    strategic = tier_code == TIERS.index("strategic")
    out["strategic_accounts"] = np.bincount(code, weights=strategic, minlength=n).astype(np.int64)
    out["arr"] = per["arr"]
    out["potential"] = per["potential"]
    out["open_pipeline"] = per["open_amount"]
    out["weighted_pipeline"] = per["weighted_amount"]
    won = per["won_amount"]
    out["won_12m"] = won
    out["win_rate_12m"] = _ratio(per["won_count"], per["closed_count"])
    out["quota_attainment"] = _ratio(won, _floats(owners["quota"]))
    per_tier = np.array([float(touches.get(t, 0.0)) for t in TIERS])
    account_touches = np.where(tier_code >= 0, per_tier[tier_code], 0.0)
    workload = total(account_touches)
    out["workload"] = workload
    out["utilization"] = _ratio(workload, _floats(owners["capacity"]))

    lat, lon = _floats(acc["lat"]), _floats(acc["lon"])
    located = np.isfinite(lat) & np.isfinite(lon)
    home_lat, home_lon = _floats(owners["home_lat"]), _floats(owners["home_lon"])
    km = haversine_km(home_lat[code], home_lon[code], lat, lon)
    measured = located & np.isfinite(km)
    km_sum = np.bincount(code, weights=np.where(measured, km, 0.0), minlength=n).astype(np.float64)
    km_count = np.bincount(code, weights=measured, minlength=n).astype(np.float64)
    out["travel_km"] = _ratio(km_sum, km_count)

    out["top_account_share"] = _ratio(per["largest_arr"], per["arr"])
    out[UNLOCATED] = np.bincount(code, weights=~located, minlength=n).astype(np.int64)
    frame = pd.DataFrame(out, index=owners.index)
    frame.index.name = "owner_id"
    return frame


OPPORTUNITY_COLUMNS: Final = ("account_id", "amount", "probability", "close_date", "is_closed", "is_won")


def account_opportunities(opportunities: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Opportunities as of ``as_of`` aggregated per account (the pure twin of the SQL in frames).

    An opportunity is closed at D when it is closed today and its close date is on or before D (one
    closed after D was still open at D); everything else is open at D. The won window is
    (D - ``WON_WINDOW_DAYS``, D]. Missing amounts and probabilities count as zero.
    """
    day = np.datetime64(as_of, "D")
    close = pd.to_datetime(opportunities["close_date"]).to_numpy(dtype="datetime64[D]")
    has_close = ~np.isnat(close)
    is_closed = opportunities["is_closed"].to_numpy(dtype=bool)
    closed = is_closed & (~has_close | (close <= day))
    in_window = is_closed & has_close & (close <= day) & (close > day - np.timedelta64(WON_WINDOW_DAYS, "D"))
    won = in_window & opportunities["is_won"].to_numpy(dtype=bool)
    amount = np.nan_to_num(_floats(opportunities["amount"]), nan=0.0)
    probability = np.nan_to_num(_floats(opportunities["probability"]), nan=0.0)
    parts = pd.DataFrame(
        {
            "account_id": opportunities["account_id"].to_numpy(),
            "open_amount": np.where(closed, 0.0, amount),
            "weighted_amount": np.where(closed, 0.0, amount * probability),
            "won_amount": np.where(won, amount, 0.0),
            "won_count": won.astype(np.int64),
            "closed_count": in_window.astype(np.int64),
        }
    )
    return parts.groupby("account_id", sort=True).sum()


def territory_pipeline(opportunities: pd.DataFrame, owner_of: pd.Series, as_of: dt.date) -> pd.DataFrame:
    """Opportunities as of ``as_of`` summed per territory: the pure twin of the SQL in frames.

    ``owner_of`` maps account id to its owner as of D (missing: no owner); the result is indexed by
    owner id with ``PIPELINE_COLUMNS``. By definition the per-account sums added up per owner.
    """
    per_account = account_opportunities(opportunities, as_of)
    owner = owner_of.reindex(per_account.index)
    return per_account.loc[owner.notna().to_numpy()].groupby(owner.dropna().to_numpy()).sum()
