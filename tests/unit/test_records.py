"""Validation and conversion of canonical records: each rule, the COPY text, and that nothing is lost."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import CANONICAL_COLUMNS, CrmObject
from connectors.records import POSITION, WHITESPACE, FrameRecords, check_records, records_frame


def acc(**kw: Any) -> dict[str, Any]:
    return {"id": "001A", "name": "Acme", "owner_id": "005O", "modified_at": "2026-10-01T00:00:00Z"} | kw


def opp(**kw: Any) -> dict[str, Any]:
    return {"id": "006P", "account_id": "001A", "modified_at": "2026-10-01T00:00:00Z"} | kw


def one_reason(obj: CrmObject, record: dict[str, Any]) -> str | None:
    checked = check_records(obj, [record])
    if checked.rejected.empty:
        return None
    return str(checked.rejected["reason"].iloc[0])


@pytest.mark.parametrize(
    ("obj", "record", "reason"),
    [
        (CrmObject.accounts, acc(id=None), "missing id"),
        (CrmObject.accounts, acc(id="   "), "missing id"),
        (CrmObject.accounts, acc(name=""), "missing name"),
        (CrmObject.opportunities, opp(account_id=None), "missing account_id"),
        (CrmObject.accounts, acc(arr="-0.01"), "negative arr"),
        (CrmObject.accounts, acc(arr="1e17"), "arr too large"),
        (CrmObject.accounts, acc(arr="twelve"), "unparseable arr: twelve"),
        (CrmObject.accounts, acc(arr="inf"), "unparseable arr: inf"),
        (CrmObject.accounts, acc(lon="181"), "lon outside -180..180"),
        (CrmObject.accounts, acc(tier="Gold"), "tier outside strategic|growth|core: Gold"),
        (CrmObject.accounts, acc(protected="Y"), "unparseable protected: Y"),
        (
            CrmObject.accounts,
            acc(modified_at="2026-13-01T00:00:00Z"),
            "unparseable modified_at: 2026-13-01T00:00:00Z",
        ),
        (CrmObject.accounts, acc(name="bad\x00byte"), "name contains a NUL character"),
        (CrmObject.opportunities, opp(probability="-0.1"), "probability outside 0..1"),
        (CrmObject.opportunities, opp(close_date="15/12/2026"), "unparseable close_date: 15/12/2026"),
        (CrmObject.opportunities, opp(is_won="true"), "is_won without is_closed"),
        (CrmObject.owners, {"id": "005O", "name": "R", "capacity": "7.5"}, "capacity is not a whole number"),
        (CrmObject.owners, {"id": "005O", "name": "R", "capacity": "-3"}, "capacity must be positive"),
        (CrmObject.owners, {"id": "005O", "name": "R", "active": "maybe"}, "unparseable active: maybe"),
    ],
)
def test_each_rule_names_its_reason(obj: CrmObject, record: dict[str, Any], reason: str) -> None:
    assert one_reason(obj, record) == reason


def test_the_first_failing_rule_is_the_reason() -> None:
    assert one_reason(CrmObject.accounts, acc(id="", arr="x")) == "missing id"


def test_values_become_copy_text_from_strings_and_json_values_alike() -> None:
    from_csv = check_records(
        CrmObject.opportunities,
        [
            opp(
                amount=" 1200.50 ",
                probability="0.25",
                close_date="2026-12-01",
                is_closed="TRUE",
                is_won="false",
                modified_at="2026-10-01T10:20:30.123+0000",
            )
        ],
    ).clean
    from_api = check_records(
        CrmObject.opportunities,
        [
            opp(
                amount=1200.5,
                probability=0.25,
                close_date=dt.date(2026, 12, 1),
                is_closed=True,
                is_won=False,
                modified_at=dt.datetime(
                    2026, 10, 1, 12, 20, 30, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2))
                ),
            )
        ],
    ).clean
    row = from_csv.iloc[0]
    assert row["amount"] == "1200.50"
    assert row["close_date"] == "2026-12-01"
    assert (row["is_closed"], row["is_won"]) == ("true", "false")
    assert row["modified_at"] == "2026-10-01T10:20:30.123000+00"
    api = from_api.iloc[0]
    assert (api["amount"], api["probability"], api["close_date"]) == ("1200.5", "0.25", "2026-12-01")
    assert api["modified_at"] == row["modified_at"]
    assert (api["is_closed"], api["is_won"]) == ("true", "false")


def test_defaults_fill_blank_booleans_and_tier() -> None:
    clean = check_records(CrmObject.accounts, [acc(tier="", protected="")]).clean
    assert (clean["tier"].iloc[0], clean["protected"].iloc[0]) == ("core", "false")
    owner = check_records(CrmObject.owners, [{"id": "005O", "name": "R", "capacity": "12.0"}]).clean
    assert (owner["active"].iloc[0], owner["capacity"].iloc[0]) == ("true", "12")


def test_the_newest_copy_of_an_id_wins_inside_a_batch() -> None:
    checked = check_records(
        CrmObject.accounts,
        [
            acc(name="new", modified_at="2026-10-05T00:00:00Z"),
            acc(name="old", modified_at="2026-10-01T00:00:00Z"),
            acc(id="001B", name="other"),
        ],
    )
    assert checked.duplicates == 1
    assert checked.clean[["id", "name"]].values.tolist() == [["001A", "new"], ["001B", "other"]]


def test_frame_records_are_used_without_a_dict_per_row() -> None:
    frame = pd.DataFrame([acc(extra="kept for quarantine")])
    records = FrameRecords(frame)
    assert records[0]["extra"] == "kept for quarantine"
    assert list(records_frame(CrmObject.accounts, records).columns) == list(
        CANONICAL_COLUMNS[CrmObject.accounts]
    )


cell = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.sampled_from(
        ["", "0", "1", "-1", "0.5", "true", "false", "core", "2026-10-01", "2026-10-01T00:00:00Z"]
    ),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    obj=st.sampled_from(list(CrmObject)),
    data=st.data(),
)
def test_every_record_is_clean_rejected_or_a_counted_duplicate(obj: CrmObject, data: st.DataObject) -> None:
    columns = CANONICAL_COLUMNS[obj]
    ids = st.one_of(st.none(), st.sampled_from(["a", "b", "c", " ", ""]))
    records = data.draw(
        st.lists(st.fixed_dictionaries({"id": ids, **{c: cell for c in columns if c != "id"}}), max_size=12)
    )
    checked = check_records(obj, records)
    assert len(checked.clean) + len(checked.rejected) + checked.duplicates == len(records)
    positions = set(checked.clean[POSITION]) | set(checked.rejected[POSITION])
    assert len(positions) == len(checked.clean) + len(checked.rejected)
    assert checked.clean["id"].is_unique
    assert checked.clean["id"].notna().all()
    assert checked.rejected["reason"].notna().all()


def test_text_is_stripped_of_exactly_what_str_strip_strips() -> None:
    assert set(WHITESPACE) == {c for c in map(chr, range(0x110000)) if c.isspace()}


TRICKY = [
    {"id": "a7", "name": "x", "arr": "1_000", "tier": "Growth", "modified_at": "2026-10-01T00:00:00Z"},
    {"id": "a1", "name": "x", "arr": "inf", "modified_at": "2026-10-01T00:00:00Z"},
    {"id": "a2", "name": "x", "arr": "+1e3", "modified_at": "2026-10-01 00:00:00"},
    {"id": "a3", "name": "x", "arr": " 12.50 ", "modified_at": "1500-01-01T00:00:00Z"},
    {"id": "a4", "name": "x\x1c", "arr": ".5", "modified_at": "2026-02-30T00:00:00Z"},
    {
        "id": "a5",
        "name": "x",
        "tier": "STRATEG\u0130C",
        "modified_at": "2026-10-01T02:00:00+0200",
    },
    {"id": "a6", "name": "x", "lat": "90.0", "lon": "-180", "modified_at": "2026-10-01T00:00:00.1234567Z"},
]


def test_an_export_chunk_and_api_records_are_checked_alike() -> None:
    """A CSV chunk (Arrow-backed text) takes the same checks as a list of records (Python values)."""
    columns = CANONICAL_COLUMNS[CrmObject.accounts]
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in TRICKY], dtype="str")
    from_csv = check_records(CrmObject.accounts, FrameRecords(frame))
    from_api = check_records(CrmObject.accounts, TRICKY)
    assert from_csv.rejected.values.tolist() == from_api.rejected.values.tolist()
    assert from_csv.clean.astype(object).values.tolist() == from_api.clean.astype(object).values.tolist()
    assert dict(zip(from_api.rejected["record_id"], from_api.rejected["reason"], strict=True)) == {
        "a7": "unparseable arr: 1_000",
        "a1": "unparseable arr: inf",
        "a3": "unparseable modified_at: 1500-01-01T00:00:00Z",
        "a4": "unparseable modified_at: 2026-02-30T00:00:00Z",
        "a5": "tier outside strategic|growth|core: STRATEG\u0130C",
    }
    clean = from_api.clean.set_index("id")
    assert clean.loc["a2", "arr"] == "+1e3"
    assert clean.loc["a6", "modified_at"] == "2026-10-01T00:00:00.123456+00"
