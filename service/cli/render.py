"""The commands' output for people: rich tables, progress and closing lines, apart from the commands.

Each function takes the values a command computed and prints them; none opens a database or reads
settings, so a new command group renders with what is here or adds its own function beside them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from monitor.catalog import BY_NAME

if TYPE_CHECKING:  # the commands import what they run; `territory --help` stays fast
    from pathlib import Path

    from rich.progress import Progress

    from monitor.jobs import Health
    from monitor.snapshots import EventChanges
    from rebalancer.progress import Progress as SolveProgress
    from service.demo import AppliedResult, DemoResult

DRIFT_ROWS = 15
"""The demo's drift table shows this many of the largest breaches."""


def health_cell(value: Any, metric: str) -> str:
    """A metric value for the health table: counts as integers, shares as %, money rounded."""
    if value is None or value != value:  # None or NaN
        return "-"
    kind = BY_NAME[metric].kind if metric in BY_NAME else "count"
    if kind == "ratio":
        return f"{value:.0%}"
    if kind == "distance":
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"


# --- territory demo --------------------------------------------------------------------------------------


def print_demo(result: DemoResult, data_dir: Path, sandbox_url: str, seconds: float) -> None:
    """The demo's report on a terminal: the sync, the org it produced, and the territories' health."""
    summary = result.org
    out = Console()
    out.print(f"[bold]Sandbox Salesforce[/bold] at {sandbox_url}; embedded PostgreSQL in {data_dir}")
    out.print(result.sync.one_line())
    totals = Table("what", "count", title="The org in PostgreSQL", title_justify="left")
    for label, value in (
        ("owners (active)", f"{summary.owners:,} ({summary.active_owners:,})"),
        ("accounts (strategic)", f"{summary.accounts:,} ({summary.strategic_accounts:,})"),
        ("ARR", f"{summary.arr:,.0f}"),
        ("potential", f"{summary.potential:,.0f}"),
        (
            "opportunities (open, won)",
            f"{summary.opportunities:,} ({summary.open_opportunities:,}, {summary.won_opportunities:,})",
        ),
        ("ownership history rows", f"{summary.assignments:,}"),
    ):
        totals.add_row(label, value)
    out.print(totals)
    print_drift(out, result.snapshot.health)
    out.print(
        f"saved snapshot {result.snapshot.snapshot_id}; every metric of every territory: "
        "`territory health`; the report: `territory report --out report.html`"
    )
    print_rebalance(result.proposal, out)
    out.print(f"done in {seconds:.1f} s")


def print_drift(out: Console, report: Health) -> None:
    """The balance of each metric and the territories furthest outside their rules' bands."""
    stats = Table("metric", "mean", "cv", "gini", "outside band", title="Balance", title_justify="left")
    for name, row in report.balance.iterrows():
        cv, gini = (f"{row[s]:.3f}" if row[s] == row[s] else "-" for s in ("cv", "gini"))
        stats.add_row(str(name), health_cell(row["mean"], str(name)), cv, gini, f"{row['outside_band']:.0f}")
    out.print(stats)
    fired = report.fired
    if fired.empty:
        out.print("no territory is outside a band")
        return
    names = report.territories["owner_name"]
    worst = fired.assign(size=fired["deviation"].abs()).sort_values("size", ascending=False).head(DRIFT_ROWS)
    table = Table(
        "territory", "rule", "value", "org mean", "deviation",
        title=f"Drift: {len(fired):,} breaches in {fired['owner_id'].nunique():,} territories "
        f"(the {len(worst)} largest)",
        title_justify="left",
    )  # fmt: skip
    for r in worst.itertuples(index=False):
        metric = str(r.metric)
        table.add_row(
            str(names.get(r.owner_id, r.owner_id)),
            str(r.rule),
            health_cell(r.value, metric),
            health_cell(r.mean, metric),
            f"{r.deviation:+.0%}",
        )
    out.print(table)


