"""The rebalancing problem as of a date: territories, accounts and a scenario, as plain frozen values.

Accounts are held column-wise (:class:`AccountTable`, numpy arrays) because an org has up to millions of
them; :func:`account_table` builds the table from one :class:`Account` record per account, which is the
form tests and small callers use. Every per-account number (potential, ARR, pipeline, touches) is the
monitor's own value for that account (docs/metrics.md); the rebalancer only adds them up per territory.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from monitor.catalog import ADDITIVE, BY_NAME, summand

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

CONTRIBUTIONS: Final = ("potential", "arr", "open_pipeline", "weighted_pipeline", "workload")
"""Per-account summands the problem holds (an account's ``workload`` is the touches of its tier): the
summands, in the metric catalogue (monitor/catalog.py), of the metrics a move can balance."""
_COUNTS: Final = frozenset({"accounts", "strategic_accounts"})  # one per account, per strategic account
ADDITIVE_METRICS: Final[Mapping[str, str]] = {
    m: ("" if m in _COUNTS else summand(m))
    for m in ADDITIVE
    if BY_NAME[m].divisor is None and (m in _COUNTS or summand(m) in CONTRIBUTIONS)
}
"""Territory metrics a band or limit may name, and the account contribution each sums ("": a count)."""
UTILIZATION: Final = "utilization"  # workload / capacity: the only ratio metric, allowed as a limit


class MoveWeight(enum.StrEnum):
    """What one discretionary move costs in the second goal."""

    none = "none"  # every move costs 1
    arr = "arr"  # 1 + the account's ARR / the mean ARR of the accounts that may move
    tenure = "tenure"  # 1 + years with the current owner, so long relationships break last


class Secondary(enum.StrEnum):
    """The third goal, among proposals with the fewest moves."""

    none = "none"
    travel = "travel"  # km from the receiver's home to the account, summed over the moves
    industry_fit = "industry_fit"  # moves to a rep who already has fewer accounts of that industry cost more
    strategic_spread = "strategic_spread"  # strategic accounts go to reps with fewer strategic accounts


@dataclass(frozen=True)
class Territory:
    """One owner's book; inactive owners (or owners removed by a what-if) leave their accounts orphaned."""

    owner_id: str
    name: str
    region: str
    capacity: float | None  # touches a quarter; None: unknown, so the rep receives nothing
    home_lat: float | None = None
    home_lon: float | None = None
    team: str = ""
    active: bool = True
    hypothetical: bool = False  # added by a what-if: the proposal cannot be approved until the rep exists


@dataclass(frozen=True)
class Account:
    """One account as of D: its current owner, its contributions and what may lock it in place."""

    id: str
    name: str
    owner_id: str
    contributions: Mapping[str, float] = field(default_factory=dict)  # keys of ``CONTRIBUTIONS``
    tier: str = "core"
    industry: str = ""
    lat: float | None = None
    lon: float | None = None
    tenure_start: dt.date | None = None  # start of the open row of the assignment history
    max_open_probability: float = 0.0  # of the opportunities open today
    protected: bool = False
    last_won: dt.date | None = None  # close date of the latest won opportunity, for the risks


@dataclass(frozen=True, eq=False)
class AccountTable:
    """The accounts column-wise; every array has one entry per account, in the same order."""

    ids: ObjArray
    names: ObjArray
    owner_ids: ObjArray
    contributions: Mapping[str, FloatArray]  # every key of ``CONTRIBUTIONS``
    tier: ObjArray
    industry: ObjArray
    lat: FloatArray  # NaN: no location
    lon: FloatArray
    tenure_start: npt.NDArray[np.datetime64]  # datetime64[D], NaT: undated tenure
    max_open_probability: FloatArray
    protected: BoolArray
    last_won: npt.NDArray[np.datetime64]  # datetime64[D], NaT: never won

    def __len__(self) -> int:
        return len(self.ids)


def _floats(values: Sequence[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _days(values: Sequence[dt.date | None]) -> npt.NDArray[np.datetime64]:
    return np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "D") for v in values], "M8[D]")


