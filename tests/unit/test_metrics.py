"""Per-territory metrics against hand-computed values, and invariants that hold for any org."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.catalog import ADDITIVE, BY_NAME, METRICS, summand
from monitor.metrics import (
    ACCOUNT_COLUMNS,
    DEFAULT_TOUCHES,
    PIPELINE_COLUMNS,
    TERRITORY_SUMS,
    UNLOCATED,
    account_opportunities,
    haversine_km,
    territory_metrics,
    territory_pipeline,
    territory_sums,
)

D = dt.date(2026, 6, 30)
KM_PER_DEGREE = 6371.0 * math.pi / 180  # along the equator or a meridian


def owners_frame(
    rows: list[tuple[str, str, float | None, float | None, float | None, float | None]],
) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["owner_id", "name", "capacity", "quota", "home_lat", "home_lon"])
    return frame.set_index("owner_id").astype(
        {"capacity": float, "quota": float, "home_lat": float, "home_lon": float}
    )


def tiny_org() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three territories (A full, B without capacity/quota/home, C empty) and an account of nobody's."""
    owners = owners_frame(
        [
            ("A", "Ada", 20.0, 1000.0, 0.0, 0.0),
            ("B", "Bo", None, None, None, None),
            ("C", "Cy", 10.0, 500.0, 10.0, 10.0),
        ]
    )
    accounts = pd.DataFrame(
        {
            "id": ["a1", "a2", "a3", "b1", "x1"],
            "owner_id": ["A", "A", "A", "B", "X"],
            "tier": ["strategic", "core", "growth", "growth", "strategic"],
            "arr": [100.0, 300.0, np.nan, 50.0, 9999.0],
            "potential": [200.0, 100.0, 50.0, 80.0, 9999.0],
            "lat": [0.0, np.nan, 2.0, 5.0, 0.0],
            "lon": [1.0, np.nan, 0.0, 5.0, 0.0],
        }
    )
    opportunities = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a1", "a2", "a2", "a2", "a3", "b1", "x1"],
            "amount": [1000.0, 400.0, 250.0, 600.0, 700.0, 80.0, 90.0, 40.0, 5.0],
            "probability": [0.5, 0.2, 1.0, 1.0, 0.0, 1.0, np.nan, 0.0, 1.0],
            "close_date": pd.to_datetime(
                [
                    "2026-09-01",  # open, future close
                    "2026-07-15",  # closed today, after D: still open at D
                    "2026-06-30",  # won on D: in the window
                    "2025-07-01",  # won at D - 364 days: in the window
                    "2026-01-10",  # lost in the window
                    "2025-06-30",  # won exactly 365 days before D: outside (D - 365, D]
                    None,  # open without a close date
                    "2026-03-01",  # lost in the window
                    "2026-06-01",  # won, but on an account of no territory
                ]
            ),
            "is_closed": [False, True, True, True, True, True, False, True, True],
            "is_won": [False, True, True, True, False, True, False, False, True],
        }
    )
    return owners, accounts, opportunities


def inputs(accounts: pd.DataFrame, opportunities: pd.DataFrame, as_of: dt.date = D) -> pd.DataFrame:
    per_account = account_opportunities(opportunities, as_of)
    joined = accounts.join(per_account, on="id").fillna(
        {c: 0.0 for c in ("open_amount", "weighted_amount", "won_amount", "won_count", "closed_count")}
    )
    return joined[list(ACCOUNT_COLUMNS)]


def test_account_opportunities_as_of_d() -> None:
    _, _, opportunities = tiny_org()
    got = account_opportunities(opportunities, D)
    assert got.loc["a1"].to_dict() == {
        "open_amount": 1400.0,
        "weighted_amount": 1000 * 0.5 + 400 * 0.2,
        "won_amount": 250.0,
        "won_count": 1,
        "closed_count": 1,
    }
    assert got.loc["a2"].to_dict() == {
        "open_amount": 0.0,
        "weighted_amount": 0.0,
        "won_amount": 600.0,
        "won_count": 1,
        "closed_count": 2,
    }
    assert got.loc["a3", "open_amount"] == 90.0
    assert got.loc["a3", "weighted_amount"] == 0.0  # no probability: weight zero


def test_an_opportunity_closed_after_d_was_open_at_d() -> None:
    _, _, opportunities = tiny_org()
    before = account_opportunities(opportunities, dt.date(2026, 7, 14)).loc["a1"]
    after = account_opportunities(opportunities, dt.date(2026, 7, 15)).loc["a1"]
    assert before["open_amount"] == 1400.0
    assert after["open_amount"] == 1000.0
    assert after["won_amount"] == before["won_amount"] + 400.0


