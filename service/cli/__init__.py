"""The ``territory`` command line, one module per command group (the console script is :func:`main`).

``core`` holds the app, its root callback and the daemon's own commands; each other group is a module
with its commands and registers here, in the order ``territory --help`` lists them. Rendering for
people lives in ``render``; what the groups share (``--format``, the settings) in ``options``.
"""

from __future__ import annotations

from service.cli import apply, core, health, propose, sync
from service.cli.config import config_app
from service.cli.core import app, main
from service.cli.proposals import proposals_app
from service.cli.sandbox import sandbox_app

for command in (core.migrate, core.demo, health.health, sync.sync, core.serve, health.report):
    app.command()(command)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(config_app, name="config")
app.add_typer(proposals_app, name="proposals")
app.command()(propose.propose)
app.command()(apply.apply)

__all__ = ["app", "main"]