def account_table(accounts: Sequence[Account]) -> AccountTable:
    """The column-wise table of ``accounts`` (missing contributions count 0)."""
    unknown = {k for a in accounts for k in a.contributions} - set(CONTRIBUTIONS)
    if unknown:
        raise ValueError(f"unknown account contributions {sorted(unknown)}; known: {list(CONTRIBUTIONS)}")
    return AccountTable(
        ids=np.array([a.id for a in accounts], dtype=object),
        names=np.array([a.name for a in accounts], dtype=object),
        owner_ids=np.array([a.owner_id for a in accounts], dtype=object),
        contributions={
            k: np.array([float(a.contributions.get(k, 0.0)) for a in accounts], dtype=np.float64)
            for k in CONTRIBUTIONS
        },
        tier=np.array([a.tier for a in accounts], dtype=object),
        industry=np.array([a.industry for a in accounts], dtype=object),
        lat=_floats([a.lat for a in accounts]),
        lon=_floats([a.lon for a in accounts]),
        tenure_start=_days([a.tenure_start for a in accounts]),
        max_open_probability=np.array([a.max_open_probability for a in accounts], dtype=np.float64),
        protected=np.array([a.protected for a in accounts], dtype=bool),
        last_won=_days([a.last_won for a in accounts]),
    )


@dataclass(frozen=True)
class Band:
    """The monitor's ``band`` rule: ``|value / mean - 1| <= tolerance``, mean over the territories."""

    metric: str
    tolerance: float


@dataclass(frozen=True)
class Limit:
    """The monitor's ``max`` rule: ``value <= maximum`` (utilization: workload / capacity)."""

    metric: str
    maximum: float


@dataclass(frozen=True)
class TierRange:
    """Per territory, between ``minimum`` and ``maximum`` accounts of ``tier`` (inclusive)."""

    tier: str
    minimum: int
    maximum: int | None = None


@dataclass(frozen=True)
class Scenario:
    """What balanced means and which moves are allowed; see docs/rebalancer.md."""

    name: str
    bands: tuple[Band, ...]
    limits: tuple[Limit, ...] = (Limit(UTILIZATION, 1.0),)
    tier_ranges: tuple[TierRange, ...] = ()
    max_moves_per_territory: int | None = None  # out of, and into, any one territory
    max_moves: int | None = None  # discretionary moves in all
    move_weight: MoveWeight = MoveWeight.none
    secondary: Secondary = Secondary.none
    neighbours: tuple[tuple[str, str], ...] = ()  # region pairs whose reps may take each other's accounts
    tenure_lock_months: int = 6  # 0 turns the lock off
    deal_lock_probability: float = 0.5

    def __post_init__(self) -> None:
        for metric in [b.metric for b in self.bands] + [lim.metric for lim in self.limits]:
            if metric not in ADDITIVE_METRICS and metric != UTILIZATION:
                raise ValueError(f"scenario {self.name}: metric {metric!r} cannot be rebalanced")
        if any(b.metric == UTILIZATION for b in self.bands):
            raise ValueError(f"scenario {self.name}: utilization is a limit, not a band")
        if any(b.tolerance < 0 for b in self.bands):
            raise ValueError(f"scenario {self.name}: a band tolerance must be >= 0")
        if self.tenure_lock_months < 0:
            raise ValueError(f"scenario {self.name}: tenure_lock_months must be >= 0")
        for tr in self.tier_ranges:
            if tr.minimum < 0 or (tr.maximum is not None and tr.maximum < tr.minimum):
                raise ValueError(f"scenario {self.name}: bad tier range for {tr.tier}")


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything the optimiser reads, as of ``as_of``: no session, no clock."""

    as_of: dt.date
    territories: tuple[Territory, ...]
    accounts: AccountTable

    def __post_init__(self) -> None:
        ids = [t.owner_id for t in self.territories]
        if len(set(ids)) != len(ids):
            raise ValueError("territory owner ids must be unique")


def full_months(start: npt.NDArray[np.datetime64], as_of: dt.date) -> IntArray:
    """Whole calendar months from each ``start`` to ``as_of`` (-1 where the start is NaT).

    The months between the two dates, less one when the day of the month of ``as_of`` is before that of
    ``start``: a tenure from Jan 31 has 0 full months on Feb 28 and 1 on Mar 1; one from Jan 15 has 1 on
    Feb 15. This is ``start <= as_of - M months`` with the day clamped to the month's end.
    """
    day = np.datetime64(as_of, "D")
    ok = ~np.isnat(start)
    safe = np.where(ok, start, day)
    months = (day.astype("M8[M]") - safe.astype("M8[M]")).astype(np.int64)
    start_dom = (safe - safe.astype("M8[M]").astype("M8[D]")).astype(np.int64)
    as_of_dom = int((day - day.astype("M8[M]").astype("M8[D]")).astype(np.int64))
    months = months - (as_of_dom < start_dom)
    return np.where(ok, months, -1).astype(np.int64)
