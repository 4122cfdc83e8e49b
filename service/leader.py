"""Leader election: a PostgreSQL session-level advisory lock held on a connection of its own.

The lock lives exactly as long as the session that took it, so when the holder dies (process killed,
node lost) PostgreSQL drops the session and the lock with it, and another replica's next
``pg_try_advisory_lock`` wins. TCP keepalives make a half-open connection die within about a minute.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (what ``pg_try_advisory_lock(bigint)`` takes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SCHEDULER_LOCK = lock_key("territory-monitor:scheduler")


class LeaderLock:
    """One replica's claim on the scheduler: try, check, release; never blocks."""

    def __init__(self, engine: Engine, *, key: int = SCHEDULER_LOCK, holder: str) -> None:
        # Its own engine without a pool: the lock's connection is never lent to anything else, and
        # closing it really closes the session (a pooled connection would keep the lock alive).
        self._engine = create_engine(
            engine.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "application_name": f"territory-leader {holder}"[:63],
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        )
        self._key = key
        self.holder = holder
        self._conn: Connection | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        """Whether this replica believes it holds the lock (as of the last acquire or check)."""
        return self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this replica holds it afterwards."""
        with self._mutex:
            if self._conn is not None:
                return True
            try:
                conn = self._engine.connect()
            except Exception:
                log.warning("leader lock: database unreachable", exc_info=True)
                return False
            try:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar_one()
                )
            except Exception:
                log.warning("leader lock: pg_try_advisory_lock failed", exc_info=True)
                conn.close()
                return False
            if not got:
                conn.close()
                return False
            self._conn = conn
            log.info("leader lock acquired", extra={"holder": self.holder})
            return True

    def check(self) -> bool:
        """Whether the lock's session still answers; a dead connection means the lock is gone."""
        with self._mutex:
            if self._conn is None:
                return False
            try:
                self._conn.execute(text("SELECT 1")).scalar_one()
            except Exception:
                log.warning("leader lock lost: its connection failed", extra={"holder": self.holder})
                self._drop()
                return False
            return True

    def release(self) -> None:
        """Unlock and close the session (closing alone would release it too)."""
        with self._mutex:
            if self._conn is None:
                return
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            except Exception:
                log.warning("leader lock: unlock failed; closing the session releases it", exc_info=True)
            self._drop()
            log.info("leader lock released", extra={"holder": self.holder})

    def close(self) -> None:
        """Release and dispose of the lock's engine."""
        self.release()
        self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("leader lock: closing a dead connection failed", exc_info=True)
