"""Fixtures the end-to-end tests share: headless Chromium for the HTML reports."""

from tests.helpers.browser import browser

__all__ = ["browser"]
