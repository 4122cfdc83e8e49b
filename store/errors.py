"""Errors of the store, grouped by what the caller does about them."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError


class StoreError(Exception):
    """Base of the store's errors."""


class DatabaseError(StoreError):
    """The database cannot be reached or is unfit (wrong dialect, too old, not migrated): fatal."""


class UnsafeDatabaseError(StoreError):
    """An operation was refused because it would touch a database it must not (tests' guard)."""


def database_reason(exc: DBAPIError | psycopg.Error) -> str:
    """The driver's own first line of a database error (SQLAlchemy's text adds the statement and a
    link): what a one-line message says."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or ["no reason given"])[0]
    if isinstance(cause, psycopg.errors.UndefinedTable):
        reason = f"the database is not migrated ({reason}); run `territory migrate`"
    return reason
