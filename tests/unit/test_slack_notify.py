"""The pure parts of approval/notify.py: the message's values from a stored proposal, the thread text."""

from __future__ import annotations

import datetime as dt

from approval import notify
from store import proposals as props

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _move(account: str, wave: int, date: dt.date | None) -> props.MoveRow:
    return props.MoveRow(1, account, "005A", "005B", "005A", wave, date, "pending", f"why {account}", False)


def _detail(**extra: object) -> props.ProposalDetail:
    summary = props.ProposalSummary(
        7, "default", "proposed", 3, NOW, NOW + dt.timedelta(days=14), None, None, None, None, None
    )
    moves = (
        _move("001A", 1, dt.date(2026, 12, 2)),
        _move("001B", 1, dt.date(2026, 12, 2)),
        _move("001C", 2, dt.date(2027, 1, 4)),
    )
    fields: dict[str, object] = {
        "before_metrics": None,
        "after_metrics": None,
        "solver_report": None,
        "waves": None,
    }
    fields.update(extra)
    return props.ProposalDetail(summary, moves, **fields)  # type: ignore[arg-type]


def test_the_view_names_moves_counts_waves_and_reads_the_solver_figures() -> None:
    labels = {"001A": props.MoveLabel("Acme", "Ada", "Bo", 300.0)}
    view = notify.build_view(
        _detail(
            before_metrics={"band_violation": 12},
            after_metrics={"band_violation": 1.5},
            solver_report={"optimality_gap": 0.01},
        ),
        labels,
    )
    assert (view.proposal_id, view.scenario, view.violation_before, view.violation_after, view.gap) == (
        7,
        "default",
        12.0,
        1.5,
        0.01,
    )
    first, second = view.moves[0], view.moves[1]
    assert (first.account_name, first.from_owner, first.to_owner, first.value) == ("Acme", "Ada", "Bo", 300.0)
    # An account without a label (deleted since) reads as its ids.
    assert (second.account_name, second.from_owner, second.to_owner, second.value) == (
        "001B",
        "005A",
        "005B",
        0.0,
    )
    assert [(w.wave, w.effective_date, w.moves) for w in view.waves] == [
        (1, dt.date(2026, 12, 2), 2),
        (2, dt.date(2027, 1, 4), 1),
    ]
    assert view.full_list_hint == "Every move: `territory proposals show 7`"


def test_missing_or_odd_solver_figures_are_zero_and_no_gap() -> None:
    view = notify.build_view(
        _detail(before_metrics={"band_violation": "lots"}, solver_report={"optimality_gap": None}), {}
    )
    assert (view.violation_before, view.violation_after, view.gap) == (0.0, 0.0, None)


def test_writeback_text() -> None:
    assert notify.writeback_text(7, wave=None, written=3, conflicts=0, failed=0, state="applied") == (
        "Proposal 7: 3 written. The proposal is now applied."
    )
    assert notify.writeback_text(
        7, wave=1, written=1, conflicts=1, failed=0, state="partially_applied"
    ).endswith("The proposal is now partially applied.")
    assert (
        notify.writeback_text(7, wave=1, written=5, conflicts=0, failed=0) == "Proposal 7, wave 1: 5 written."
    )
    assert notify.writeback_text(7, wave=2, written=0, conflicts=2, failed=1) == (
        "Proposal 7, wave 2: 0 written, 2 skipped as conflicts (the CRM owner changed since the proposal), 1 failed."
    )
