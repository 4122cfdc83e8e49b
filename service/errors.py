"""Errors of the service layer, grouped by what the CLI does about them."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad config file, value or environment variable: the CLI prints one line and exits 2."""
