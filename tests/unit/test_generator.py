"""The sandbox org generator: determinism, integrity, realism and the CSV contract."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sandbox.generator import (
    CSV_FILES,
    DEFAULT_NOW,
    STAGE_PROBABILITY,
    TIERS,
    TOUCHES_PER_TIER,
    Org,
    generate_org,
    iter_csv_chunks,
    write_csv,
)
from monitor.metrics import DEFAULT_TOUCHES

NOW = datetime(2026, 11, 1, tzinfo=UTC)
FRAMES = {
    "owners.csv": "owners",
    "accounts.csv": "accounts",
    "opportunities.csv": "opportunities",
    "assignments.csv": "assignments",
}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def org() -> Org:
    """A small org shared by the read-only tests."""
    return generate_org(accounts=2000, reps=20, seed=11, now=NOW)


@pytest.fixture(scope="module")
def csv_dir(org: Org, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small org written as CSV."""
    out = tmp_path_factory.mktemp("org")
    write_csv(org, out)
    return out


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as the csv module sees them (everything text)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def salesforce_checksum(id15: str) -> str:
    """The 3-character suffix that turns a 15-character Salesforce id into its 18-character form."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    out = ""
    for block in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[block * 5 : block * 5 + 5]) if "A" <= ch <= "Z")
        out += alphabet[bits]
    return out


def check_integrity(org: Org, now: datetime) -> None:
    """The invariants every generated org keeps, whatever its size."""
    owners, accounts, opps, hist = org.owners, org.accounts, org.opportunities, org.assignments
    for name, attr in FRAMES.items():
        assert tuple(getattr(org, attr).columns) == CSV_FILES[name]
    assert owners["id"].is_unique
    assert accounts["id"].is_unique
    assert opps["id"].is_unique
    active = set(owners.loc[owners["active"], "id"])
    assert owners["active"].any()
    assert set(accounts["owner_id"]) <= active
    assert set(opps["account_id"]) <= set(accounts["id"])
    assert set(opps["owner_id"]) <= set(owners["id"])
    assert set(hist["owner_id"]) <= set(owners["id"])

    # Ownership history: contiguous, 1..4 rows, one open row held by the current owner.
    assert set(hist["account_id"]) == set(accounts["id"])
    ordered = hist.sort_values(["account_id", "start_date"], kind="stable")
    same_account = ordered["account_id"].to_numpy()[1:] == ordered["account_id"].to_numpy()[:-1]
    ends = ordered["end_date"].to_numpy()[:-1][same_account]
    next_starts = ordered["start_date"].to_numpy()[1:][same_account]
    assert (ends == next_starts).all()
    next_owner = ordered["owner_id"].to_numpy()[1:][same_account]
    assert (ordered["owner_id"].to_numpy()[:-1][same_account] != next_owner).all()
    closed_rows = hist.dropna(subset=["end_date"])
    assert (closed_rows["end_date"] > closed_rows["start_date"]).all()
    rows_per_account = hist.groupby("account_id").size()
    assert rows_per_account.between(1, 4).all()
    current = hist[hist["end_date"].isna()]
    assert current["account_id"].is_unique
    assert len(current) == len(accounts)
    current_owner = current.set_index("account_id")["owner_id"].reindex(accounts["id"])
    assert (current_owner.to_numpy() == accounts["owner_id"].to_numpy()).all()
    today = pd.Timestamp(now.date())
    assert (hist["start_date"] < today).all()
    assert (hist["start_date"] >= today - pd.Timedelta(days=5 * 365)).all()

    # Opportunities: stage, flags and probability agree; dates in their windows.
    probability = opps["stage"].map(STAGE_PROBABILITY)
    assert (opps["probability"] == probability).all()
    assert (opps["is_closed"] == opps["stage"].isin(["Closed Won", "Closed Lost"])).all()
    assert (opps["is_won"] == (opps["stage"] == "Closed Won")).all()
    closed = opps[opps["is_closed"]]
    still_open = opps[~opps["is_closed"]]
    assert (closed["close_date"] <= today).all()
    assert (closed["close_date"] >= today - pd.Timedelta(days=3 * 365)).all()
    assert (still_open["close_date"] > today).all()
    assert (still_open["close_date"] <= today + pd.Timedelta(days=365)).all()
    now_ts = pd.Timestamp(now)
    assert (opps["modified_at"] <= now_ts).all()
    assert (accounts["modified_at"] <= now_ts).all()
    assert (accounts["modified_at"] >= now_ts - pd.Timedelta(days=2 * 365)).all()


# --- determinism -----------------------------------------------------------------------------------


def test_same_arguments_give_byte_identical_csv(tmp_path: Path) -> None:
    first = generate_org(accounts=500, reps=12, seed=3, now=NOW)
    second = generate_org(accounts=500, reps=12, seed=3, now=NOW)
    write_csv(first, tmp_path / "a")
    write_csv(second, tmp_path / "b")
    for name in CSV_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    pd.testing.assert_frame_equal(first.opportunities, second.opportunities)


def test_a_different_seed_gives_different_bytes(tmp_path: Path) -> None:
    write_csv(generate_org(accounts=300, reps=8, seed=1, now=NOW), tmp_path / "a")
    write_csv(generate_org(accounts=300, reps=8, seed=2, now=NOW), tmp_path / "b")
    for name in ("accounts.csv", "opportunities.csv", "assignments.csv", "owners.csv"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_now_moves_every_date_window() -> None:
    later = NOW + timedelta(days=400, hours=5)
    org = generate_org(accounts=300, reps=8, seed=1, now=later)
    check_integrity(org, later)
    assert org.accounts["modified_at"].max() > pd.Timestamp(NOW)


def test_default_now_is_the_fixed_cli_instant() -> None:
    assert datetime(2026, 11, 1, tzinfo=UTC) == DEFAULT_NOW


# --- shape and integrity ---------------------------------------------------------------------------


def test_row_counts_and_column_order(org: Org, csv_dir: Path, tmp_path: Path) -> None:
    written = write_csv(org, tmp_path)
    assert written == {name: len(getattr(org, attr)) for name, attr in FRAMES.items()}
    assert written["owners.csv"] == 20
    assert written["accounts.csv"] == 2000
    assert 2.6 < written["opportunities.csv"] / 2000 < 3.4
    assert 1.7 < written["assignments.csv"] / 2000 < 2.3
    for name, columns in CSV_FILES.items():
        with (csv_dir / name).open(encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        assert lines[0] == ",".join(columns)
        assert len(lines) - 1 == written[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CSV_FILES)  # no partial files left


def test_integrity_of_a_small_org(org: Org) -> None:
    check_integrity(org, NOW)


def test_inactive_reps_exist_and_own_nothing_now(org: Org) -> None:
    big = generate_org(accounts=3000, reps=200, seed=5, now=NOW)
    inactive = big.owners.loc[~big.owners["active"], "id"]
    assert len(inactive) == 6  # 3% of 200
    assert not big.accounts["owner_id"].isin(inactive).any()
    assert big.assignments["owner_id"].isin(inactive).any()  # they held accounts before they left
    assert (~org.owners["active"]).sum() == 1  # 3% of 20, rounded


def test_dtypes(org: Org) -> None:
    for frame in (org.owners, org.accounts, org.opportunities, org.assignments):
        for column in frame.columns:
            if column == "id" or column.endswith("_id"):
                assert pd.api.types.is_string_dtype(frame[column]), column
    assert org.owners["capacity"].dtype == np.int64
    for column in ("arr", "potential", "lat", "lon"):
        assert org.accounts[column].dtype == np.float64
    assert org.accounts["protected"].dtype == bool
    assert org.opportunities["is_won"].dtype == bool
    for frame in (org.accounts, org.opportunities):
        assert str(frame["modified_at"].dt.tz) == "UTC"
        assert (frame["modified_at"].dt.microsecond == 0).all()
    for column in ("start_date", "end_date"):
        values = org.assignments[column].dropna()
        assert (values == values.dt.normalize()).all()
    assert (org.opportunities["close_date"] == org.opportunities["close_date"].dt.normalize()).all()


def test_ids_are_salesforce_like(org: Org) -> None:
    for frame, prefix in ((org.owners, "005"), (org.accounts, "001"), (org.opportunities, "006")):
        ids = frame["id"]
        assert ids.str.len().eq(18).all()
        assert ids.str.startswith(prefix).all()
        sample = ids.iloc[[0, len(ids) // 2, len(ids) - 1]].tolist()
        assert all(i[15:] == salesforce_checksum(i[:15]) for i in sample)
    assert org.accounts["id"].iloc[35] == "001000000000010AAA"  # the 36th id: counter 36 is "10" in base 36
    letters = org.opportunities["id"][org.opportunities["id"].str[:15].str.contains("[A-Z]", regex=True)]
    assert all(i[15:] == salesforce_checksum(i[:15]) for i in letters.iloc[:50])


def test_owner_names_and_emails(org: Org) -> None:
    owners = org.owners
    assert owners["name"].str.fullmatch(r"[A-Z][A-Za-z-]+ [A-Z][A-Za-z]+").all()
    assert owners["email"].is_unique
    assert owners["email"].str.fullmatch(r"[a-z]+\.[a-z]+\.\d+@example\.com").all()
    assert set(owners["region"]) <= {"NA-East", "NA-West", "EMEA", "APAC"}
    assert (owners["team"].str.rsplit("-", n=1).str[0] == owners["region"]).all()
    assert owners["team"].str.fullmatch(r".+-\d\d").all()


# --- value domains and realism ---------------------------------------------------------------------


def test_value_domains(org: Org) -> None:
    accounts, opps, owners = org.accounts, org.opportunities, org.owners
    assert set(accounts["tier"]) == set(TIERS)
    assert accounts["industry"].nunique() == 15
    assert (owners["capacity"] >= 1).all()
    assert owners["quota"].between(300_000, 5_000_000).all()
    assert opps["probability"].between(0, 1).all()
    for frame, column in ((accounts, "arr"), (accounts, "potential"), (opps, "amount"), (owners, "quota")):
        values = frame[column]
        assert (values > 0).all(), column
        assert (values == values.round(2)).all(), column
    located = accounts.dropna(subset=["lat"])
    assert located["lat"].between(-90, 90).all()
    assert located["lon"].between(-180, 180).all()
    assert (located["lat"] == located["lat"].round(5)).all()
    assert accounts["lat"].isna().equals(accounts["lon"].isna())
    assert 0.002 < accounts["lat"].isna().mean() < 0.03
    assert 0.005 < accounts["protected"].mean() < 0.04
    tiers = accounts["tier"].value_counts(normalize=True)
    assert 0.02 < tiers["strategic"] < 0.09
    assert 0.18 < tiers["growth"] < 0.32
    assert 0.6 < tiers["core"] < 0.8


def test_arr_is_heavy_tailed_and_potential_tracks_it(org: Org) -> None:
    arr = np.sort(org.accounts["arr"].to_numpy())[::-1]
    assert arr[: len(arr) // 10].sum() / arr.sum() > 0.40
    accounts = org.accounts
    assert (accounts["potential"] >= accounts["arr"]).mean() > 0.8
    assert np.corrcoef(np.log(accounts["arr"]), np.log(accounts["potential"]))[0, 1] > 0.7
    median = accounts.groupby("tier")["arr"].median()
    assert median["strategic"] > 10 * median["core"]


def test_some_territories_are_out_of_balance(org: Org) -> None:
    active = org.owners.loc[org.owners["active"], "id"]
    potential = org.accounts.groupby("owner_id")["potential"].sum().reindex(active, fill_value=0.0)
    typical = potential.median()
    assert potential.max() / typical > 1.5
    assert potential.min() / typical < 0.7
    middle = potential[(potential > potential.quantile(0.25)) & (potential < potential.quantile(0.75))]
    assert (middle / typical).between(0.6, 1.6).all()  # the rest are comparable


def test_accounts_cluster_around_metros_and_territories_are_geographic(org: Org) -> None:
    located = org.accounts.dropna(subset=["lat"])
    lat, lon = np.radians(located["lat"].to_numpy()), np.radians(located["lon"].to_numpy())
    dx = (lon[:, None] - lon[None, :]) * np.cos((lat[:, None] + lat[None, :]) / 2)
    pairwise_km = 6371 * np.hypot(dx, lat[:, None] - lat[None, :])
    tenth_neighbour_km = np.partition(pairwise_km, 10, axis=1)[:, 10]
    assert np.median(tenth_neighbour_km) < 60  # clustered; spread evenly over the globe it would be ~1,500
    homes = org.owners.set_index("id")[["home_lat", "home_lon"]]
    joined = located.join(homes, on="owner_id")
    lat1, lon1, lat2, lon2 = (np.radians(joined[c]) for c in ("lat", "lon", "home_lat", "home_lon"))
    km = (
        6371
        * 2
        * np.arcsin(
            np.sqrt(
                np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
            )
        )
    )
    median_km = km.groupby(joined["owner_id"]).median()
    assert (median_km < 3000).mean() > 0.8  # most books are near their rep's home


def test_opportunities_mostly_belong_to_the_current_owner(org: Org) -> None:
    opps = org.opportunities
    current = org.accounts.set_index("id")["owner_id"].reindex(opps["account_id"]).to_numpy()
    by_current = opps["owner_id"].to_numpy() == current
    assert 0.75 < by_current.mean() < 0.99
    others = opps[~by_current]
    assert others["is_closed"].all()
    # A deal credited to someone else closed before the current owner's tenure began.
    hist = org.assignments
    start = hist[hist["end_date"].isna()].set_index("account_id")["start_date"]
    assert (others["close_date"].to_numpy() < start.reindex(others["account_id"]).to_numpy()).all()
    # ... and to the owner the history says held the account on that day.
    held = others.merge(hist, on=["account_id", "owner_id"])
    in_tenure = (held["start_date"] <= held["close_date"]) & (held["close_date"] < held["end_date"])
    assert in_tenure.groupby(held["id"]).any().all()
    assert held["id"].nunique() == len(others)


def test_amounts_scale_with_account_arr(org: Org) -> None:
    opps = org.opportunities.join(org.accounts.set_index("id")["arr"], on="account_id")
    assert np.corrcoef(np.log(opps["amount"]), np.log(opps["arr"]))[0, 1] > 0.6


# --- the CSV format --------------------------------------------------------------------------------


def test_csv_fields_have_the_contract_formats(org: Org, csv_dir: Path) -> None:
    accounts = read_csv_rows(csv_dir / "accounts.csv")
    opps = read_csv_rows(csv_dir / "opportunities.csv")
    owners = read_csv_rows(csv_dir / "owners.csv")
    hist = read_csv_rows(csv_dir / "assignments.csv")
    assert {r["protected"] for r in accounts} == {"true", "false"}
    assert {r["active"] for r in owners} == {"true", "false"}
    assert {r["is_closed"] for r in opps} == {"true", "false"}
    assert all(ISO_UTC.match(r["modified_at"]) for r in accounts + opps)
    assert all(ISO_DATE.match(r["close_date"]) for r in opps)
    assert all(ISO_DATE.match(r["start_date"]) for r in hist)
    assert sum(r["end_date"] == "" for r in hist) == len(accounts)
    assert all(r["end_date"] == "" or ISO_DATE.match(r["end_date"]) for r in hist)
    assert all(re.fullmatch(r"\d+\.\d\d", r["amount"]) for r in opps)
    assert all(re.fullmatch(r"[01]\.\d\d", r["probability"]) for r in opps)
    assert sum(r["lat"] == "" for r in accounts) == org.accounts["lat"].isna().sum()
    assert all(r["capacity"].isdigit() for r in owners)


def test_csv_parses_back_to_the_frames(org: Org, csv_dir: Path) -> None:
    accounts = pd.read_csv(csv_dir / "accounts.csv", keep_default_na=False, na_values=[""])
    expected = org.accounts
    assert (accounts["id"] == expected["id"]).all()
    assert np.allclose(accounts["arr"], expected["arr"], rtol=0, atol=1e-9)
    assert np.allclose(accounts["lat"], expected["lat"], rtol=0, atol=1e-9, equal_nan=True)
    assert (accounts["protected"] == expected["protected"]).all()
    parsed = pd.to_datetime(accounts["modified_at"], utc=True)
    assert (parsed == expected["modified_at"]).all()
    hist = pd.read_csv(csv_dir / "assignments.csv", parse_dates=["start_date", "end_date"])
    assert hist["end_date"].isna().sum() == len(expected)
    assert (hist["start_date"].to_numpy() == org.assignments["start_date"].to_numpy()).all()
    opps = pd.read_csv(csv_dir / "opportunities.csv")
    assert np.allclose(opps["amount"], org.opportunities["amount"], rtol=0, atol=1e-9)
    assert (opps["stage"] == org.opportunities["stage"]).all()


def test_text_that_needs_it_is_quoted_and_nulls_are_empty() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "name": ["Acme, Inc.", 'The "Best" Co', "two\nlines", None, "Müller & Söhne"],
            "arr": [-1.5, 0.0, 1234567.891, np.nan, -0.001],
            "active": [True, False, True, False, True],
            "capacity": [150, 0, -3, 180, 7],
        }
    )
    text = b"".join(iter_csv_chunks(frame, chunk_rows=2)).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["id", "name", "arr", "active", "capacity"]
    assert [r[1] for r in rows[1:]] == ["Acme, Inc.", 'The "Best" Co', "two\nlines", "", "Müller & Söhne"]
    assert [r[2] for r in rows[1:]] == ["-1.50", "0.00", "1234567.89", "", "0.00"]
    assert [r[3] for r in rows[1:]] == ["true", "false", "true", "false", "true"]
    assert [r[4] for r in rows[1:]] == ["150", "0", "-3", "180", "7"]


def test_timestamps_are_written_in_utc_and_dates_as_days() -> None:
    frame = pd.DataFrame(
        {
            "modified_at": pd.to_datetime(
                ["2026-10-31T23:30:05+01:00", None, "1969-12-31T23:59:59Z"], utc=True
            ),
            "close_date": pd.to_datetime(["2024-02-29", "1970-01-01", None]),
        }
    )
    lines = b"".join(iter_csv_chunks(frame, header=False)).decode().splitlines()
    assert lines == ["2026-10-31T22:30:05Z,2024-02-29", ",1970-01-01", "1969-12-31T23:59:59Z,"]


def test_chunking_does_not_change_the_bytes(org: Org) -> None:
    whole = b"".join(iter_csv_chunks(org.opportunities, chunk_rows=10**9))
    pieces = b"".join(iter_csv_chunks(org.opportunities, chunk_rows=97))
    assert whole == pieces


def test_a_failed_write_leaves_no_partial_file(org: Org, tmp_path: Path) -> None:
    broken = dataclasses.replace(org, accounts=org.accounts.assign(arr=1e20))
    with pytest.raises(ValueError, match="can be written"):
        write_csv(broken, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owners.csv"]  # written before accounts failed


def test_unknown_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="no CSV format"):
        list(iter_csv_chunks(pd.DataFrame({"colour": ["red"]})))


# --- arguments and edge cases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accounts", "reps", "seed", "now", "message"),
    [
        (-1, 5, 0, NOW, "accounts must be >= 0"),
        (10, 0, 0, NOW, "reps must be >= 1"),
        (10, 5, -1, NOW, "seed must be >= 0"),
        (10, 5, 0, datetime(2026, 11, 1), "timezone-aware"),  # noqa: DTZ001 - the naive value is the point
    ],
)
def test_bad_arguments_raise(accounts: int, reps: int, seed: int, now: datetime, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_org(accounts=accounts, reps=reps, seed=seed, now=now)


def test_an_empty_org_writes_headers_only(tmp_path: Path) -> None:
    org = generate_org(accounts=0, reps=1, seed=0, now=NOW)
    assert write_csv(org, tmp_path) == {
        "owners.csv": 1,
        "accounts.csv": 0,
        "opportunities.csv": 0,
        "assignments.csv": 0,
    }
    assert (tmp_path / "accounts.csv").read_text() == ",".join(CSV_FILES["accounts.csv"]) + "\n"
    assert org.accounts["modified_at"].dtype == org.opportunities["modified_at"].dtype


def test_a_single_rep_owns_everything_with_one_tenure() -> None:
    org = generate_org(accounts=40, reps=1, seed=9, now=NOW)
    assert org.owners["active"].all()
    assert (org.accounts["owner_id"] == org.owners["id"].iloc[0]).all()
    assert len(org.assignments) == 40


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accounts=st.integers(min_value=0, max_value=50),
    reps=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_integrity_holds_for_any_small_org(accounts: int, reps: int, seed: int) -> None:
    org = generate_org(accounts=accounts, reps=reps, seed=seed, now=NOW)
    assert len(org.accounts) == accounts
    assert len(org.owners) == reps
    check_integrity(org, NOW)
    for name, attr in FRAMES.items():
        text = b"".join(iter_csv_chunks(getattr(org, attr), CSV_FILES[name])).decode()
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert len(rows) == len(getattr(org, attr)) + 1
        assert all(len(r) == len(CSV_FILES[name]) for r in rows)


def test_quotas_are_scaled_to_what_books_win(org: Org) -> None:
    """The average active rep attains about their quota; an over-sized book attains more than most."""
    now = NOW.replace(tzinfo=None)
    opps = org.opportunities
    recent = opps["is_won"] & (opps["close_date"] > now - timedelta(days=365)) & (opps["close_date"] <= now)
    owner_of = org.accounts.set_index("id")["owner_id"]
    won = opps[recent].groupby(opps.loc[recent, "account_id"].map(owner_of))["amount"].sum()
    active = org.owners[org.owners["active"]].set_index("id")
    attainment = won.reindex(active.index).fillna(0.0) / active["quota"]
    assert 0.7 < attainment.mean() < 1.1
    book = org.accounts.groupby("owner_id")["potential"].sum().reindex(active.index).fillna(0.0)
    assert attainment[book.idxmax()] > attainment.median()


def test_touches_mirror_the_monitor_default() -> None:
    assert dict(zip(TIERS, TOUCHES_PER_TIER, strict=True)) == dict(DEFAULT_TOUCHES)


def test_capacity_is_calibrated_to_the_books() -> None:
    org = generate_org(20_000, 160, 0, DEFAULT_NOW)
    owners = org.owners.set_index("id")
    touches = org.accounts["tier"].map(DEFAULT_TOUCHES).groupby(org.accounts["owner_id"]).sum()
    utilization = (touches.reindex(owners.index).fillna(0.0) / owners["capacity"])[owners["active"]]
    assert abs(utilization.mean() - 0.85) < 0.01
    assert 0.05 <= (utilization > 1.0).mean() <= 0.2
    assert utilization.max() > 1.8  # the deliberately over-sized books stay over capacity
    assert utilization.min() < 0.5  # and the under-sized ones have room
