"""``territory sandbox``: generated orgs as CSV exports, or served as local Salesforce and HubSpot APIs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of
from service.errors import ConfigError

if TYPE_CHECKING:
    from connectors.sandbox.generator import Org
    from connectors.sandbox.hubspot import SandboxServer as HubSpotServer
    from connectors.sandbox.salesforce import SandboxServer as SalesforceServer

sandbox_app = typer.Typer(
    help="The sandbox CRM: generated orgs for the demo, the tests and the benchmarks.", no_args_is_help=True
)


@sandbox_app.command("export")
def sandbox_export(
    out: Annotated[Path, typer.Option(help="folder to write owners.csv, accounts.csv, ... into")],
    accounts: Annotated[int, typer.Option(min=0, help="accounts to generate")] = 5000,
    reps: Annotated[int, typer.Option(min=1, help="reps (territories) to generate")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="same seed, same bytes")] = 7,
    force: Annotated[bool, typer.Option("--force", help="overwrite an export already in the folder")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Write a realistic generated org as CSV files in the import format (docs/csv-format.md)."""
    from connectors.sandbox.generator import CSV_FILES, DEFAULT_NOW, generate_org, write_csv

    existing = sorted(name for name in CSV_FILES if (out / name).exists())
    if existing and not force:
        typer.echo(
            f"territory: {out} already holds an export ({existing[0]}); add --force to replace it", err=True
        )
        raise typer.Exit(2)

    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"generating {accounts:,} accounts and {reps:,} reps"):
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
    with console.status(f"writing CSV files to {out}"):
        rows = write_csv(org, out)
    seconds = time.perf_counter() - started
    if output is OutputFormat.json:
        emit_json({"out": str(out), "files": rows, "seconds": round(seconds, 3)})
        return
    for name, count in rows.items():
        typer.echo(f"{out / name}: {count:,} rows")
    typer.echo(f"done in {seconds:.1f} s")


def _fault_settings(faults: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``name=value`` flags split into the Salesforce and the HubSpot sandbox's fault fields."""
    import dataclasses

    from connectors.sandbox.hubspot import HubSpotFaults
    from connectors.sandbox.salesforce import SalesforceFaults

    picked: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    kinds = (SalesforceFaults, HubSpotFaults)
    for flag in faults:
        name, sep, value = flag.partition("=")
        matched = False
        for chosen, kind in zip(picked, kinds, strict=True):
            default = {f.name: f for f in dataclasses.fields(kind)}.get(name.strip())
            if default is None or not sep:
                continue
            base = getattr(kind(), default.name)
            try:
                if isinstance(base, list | tuple):
                    parsed: Any = type(base)(int(v) for v in value.split(",") if v.strip())
                elif base is None or (isinstance(base, int) and not isinstance(base, bool)):
                    parsed = int(value)
                else:
                    parsed = type(base)(value)
            except ValueError:
                raise ConfigError(f"--fault {flag}: {value!r} is not a valid {name}") from None
            chosen[default.name] = parsed
            matched = True
        if not matched:
            known = sorted({f.name for kind in kinds for f in dataclasses.fields(kind)})
            raise ConfigError(f"--fault {flag}: expected NAME=VALUE with NAME one of {', '.join(known)}")
    return picked


@sandbox_app.command("serve")
def sandbox_serve(
    ctx: typer.Context,
    accounts: Annotated[int, typer.Option(min=0, help="accounts to generate")] = 5000,
    reps: Annotated[int, typer.Option(min=1, help="reps (territories) to generate")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="same seed, same org")] = 7,
    salesforce_port: Annotated[int, typer.Option(help="HTTPS port of the Salesforce API (0: any free)")] = 0,
    hubspot_port: Annotated[int, typer.Option(help="HTTP port of the HubSpot API (0: any free)")] = 0,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="inject a fault, NAME=VALUE, e.g. throttle_share=0.1 or rate_limit_share=0.1"),
    ] = None,
) -> None:
    """Serve a generated org as local Salesforce and HubSpot APIs until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from connectors.sandbox.generator import DEFAULT_NOW, generate_org

    sf_faults, hs_faults = _fault_settings(fault or [])
    org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
    cert_dir = settings_of(ctx).data_dir / "sandbox-tls"
    cert_dir.mkdir(parents=True, exist_ok=True)
    sf, hs = _start_servers(org, cert_dir, (salesforce_port, hubspot_port), (sf_faults, hs_faults))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"sandbox CRM: {accounts:,} accounts, {reps:,} reps (seed {seed})\n" + _how_to_connect(sf, hs))
    try:
        while not stop.wait(0.5):
            pass
    finally:
        hs.stop()
        sf.stop()
    typer.echo("sandbox stopped")


def _start_servers(
    org: Org,
    cert_dir: Path,
    ports: tuple[int, int],
    faults: tuple[dict[str, Any], dict[str, Any]],
) -> tuple[SalesforceServer, HubSpotServer]:
    """The sandbox Salesforce (HTTPS) and HubSpot; the first is stopped again if the second fails."""
    from connectors.sandbox.hubspot import HubSpotFaults, start_hubspot_sandbox
    from connectors.sandbox.salesforce import SalesforceFaults, start_salesforce_sandbox

    sf = start_salesforce_sandbox(org, port=ports[0], faults=SalesforceFaults(**faults[0]), cert_dir=cert_dir)
    try:
        hs = start_hubspot_sandbox(org, port=ports[1], faults=HubSpotFaults(**faults[1]))
    except BaseException:
        sf.stop()
        raise
    return sf, hs


def _how_to_connect(sf: SalesforceServer, hs: HubSpotServer) -> str:
    """Where the servers listen and the environment that points the connectors at them."""
    import shlex

    return (
        f"Salesforce  {sf.url}  (CA: {sf.ca_path})\n"
        f"HubSpot     {hs.url}\n"
        "Point the connectors at them:\n"
        f"  export TERRITORY_SALESFORCE__AUTH=access_token TERRITORY_SALESFORCE__INSTANCE_URL={sf.url}\n"
        f"  export TERRITORY_SALESFORCE__ACCESS_TOKEN={shlex.quote(sf.access_token)}\n"
        f"  export TERRITORY_SALESFORCE__CA_BUNDLE={shlex.quote(str(sf.ca_path))}\n"
        f"  export TERRITORY_HUBSPOT__BASE_URL={hs.url} "
        f"TERRITORY_HUBSPOT__ACCESS_TOKEN={shlex.quote(hs.access_token)} "
        "TERRITORY_HUBSPOT__SEARCH_REQUESTS_PER_SECOND=0\n"
        "  territory sync --source salesforce   # or --source hubspot\n"
        "Ctrl-C stops the servers."
    )
