"""A :class:`Problem` from the frames the store hands over (the import format's columns), as of D.

The per-account contributions are the monitor's: pipeline from ``monitor.metrics.account_opportunities``
and touches from the tier's touches model (``metrics.touches``), so a territory's sum here is the value
the monitor reports for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np
import pandas as pd

from monitor.metrics import DEFAULT_TOUCHES, account_opportunities
from rebalancer.problem import AccountTable, FloatArray, Problem, Territory


def _floats(column: pd.Series) -> FloatArray:
    return np.asarray(pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))


def territories_of(owners: pd.DataFrame) -> tuple[Territory, ...]:
    """One territory per owner row (columns id, name, region, team, capacity, home_lat, home_lon, active)."""
    cap, lat, lon = _floats(owners["capacity"]), _floats(owners["home_lat"]), _floats(owners["home_lon"])
    rows = zip(
        owners["id"].astype(str), owners["name"].astype(str), owners["region"].astype(str),
        owners["team"].astype(str), cap, lat, lon, owners["active"].astype(bool), strict=True,
    )  # fmt: skip
    return tuple(
        Territory(
            owner_id=i,
            name=n,
            region=r,
            team=tm,
            capacity=float(c) if np.isfinite(c) else None,
            home_lat=float(y) if np.isfinite(y) else None,
            home_lon=float(x) if np.isfinite(x) else None,
            active=bool(a),
        )
        for i, n, r, tm, c, y, x, a in rows
    )


def _open_probability(opportunities: pd.DataFrame, as_of: dt.date) -> pd.Series:
    """Largest probability of the opportunities open today (closed ones and those closed by D excluded)."""
    open_now = ~opportunities["is_closed"].to_numpy(dtype=bool)
    sub = opportunities.loc[open_now, ["account_id", "probability"]]
    return sub.groupby("account_id")["probability"].max()


def _last_won(opportunities: pd.DataFrame, as_of: dt.date) -> pd.Series:
    won = opportunities["is_won"].to_numpy(dtype=bool)
    close = pd.to_datetime(opportunities["close_date"])
    ok = won & (close <= pd.Timestamp(as_of)).to_numpy()
    return close[ok].groupby(opportunities.loc[ok, "account_id"]).max()


def _tenure_start(assignments: pd.DataFrame, as_of: dt.date) -> pd.Series:
    """Start of the open tenure row (no end date) per account."""
    open_rows = assignments.loc[assignments["end_date"].isna()]
    return pd.to_datetime(open_rows["start_date"]).groupby(open_rows["account_id"]).max()


def account_table_of(
    accounts: pd.DataFrame,
    opportunities: pd.DataFrame,
    assignments: pd.DataFrame,
    as_of: dt.date,
    touches: Mapping[str, float] = DEFAULT_TOUCHES,
) -> AccountTable:
    """The accounts as of ``as_of`` with their contributions, locks and risk inputs."""
    ids = accounts["id"].astype(str)
    per = account_opportunities(opportunities, as_of).reindex(ids).fillna(0.0)
    tier = accounts["tier"].astype(str).to_numpy(dtype=object)
    touch = np.array([float(touches.get(t, 0.0)) for t in tier], dtype=np.float64)
    tenure = _tenure_start(assignments, as_of).reindex(ids).to_numpy(dtype="datetime64[D]")
    won = _last_won(opportunities, as_of).reindex(ids).to_numpy(dtype="datetime64[D]")
    probability = _open_probability(opportunities, as_of).reindex(ids).fillna(0.0)
    return AccountTable(
        ids=ids.to_numpy(dtype=object),
        names=accounts["name"].astype(str).to_numpy(dtype=object),
        owner_ids=accounts["owner_id"].astype(str).to_numpy(dtype=object),
        contributions={
            "potential": np.nan_to_num(_floats(accounts["potential"]), nan=0.0),
            "arr": np.nan_to_num(_floats(accounts["arr"]), nan=0.0),
            "open_pipeline": per["open_amount"].to_numpy(dtype=np.float64),
            "weighted_pipeline": per["weighted_amount"].to_numpy(dtype=np.float64),
            "workload": touch,
        },
        tier=tier,
        industry=accounts["industry"].astype(str).to_numpy(dtype=object),
        lat=_floats(accounts["lat"]),
        lon=_floats(accounts["lon"]),
        tenure_start=tenure,
        max_open_probability=probability.to_numpy(dtype=np.float64),
        protected=accounts["protected"].fillna(False).astype(bool).to_numpy(),
        last_won=won,
    )


def problem_of(
    owners: pd.DataFrame,
    accounts: pd.DataFrame,
    opportunities: pd.DataFrame,
    assignments: pd.DataFrame,
    as_of: dt.date,
    touches: Mapping[str, float] = DEFAULT_TOUCHES,
) -> Problem:
    """The problem as of ``as_of`` from frames with the import format's columns (docs/csv-format.md)."""
    table = account_table_of(accounts, opportunities, assignments, as_of, touches)
    return Problem(as_of=as_of, territories=territories_of(owners), accounts=table)
