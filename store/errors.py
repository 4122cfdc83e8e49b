"""Errors of the store, grouped by what the caller does about them."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors."""


class DatabaseError(StoreError):
    """The database cannot be reached or is unfit (wrong dialect, too old, not migrated): fatal."""


class UnsafeDatabaseError(StoreError):
    """An operation was refused because it would touch a database it must not (tests' guard)."""
