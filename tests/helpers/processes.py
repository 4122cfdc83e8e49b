"""Processes and sockets: the ``territory`` command, a free port, waiting for a condition, tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

TERRITORY = str(Path(sys.executable).with_name("territory"))
"""The console script installed beside the interpreter running the tests."""


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``territory ARGS`` with none of the caller's ``TERRITORY_*`` settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    return subprocess.run(
        [TERRITORY, *args],
        capture_output=True,
        text=True,
        env=base | (env or {}),
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
    tolerate: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after ``timeout`` s.

    Exceptions of the ``tolerate`` kinds count as "not yet" (a server still starting, say).
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = check()
        except tolerate as exc:
            last = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


def require_tool(name: str) -> str:
    """The tool's path; a skip with the reason outside CI, a failure in CI (where it must be installed).

    sbin is searched too (runc, debootstrap), which a non-root PATH may lack.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        reason = f"{name} is not installed (.ci/install-tools installs it; CI runs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