def test_every_metric_on_a_tiny_org() -> None:
    owners, accounts, opportunities = tiny_org()
    got = territory_metrics(owners, inputs(accounts, opportunities), DEFAULT_TOUCHES)
    assert list(got.columns) == [*METRICS, UNLOCATED]
    assert list(got.index) == ["A", "B", "C"]
    a, b, c = got.loc["A"], got.loc["B"], got.loc["C"]

    assert (a["accounts"], b["accounts"], c["accounts"]) == (3, 1, 0)
    assert (a["strategic_accounts"], b["strategic_accounts"]) == (1, 0)
    assert a["arr"] == 400.0  # the missing ARR counts as zero
    assert a["potential"] == 350.0
    assert a["open_pipeline"] == 1400.0 + 90.0
    assert a["weighted_pipeline"] == pytest.approx(580.0)
    assert a["won_12m"] == 850.0
    assert a["win_rate_12m"] == pytest.approx(2 / 3)
    assert a["quota_attainment"] == pytest.approx(0.85)
    assert a["workload"] == 12 + 2 + 6
    assert a["utilization"] == pytest.approx(1.0)
    # a1 is one degree east of the home, a3 two degrees north; a2 has no location.
    assert a["travel_km"] == pytest.approx(1.5 * KM_PER_DEGREE, rel=1e-9)
    assert a[UNLOCATED] == 1
    assert a["top_account_share"] == pytest.approx(300 / 400)

    assert b["win_rate_12m"] == 0.0
    assert b["won_12m"] == 0.0
    assert math.isnan(b["quota_attainment"])  # no quota
    assert math.isnan(b["utilization"])  # no capacity
    assert math.isnan(b["travel_km"])  # no home
    assert b[UNLOCATED] == 0
    assert b["top_account_share"] == 1.0

    assert c["arr"] == 0.0
    assert math.isnan(c["win_rate_12m"])  # nothing closed
    assert c["quota_attainment"] == 0.0
    assert c["utilization"] == 0.0
    assert math.isnan(c["travel_km"])
    assert math.isnan(c["top_account_share"])  # no ARR to share


def test_territory_sums_and_pipeline_on_a_tiny_org() -> None:
    owners, accounts, opportunities = tiny_org()
    sums = territory_sums(owners.index, inputs(accounts, opportunities))
    assert list(sums.columns) == list(TERRITORY_SUMS)
    assert sums.loc["A", "arr"] == 400.0
    assert sums.loc["A", "largest_arr"] == 300.0
    assert sums.loc["C"].tolist() == [0.0] * len(TERRITORY_SUMS)  # an empty book
    assert "X" not in sums.index  # the account of no territory is left out
    pipeline = territory_pipeline(opportunities, accounts.set_index("id")["owner_id"], D)
    assert list(pipeline.columns) == list(PIPELINE_COLUMNS)
    assert pipeline.loc["A"].to_dict() == pytest.approx(
        {
            "open_amount": 1490.0,
            "weighted_amount": 580.0,
            "won_amount": 850.0,
            "won_count": 2,
            "closed_count": 3,
        }
    )
    assert sorted(pipeline.index) == ["A", "B", "X"]  # by owner, whether or not a territory


def test_sums_per_territory_give_the_same_metrics_as_per_account_rows() -> None:
    owners, accounts, opportunities = tiny_org()
    per_account = inputs(accounts, opportunities)
    sums = territory_sums(owners.index, per_account)
    sums[list(PIPELINE_COLUMNS)] = territory_pipeline(
        opportunities, accounts.set_index("id")["owner_id"], D
    ).reindex(owners.index, fill_value=0.0)
    book = per_account[["owner_id", "tier", "lat", "lon"]]  # what Postgres hands over per account
    got = territory_metrics(owners, book, DEFAULT_TOUCHES, sums=sums)
    pd.testing.assert_frame_equal(got, territory_metrics(owners, per_account, DEFAULT_TOUCHES))


def test_touches_per_tier_are_configurable() -> None:
    owners, accounts, opportunities = tiny_org()
    got = territory_metrics(
        owners, inputs(accounts, opportunities), {"strategic": 1, "growth": 0, "core": 10}
    )
    assert got.loc["A", "workload"] == 11.0
    assert got.loc["A", "utilization"] == pytest.approx(11 / 20)


def test_haversine_known_distances() -> None:
    zero = np.array([0.0])
    assert haversine_km(zero, zero, zero, np.array([90.0]))[0] == pytest.approx(6371.0 * math.pi / 2)
    # Paris to London is about 343.5 km on this sphere.
    assert haversine_km(np.array([48.8566]), np.array([2.3522]), np.array([51.5074]), np.array([-0.1278]))[
        0
    ] == pytest.approx(343.5, abs=1.0)
    assert math.isnan(haversine_km(np.array([np.nan]), zero, zero, zero)[0])


