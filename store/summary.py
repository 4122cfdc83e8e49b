"""What the database holds, in a few numbers: the demo's and the operator's first look."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class RegionSummary:
    """Territories and book of one region."""

    region: str
    reps: int
    accounts: int
    arr: float


@dataclass(frozen=True)
class OrgSummary:
    """Row counts and totals of the synced org (deleted rows excluded)."""

    owners: int
    active_owners: int
    accounts: int
    strategic_accounts: int
    arr: float
    potential: float
    opportunities: int
    open_opportunities: int
    won_opportunities: int
    assignments: int
    regions: tuple[RegionSummary, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        return asdict(self)


_TOTALS = text(
    """
    SELECT
      (SELECT count(*) FROM owners) AS owners,
      (SELECT count(*) FROM owners WHERE active) AS active_owners,
      (SELECT count(*) FROM accounts WHERE NOT deleted) AS accounts,
      (SELECT count(*) FROM accounts WHERE NOT deleted AND tier = 'strategic') AS strategic_accounts,
      (SELECT coalesce(sum(arr), 0) FROM accounts WHERE NOT deleted) AS arr,
      (SELECT coalesce(sum(potential), 0) FROM accounts WHERE NOT deleted) AS potential,
      (SELECT count(*) FROM opportunities WHERE NOT deleted) AS opportunities,
      (SELECT count(*) FROM opportunities WHERE NOT deleted AND NOT is_closed) AS open_opportunities,
      (SELECT count(*) FROM opportunities WHERE NOT deleted AND is_won) AS won_opportunities,
      (SELECT count(*) FROM assignment_history) AS assignments
    """
)

_REGIONS = text(
    """
    SELECT coalesce(o.region, '(none)') AS region,
           count(DISTINCT o.id) FILTER (WHERE o.active) AS reps,
           count(a.id) AS accounts,
           coalesce(sum(a.arr), 0) AS arr
    FROM owners o LEFT JOIN accounts a ON a.owner_id = o.id AND NOT a.deleted
    GROUP BY 1 ORDER BY 1
    """
)


def org_summary(conn: Connection) -> OrgSummary:
    """Count what the database holds now."""
    totals = conn.execute(_TOTALS).mappings().one()
    regions = tuple(
        RegionSummary(region=r.region, reps=r.reps, accounts=r.accounts, arr=float(r.arr))
        for r in conn.execute(_REGIONS)
    )
    return OrgSummary(
        owners=totals["owners"],
        active_owners=totals["active_owners"],
        accounts=totals["accounts"],
        strategic_accounts=totals["strategic_accounts"],
        arr=float(totals["arr"]),
        potential=float(totals["potential"]),
        opportunities=totals["opportunities"],
        open_opportunities=totals["open_opportunities"],
        won_opportunities=totals["won_opportunities"],
        assignments=totals["assignments"],
        regions=regions,
    )
