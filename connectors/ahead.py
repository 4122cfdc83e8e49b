"""Work on the next items in a thread while the caller stores the current one.

A sync reads and checks a batch (pyarrow's reader and compute, pandas) and then waits on PostgreSQL
(psycopg); both release the GIL for most of their time, so on two cores the next batch is read and
checked while the database takes the current one. The caller sees the same items, in the same order,
and an error of the reader or of ``work`` at the same point as without the thread: after every item
before it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")
U = TypeVar("U")

DEPTH: Final = 2  # items prepared ahead: enough to ride out one slow batch, few enough to stay small
_POLL: Final = 0.1  # how often a blocked producer looks whether the consumer has gone


@dataclass(frozen=True)
class _End:
    """The last thing the thread puts: the items ran out, or ``error`` was raised reading or working."""

    error: BaseException | None = None


@contextmanager
def ahead(items: Iterable[T], work: Callable[[T], U], depth: int = DEPTH) -> Iterator[Iterator[tuple[T, U]]]:
    """``(item, work(item))`` for each of ``items``, computed up to ``depth`` items ahead in one thread.

    On leaving the block (the items consumed, or an error of the caller's) the thread is stopped and
    joined before the block exits, so the source is never read by two threads at once, nor after.
    """
    out: queue.Queue[tuple[T, U] | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: tuple[T, U] | _End) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=_POLL)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, work(item))):
                    return
            put(_End())
        except BaseException as exc:  # handed to the consumer, raised there in order
            put(_End(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[tuple[T, U]]:
        while not isinstance(got := out.get(), _End):
            yield got
        if got.error is not None:
            raise got.error

    thread = threading.Thread(target=produce, name="sync-ahead", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