# --- territory health -------------------------------------------------------------------------------------


def print_backfill(written: Iterable[Mapping[str, Any]]) -> None:
    """The snapshots ``territory health --backfill`` wrote."""
    table = Table("as of", "snapshot", "territories", "breaches", title="Backfill snapshots written")
    for w in written:
        table.add_row(w["as_of"], str(w["snapshot_id"]), f"{w['territories']:,}", str(w["breaches"]))
    Console().print(table)


def print_health(out: Console, report: Health, snapshot_id: int | None, events: EventChanges | None) -> None:
    """The health table (breaches highlighted), the balance table and a closing line."""
    fired = {(str(r.owner_id), str(r.metric)) for r in report.fired.itertuples(index=False)}
    pending = {(str(r.owner_id), str(r.metric)) for r in report.breaches.itertuples(index=False)} - fired
    out.print(_health_table(report, fired, pending))
    out.print(_balance_table(report))
    out.print(_health_closing(report, len(fired), len(pending)))
    if snapshot_id is not None:
        changes = ""
        if events is not None:
            changes = f"; drift events: {events.opened} opened, {events.updated} updated"
            changes += f", {events.resolved} resolved"
        out.print(f"saved snapshot {snapshot_id}{changes}")


def _health_table(report: Health, fired: set[tuple[str, str]], pending: set[tuple[str, str]]) -> Table:
    """Every territory's metrics; fired breaches in red, breaches still waiting for their streak yellow."""
    from monitor.catalog import METRICS

    table = Table(
        "owner", "name", *METRICS, title=f"Territory health as of {report.as_of}", title_justify="left"
    )
    for owner_id, row in report.territories.iterrows():
        cells = []
        for metric in METRICS:
            cell = health_cell(row[metric], metric)
            key = (str(owner_id), metric)
            style = "bold red" if key in fired else "yellow" if key in pending else ""
            cells.append(f"[{style}]{cell}[/{style}]" if style else cell)
        table.add_row(str(owner_id), str(row["owner_name"]), *cells)
    return table


def _balance_table(report: Health) -> Table:
    """Each metric's spread across territories."""
    stats = Table(
        "metric", "mean", "cv", "gini", "min/max", "outside band", title="Balance", title_justify="left"
    )
    for name, row in report.balance.iterrows():
        stats.add_row(
            str(name),
            health_cell(row["mean"], str(name)),
            *(f"{row[s]:.3f}" if row[s] == row[s] else "-" for s in ("cv", "gini", "min_max_ratio")),
            f"{row['outside_band']:.0f}",
        )
    return stats


def _health_closing(report: Health, fired: int, pending: int) -> str:
    from monitor.metrics import UNLOCATED

    unlocated = int(report.territories[UNLOCATED].sum())
    return (
        f"{len(report.territories):,} territories, [bold red]{fired} breaches[/bold red]"
        f" ({pending} more outside a band, waiting for their rule's consecutive snapshots);"
        f" {report.unassigned:,} accounts in no territory; {unlocated:,} without a location (left out of"
        " travel_km)"
    )


# --- territory sync ---------------------------------------------------------------------------------------


