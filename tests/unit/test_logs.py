"""JSON log lines carry the message, the level and every id passed through ``extra``."""

from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter


def test_json_line_has_extras_and_exception() -> None:
    record = logging.LogRecord("territory.sync", logging.WARNING, __file__, 1, "synced %d rows", (42,), None)
    record.sync_id = "s-17"
    record.source = "salesforce"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "synced 42 rows"
    assert entry["level"] == "warning"
    assert entry["logger"] == "territory.sync"
    assert entry["sync_id"] == "s-17"
    assert entry["source"] == "salesforce"
    assert entry["time"].endswith("+00:00")


def test_exception_is_one_field_not_many_lines() -> None:
    error = ValueError("bad row")
    exc_info = (ValueError, error, None)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), exc_info)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad row" in json.loads(line)["exception"]