# --- invariants -------------------------------------------------------------------------------------

# The catalogue's claim, proven below: these are per-account sums whose org total a move keeps.
SUMS = tuple(m for m in ADDITIVE if BY_NAME[m].divisor is None)
QUOTIENTS = tuple(m for m in ADDITIVE if BY_NAME[m].divisor is not None)


@st.composite
def orgs(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_owners = draw(st.integers(2, 6))
    owners = owners_frame(
        [
            (
                f"o{i}",
                f"Rep {i}",
                draw(st.one_of(st.none(), st.floats(1, 500))),
                draw(st.one_of(st.none(), st.floats(1, 1e6))),
                draw(st.floats(-60, 60)),
                draw(st.floats(-170, 170)),
            )
            for i in range(n_owners)
        ]
    )
    n = draw(st.integers(1, 30))
    money = st.floats(0, 1e6, allow_nan=False)
    accounts = pd.DataFrame(
        {
            "owner_id": draw(st.lists(st.sampled_from(list(owners.index)), min_size=n, max_size=n)),
            "tier": draw(st.lists(st.sampled_from(["strategic", "growth", "core"]), min_size=n, max_size=n)),
            "arr": draw(st.lists(money, min_size=n, max_size=n)),
            "potential": draw(st.lists(money, min_size=n, max_size=n)),
            "lat": draw(st.lists(st.one_of(st.just(np.nan), st.floats(-80, 80)), min_size=n, max_size=n)),
            "lon": draw(st.lists(st.floats(-179, 179), min_size=n, max_size=n)),
            "open_amount": draw(st.lists(money, min_size=n, max_size=n)),
            "weighted_amount": draw(st.lists(money, min_size=n, max_size=n)),
            "won_amount": draw(st.lists(money, min_size=n, max_size=n)),
            "won_count": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        }
    )
    accounts["closed_count"] = accounts["won_count"] + draw(
        st.lists(st.integers(0, 3), min_size=n, max_size=n)
    )
    return owners, accounts


@settings(max_examples=30, deadline=None)
@given(org=orgs(), data=st.data())
def test_moving_an_account_changes_only_its_two_territories(
    org: tuple[pd.DataFrame, pd.DataFrame], data: st.DataObject
) -> None:
    owners, accounts = org
    row = data.draw(st.integers(0, len(accounts) - 1))
    source = accounts.loc[row, "owner_id"]
    target = data.draw(st.sampled_from([o for o in owners.index if o != source]))
    moved = accounts.copy()
    moved.loc[row, "owner_id"] = target

    before = territory_metrics(owners, accounts)
    after = territory_metrics(owners, moved)
    untouched = [o for o in owners.index if o not in (source, target)]
    pd.testing.assert_frame_equal(before.loc[untouched], after.loc[untouched])
    assert after.loc[target, "accounts"] == before.loc[target, "accounts"] + 1
    assert after.loc[source, "accounts"] == before.loc[source, "accounts"] - 1


@settings(max_examples=30, deadline=None)
@given(org=orgs())
def test_sums_over_territories_equal_org_totals(org: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    owners, accounts = org
    got = territory_metrics(owners, accounts)
    touches = accounts["tier"].map(DEFAULT_TOUCHES)
    totals = {
        "accounts": len(accounts),
        "strategic_accounts": int((accounts["tier"] == "strategic").sum()),
        "arr": accounts["arr"].sum(),
        "potential": accounts["potential"].sum(),
        "open_pipeline": accounts["open_amount"].sum(),
        "weighted_pipeline": accounts["weighted_amount"].sum(),
        "won_12m": accounts["won_amount"].sum(),
        "workload": touches.sum(),
    }
    assert set(SUMS) == set(totals)
    for metric in SUMS:
        assert got[metric].sum() == pytest.approx(totals[metric], rel=1e-9, abs=1e-6), metric
    for metric in QUOTIENTS:  # a sum over the owner's divisor, where the owner has one
        record = BY_NAME[metric]
        expected = got[summand(metric)] / owners[str(record.divisor)].where(owners[str(record.divisor)] > 0)
        pd.testing.assert_series_equal(got[metric], expected, check_names=False)
    assert got[UNLOCATED].sum() == accounts["lat"].isna().sum()
    shares = got["top_account_share"].dropna()
    assert ((shares >= 0) & (shares <= 1 + 1e-12)).all()
    rates = got["win_rate_12m"].dropna()
    assert ((rates >= 0) & (rates <= 1)).all()


def test_accounts_of_no_territory_are_left_out() -> None:
    owners, accounts, opportunities = tiny_org()
    got = territory_metrics(owners, inputs(accounts, opportunities))
    assert got["accounts"].sum() == 4
    assert got["arr"].sum() == 450.0