def sync_progress(console: Console) -> tuple[Progress, Callable[[Any, int], None]]:
    """A spinner per CRM object with its row count (only on a terminal), and the callback that feeds it."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} rows"))
    bar = Progress(*columns, TimeElapsedColumn(), console=console, disable=not console.is_terminal)
    tasks: dict[Any, Any] = {}

    def progress(obj: Any, rows: int) -> None:
        if obj not in tasks:
            tasks[obj] = bar.add_task(str(obj), total=None)
        bar.update(tasks[obj], completed=rows)

    return bar, progress


# --- territory config show ------------------------------------------------------------------------------


def print_settings(values: Mapping[str, Any]) -> None:
    """The effective settings as one ``dotted.key  value`` row per leaf."""
    table = Table("key", "value")

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                table.add_row(prefix + key, "" if value is None else str(value))

    walk(values, "")
    Console().print(table)


# --- territory proposals ----------------------------------------------------------------------------------


def print_proposals(rows: list[dict[str, Any]]) -> None:
    """``territory proposals list``: one row per proposal."""
    table = Table("id", "scenario", "state", "moves", "created", "decided by", title="Proposals")
    for p in rows:
        table.add_row(
            str(p["id"]), p["scenario"], p["state"], str(p["moves"]), p["created_at"], p["decided_by"] or ""
        )
    Console().print(table)


def print_proposal(p: dict[str, Any]) -> None:
    """One proposal: its state and decision, then its moves."""
    out = Console()
    decided = f", decided by {p['decided_by']} at {p['decided_at']}" if p["decided_by"] else ""
    out.print(f"Proposal {p['id']} ({p['scenario']}): {p['state']}{decided}")
    if p.get("reason"):
        out.print(f"Reason: {p['reason']}")
    table = Table("account", "from", "to", "wave", "effective", "write-back", "rationale")
    for m in p["moves"]:
        table.add_row(
            m["account_id"],
            m["from_owner_id"],
            m["to_owner_id"],
            str(m["wave"]),
            m["effective_date"] or "",
            m["writeback_state"],
            m["rationale"],
        )
    out.print(table)


def print_apply(result: dict[str, Any], sync_line: str | None) -> None:
    """``territory apply``: one row per proposal worked, then the re-sync's line."""
    out = Console()
    if not result["proposals"]:
        out.print("nothing due: no approved proposal has moves to write now")
        return
    table = Table("proposal", "state", "written", "conflicts", "failed", "pending", "next wave", "error",
                  title="Write-back")  # fmt: skip
    for p in result["proposals"]:
        table.add_row(
            str(p["proposal_id"]), p["state"], str(p["written"]), str(p["conflicts"]), str(p["failed"]),
            str(p["pending"]), p["next_due"] or "", "; ".join(p["errors"]),
        )  # fmt: skip
    out.print(table)
    if sync_line is not None:
        out.print(f"re-synced the CRM: {sync_line}")


# --- territory propose ---------------------------------------------------------------------------------


class SolverStatus:
    """The status line of a running solve, rendered afresh on every refresh so the time left counts
    down between the solver's reports."""

    def __init__(self, scenario: str, time_limit: float) -> None:
        self.scenario, self.time_limit = scenario, time_limit
        self.seen: tuple[SolveProgress, float] | None = None  # the last report and when it came

    def __call__(self, progress: SolveProgress) -> None:  # the rebalancer's observer, from its threads
        self.seen = (progress, time.monotonic())

    def __rich__(self) -> str:
        if self.seen is None:
            return f"solving {self.scenario} (HiGHS, at most {self.time_limit:g} s): preparing"
        p, at = self.seen
        left = max(p.seconds_left - (time.monotonic() - at), 0.0)
        what = "curve" if p.phase == "curve" else "parts"
        return (  # each figure of the best solution known, then its proven bound (fits 80 columns)
            f"{self.scenario} · {what} {p.done}/{p.parts} · violation {p.violation:.3f} ≥ "
            f"{p.violation_bound:.3f} · moves {p.moves:.4g} ≥ {p.moves_bound:.4g} · {left:.0f} s left"
        )


@contextlib.contextmanager
def solving(
    scenario: str, time_limit: float, *, quiet: bool, console: Console | None = None
) -> Iterator[SolverStatus | None]:
    """The solver's progress on stderr while it runs: the best solution known (band violation, moves),
    the proven bounds, the time left. Yields the observer to hand the rebalancer; nothing (None) with
    ``--format json`` or off a terminal."""
    console = console or Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    status = SolverStatus(scenario, time_limit)
    with console.status(status):
        yield status


