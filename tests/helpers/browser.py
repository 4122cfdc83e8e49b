"""Headless Chromium through Debian's chromedriver, for the HTML reports, and what a page's charts drew."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import require_tool

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1000,1000",
)
# What each chart of the page drew: its marks, how many have an area on screen, and its own size.
MEASURE = """
const out = {};
for (const svg of document.querySelectorAll('svg[data-chart]')) {
  const marks = [...svg.querySelectorAll('.mark')];
  const drawn = marks.filter(m => {
    const r = m.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(m).fill !== 'none';
  });
  const box = svg.getBoundingClientRect();
  out[svg.dataset.chart] = {marks: marks.length, drawn: drawn.length, width: box.width, height: box.height};
}
return out;
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium with a fresh profile (a skip outside CI when it is missing, a failure in CI)."""
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
