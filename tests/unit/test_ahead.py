"""connectors/ahead.py: the items come in order with their work, errors where they happened, and the
thread never outlives the block."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connectors.ahead import ahead


def _ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sync-ahead"]


def test_items_in_order_with_their_work() -> None:
    with ahead(range(50), lambda i: i * i, depth=3) as items:
        got = list(items)
    assert got == [(i, i * i) for i in range(50)]
    assert _ahead_threads() == []


def test_a_reader_error_comes_after_every_item_before_it() -> None:
    def reader() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the export broke at row 3")

    seen: list[tuple[int, str]] = []
    with pytest.raises(ValueError, match="row 3"), ahead(reader(), str) as items:
        seen.extend(items)
    assert seen == [(1, "1"), (2, "2")]


def test_a_work_error_is_raised_in_the_caller() -> None:
    def work(i: int) -> int:
        if i == 4:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError), ahead(range(10), work) as items:
        assert [i for i, _ in items] == [0, 1, 2, 3]


def test_leaving_early_stops_the_reader_and_closes_it() -> None:
    closed = threading.Event()
    read: list[int] = []

    def reader() -> Iterator[int]:
        try:
            for i in range(1_000):
                read.append(i)
                yield i
        finally:
            closed.set()

    def store(i: int) -> None:
        if i == 3:
            raise RuntimeError("the database refused row 3")

    with pytest.raises(RuntimeError, match="the database refused"), ahead(reader(), str, depth=2) as items:
        any(store(i) for i, _ in items)
    # Joined before the block exits: closed in the thread, and no more read than the queue could hold.
    assert closed.is_set()
    assert _ahead_threads() == []
    assert len(read) <= 3 + 1 + 2 + 1  # consumed, being stored, queued, being prepared
