"""The project's command line: `governed-ft`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from governed_ft_dagster.catalog.base import CatalogError
from governed_ft_dagster.cli.lineage import lineage, verify
from governed_ft_dagster.cli.provision import aws, catalog_group
from governed_ft_dagster.cli.run import run
from governed_ft_dagster.cli.ui import ui
from governed_ft_dagster.settings import SettingsError, load_settings
from governed_ft_dagster.stack.errors import StackError


def _clean_errors(func):
    """Show project errors as one line on stderr with exit code 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (StackError, CatalogError, SettingsError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _stack():
    from governed_ft_dagster.stack.local import LocalStack

    return LocalStack(load_settings())


@click.group()
def main() -> None:
    """Governed LLM fine-tuning: local stack, bootstrap and pipeline tools."""


@main.group()
def stack() -> None:
    """Start, stop and inspect the embedded local stack."""


@stack.command("fetch")
@_clean_errors
def stack_fetch() -> None:
    """Fetch the pinned jars from Maven Central into the state folder."""
    for group, outcome in _stack().fetch().items():
        click.echo(f"{group}: {outcome}")


@stack.command("up")
@_clean_errors
def stack_up() -> None:
    """Start the catalog server in the background and wait until it answers."""
    local = _stack()
    pid = local.up()
    click.echo(f"catalog server healthy at {local.settings.uc_url} (pid {pid}); state in {local.home}")


@stack.command("down")
@_clean_errors
def stack_down() -> None:
    """Stop the catalog server if it runs."""
    stopped = _stack().down()
    click.echo("catalog server stopped" if stopped else "catalog server was not running")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_clean_errors
def stack_status(as_json: bool) -> None:
    """Report the catalog's health, its contents and what is in the state folder."""
    local = _stack()
    report = local.status()
    if report["catalog_server"]["healthy"]:
        from governed_ft_dagster.stack.inventory import catalog_inventory

        report["catalog"] = catalog_inventory(local)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    server = report["catalog_server"]
    click.echo(f"state folder: {report['home']}")
    click.echo(f"catalog server: {'healthy' if server['healthy'] else 'running, not answering' if server['running'] else 'stopped'} ({server['url']})")
    for group, info in report["jars"].items():
        click.echo(f"jars {group}: {'present' if info['complete'] else 'missing'} ({info['jar_count']} jars in {info['directory']})")
    click.echo(f"mlflow: {report['mlflow']['tracking_uri']} ({'present' if report['mlflow']['present'] else 'not created yet'})")
    catalog = report.get("catalog")
    if catalog:
        click.echo(f"catalog {catalog['name']}: schemas {', '.join(catalog['schemas'])}; principals {', '.join(catalog['principals'])}")
        for line in catalog["grants"]:
            click.echo(f"  grant {line}")


@main.command("bootstrap")
@click.option("--verbose", is_flag=True, help="List every object, grant and token instead of counting them.")
@_clean_errors
def bootstrap_command(verbose: bool) -> None:
    """Create the catalog, schemas, principals, grants and tokens (idempotent)."""
    from governed_ft_dagster.stack.bootstrap import bootstrap

    report = bootstrap(_stack())
    outcomes = (("created", "objects created", report.created), ("granted", "grants made", report.granted),
                ("revoked", "grants revoked", report.revoked),
                ("token written for", "principal tokens written", report.tokens_written),
                ("pending (table not yet created)", "grants pending until their tables exist", report.pending))
    if verbose:
        for label, _, items in outcomes:
            for item in items:
                click.echo(f"{label}: {item}")
    elif report.changed:
        click.echo("bootstrap: " + ", ".join(f"{len(items)} {counted}" for _, counted, items in outcomes if items)
                   + " (--verbose lists them)")
    if not report.changed:
        click.echo("bootstrap: nothing to change")


@main.command("extract")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--form", "form_type", required=True, type=click.Choice(["10-K", "10-Q", "10-K/A", "10-Q/A"]))
@click.option("--text", "with_text", is_flag=True, help="Include the section text.")
def extract_command(paths: tuple[Path, ...], form_type: str, with_text: bool) -> None:
    """Extract the Risk Factors section of each filing; one JSON object per line."""
    from governed_ft_dagster.edgar.extract import extract_risk_factors

    for path in paths:
        result = extract_risk_factors(path.read_bytes(), form_type)
        record = {"path": str(path), "status": result.status.value, "chars": len(result.text)}
        if result.heading:
            record["heading"] = result.heading
        if result.reason:
            record["reason"] = result.reason
        if result.start is not None:
            record["start"], record["end"] = result.start, result.end  # lines of document_lines(html)
        if with_text:
            record["text"] = result.text
        click.echo(json.dumps(record, ensure_ascii=False))


main.add_command(aws)
main.add_command(catalog_group)
main.add_command(run)
main.add_command(lineage)
main.add_command(verify)
main.add_command(ui)