def _gap(solver: Mapping[str, Any]) -> str:
    gap = solver["optimality_gap"]
    return "proven optimal" if gap == 0 else f"within {gap:.1%} of the proven bound {solver['bound']:g}"


def print_rebalance(doc: Mapping[str, Any], out: Console | None = None) -> None:
    """One proposal for people: the summary, the moves with their rationale, the curve, what blocks."""
    out = out or Console()
    stored = f"proposal {doc['proposal_id']}" if doc["proposal_id"] is not None else "not stored (dry run)"
    solver = doc["solver"]
    out.print(
        f"[bold]{doc['scenario']}[/]: {doc['status']}, {doc['objective']['moves']} moves "
        f"({len(doc['moves'])} with orphans); band violation {doc['before']['band_violation']:.3f} -> "
        f"{doc['after']['band_violation']:.3f}; {_gap(solver)} "
        f"({solver['status']}, {solver['seconds']:.1f} s); {stored}"
    )
    table = Table("wave", "account", "from", "to", "rationale", title="Moves", title_justify="left")
    for m in doc["moves"][: DRIFT_ROWS * 2]:
        table.add_row(str(m["wave"]), m["account_name"], m["from_owner_id"], m["to_owner_id"], m["rationale"])
    out.print(table)
    if len(doc["moves"]) > DRIFT_ROWS * 2:
        out.print(f"... and {len(doc['moves']) - DRIFT_ROWS * 2} more (--format json lists them all)")
    if doc["tradeoff"]:
        curve = Table("at most", "band violation", "proven floor", title="Trade-off", title_justify="left")
        for p in doc["tradeoff"]:
            curve.add_row(str(p["max_moves"]), f"{p['band_violation']:.3f}", f"{p['bound']:.3f}")
        out.print(curve)
    for line in doc["blocked"]:
        out.print(f"[yellow]blocked[/]: {line}")


def print_scenarios(docs: Iterable[Mapping[str, Any]]) -> None:
    """``--scenario all``: the scenarios side by side."""
    table = Table(title="Scenarios", title_justify="left")
    table.add_column("scenario", no_wrap=True, min_width=9)
    for header in (
        "status",
        "moves",
        "violation",
        "after",
        "travel km",
        "pipeline moved",
        "tenures",
        "gap",
        "id",
    ):
        table.add_column(header)
    for d in docs:
        table.add_row(
            d["scenario"], d["status"], str(d["objective"]["moves"]), f"{d['before']['band_violation']:.3f}",
            f"{d['after']['band_violation']:.3f}", f"{d['comparison']['travel_change_km']:+,.0f}",
            f"{d['comparison']['pipeline_changing_hands']:,.0f}",
            f"{d['comparison']['relationships_disrupted']:.0f}", f"{d['solver']['optimality_gap']:.1%}",
            str(d["proposal_id"] or "-"),
        )  # fmt: skip
    Console().print(table)


def print_applied(result: DemoResult, applied: AppliedResult) -> None:
    """The demo after the approval: what was written, and the balance before and after."""
    out = Console()
    for r in applied.writeback:
        out.print(
            f"proposal {r['proposal_id']} {r['state']}: {r['written']} moves written to the sandbox, "
            f"{r['conflicts']} conflicts, {r['failed']} failed"
        )
    if applied.resync is not None:
        out.print(f"re-synced: {applied.resync.one_line()}")
    before, after = result.snapshot.health, applied.after.health
    table = Table("metric", "cv before", "cv after", "outside band before", "after",
                  title="Balance before and after", title_justify="left")  # fmt: skip
    for name, row in before.balance.iterrows():
        later = after.balance.loc[str(name)]
        cells = [f"{v:.3f}" if v == v else "-" for v in (row["cv"], later["cv"])]
        table.add_row(str(name), *cells, f"{row['outside_band']:.0f}", f"{later['outside_band']:.0f}")
    out.print(table)
