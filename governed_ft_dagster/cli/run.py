"""`governed-ft run`: materialize the whole graph, print one line per phase, keep the full log in the state folder."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import click

from governed_ft_dagster.settings import Settings, load_settings

ASSETS = ("raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version")


@click.command("run")
@click.option("--partition", "partitions", multiple=True, help="Raw partitions (fiscal_year|form_type); default all.")
@click.option("--verbose", is_flag=True, help="Print Dagster's and the jobs' own output too, not only the summary.")
def run(partitions: tuple[str, ...], verbose: bool) -> None:
    """Ingest every raw partition, then curate, train and register; print the model version and its lineage."""
    settings = load_settings()
    dagster_home = settings.prepare_dagster_home()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"run-{time.strftime('%Y%m%dT%H%M%S')}.log"
    with _output_to(log_path, verbose):
        import dagster as dg

        from governed_ft_dagster.defs.build import build_defs

        defs = build_defs(settings)

    assets = [defs.get_assets_def(key) for key in ASSETS]
    checks = list(defs.asset_checks or [])
    raw_checks = [c for c in checks if {k.asset_key for k in c.check_keys} == {dg.AssetKey(ASSETS[0])}]
    say = Summary(log_path, dagster_home)
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        for key in partitions or assets[0].partitions_def.get_partition_keys():
            say.start(f"raw_risk_factors {key}")
            with _output_to(log_path, verbose):
                result = dg.materialize(assets[:1] + raw_checks, partition_key=key, instance=instance,
                                        resources=defs.resources, raise_on_error=False)
            say.done(result, _raw_line(result), key=key)
        say.start("curated_training_table, finetuned_lora_model, uc_model_version")
        with _output_to(log_path, verbose):
            results = _run_downstream(instance, assets + checks, defs.resources)
        say.done(results, "done")
        for line in _downstream_lines(results, instance):
            click.echo(line)
        for result in results:
            say.steps.update({f"step {k}": v for k, v in _step_seconds(instance, result.run_id).items()})
        metadata = _metadata(results, "uc_model_version") or _latest_metadata(instance, "uc_model_version")
    name, version = metadata["model_name"], metadata["model_version"]
    click.echo(f"registered {name} version {version}")
    click.echo(_lineage_line(settings, name, str(version)))
    say.write_timings(time.monotonic() - started)
    click.echo(f"full log: {log_path}; runs, checks and metadata: `governed-ft ui` (Dagster instance {dagster_home})")


class Summary:
    """Prints a phase as it starts and how it ended; a failure ends the command with its one-line cause."""

    def __init__(self, log_path: Path, dagster_home: Path):
        self.log_path, self.dagster_home, self.started, self.phase = log_path, dagster_home, 0.0, ""
        self.phases: dict[str, float] = {}
        self.steps: dict[str, float] = {}

    def start(self, phase: str) -> None:
        self.started, self.phase = time.monotonic(), phase
        click.echo(f"{phase} ...", nl=False)

    def write_timings(self, total_s: float) -> Path:
        """Seconds per phase and per step next to the log, for benchmarks and for a person comparing runs."""
        path = self.log_path.with_suffix(".timings.json")
        path.write_text(json.dumps({"total_s": round(total_s, 2), "phases": self.phases, "steps": self.steps},
                                   indent=1) + "\n")
        return path

    def done(self, result, line: str, key: str | None = None) -> None:
        seconds = time.monotonic() - self.started
        self.phases[self.phase] = round(seconds, 2)
        failures = [f for r in _as_list(result) for f in r.get_step_failure_events()]
        if failures:
            click.echo(" failed")
            message = _cause(failures[0].event_specific_data.error)
            click.echo(f"error: {failures[0].step_key}: {message}", err=True)
            click.echo(f"full log: {self.log_path}", err=True)
            sys.exit(1)
        failed_checks = [e for r in _as_list(result) for e in r.get_asset_check_evaluations() if not e.passed]
        checks = _checks_text(result)
        click.echo(f" {line}{'; ' if line and checks else ''}{checks} ({seconds:.1f} s)")
        for evaluation in failed_checks:
            click.echo(f"  check {evaluation.check_name} failed: {evaluation.description}", err=True)


def _run_downstream(instance, definitions: list, resources: dict) -> list:
    """Curate, train and register in one run. An asset whose input yielded nothing new is skipped by Dagster; it
    runs again, with its input's checks, only when its latest materialization did not read its input's latest."""
    import dagster as dg

    pending = list(ASSETS[1:])
    results = []
    while pending:
        parent = ASSETS[ASSETS.index(pending[0]) - 1]
        selection = dg.AssetSelection.assets(*pending)
        if results:
            selection = selection | dg.AssetSelection.checks_for_assets(parent)
        result = dg.materialize(definitions, selection=selection, instance=instance, resources=resources,
                                raise_on_error=False)
        results.append(result)
        skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
        if result.get_step_failure_events():
            break
        pending = next((pending[i:] for i, key in enumerate(pending)
                        if key in skipped and not _read_latest_input(instance, key)), [])
    return results


def _read_latest_input(instance, key: str) -> bool:
    """Whether the latest materialization of key recorded reading the latest materialization of its input."""
    import dagster as dg

    parent = dg.AssetKey(ASSETS[ASSETS.index(key) - 1])
    own = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    latest = instance.fetch_materializations(parent, limit=1).records
    if not own or not latest:
        return False
    provenance = dg.DataProvenance.from_tags(own[0].asset_materialization.tags or {})
    return provenance is not None and provenance.input_storage_ids.get(parent) == latest[0].storage_id


def _as_list(result) -> list:
    return result if isinstance(result, list) else [result]


def _cause(error) -> str:
    """The innermost error's message: Dagster wraps an exception raised in an asset in its own."""
    import dagster as dg

    while error.cause is not None and error.cls_name == dg.DagsterExecutionStepExecutionError.__name__:
        error = error.cause
    message = error.message.strip()
    if message.startswith("dagster.") and ": " in message:
        message = message.split(": ", 1)[1]
    return message


@contextlib.contextmanager
def _output_to(log_path: Path, verbose: bool) -> Iterator[None]:
    """Send this process's and its children's stdout and stderr to the log file (and nowhere else unless verbose)."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _metadata(result, asset: str) -> dict[str, Any]:
    """The metadata of the asset's materialization in these runs (the last one), empty when none materialized it."""
    events = [e for r in _as_list(result) for e in r.asset_materializations_for_node(asset)]
    if not events:
        return {}
    return {k: getattr(v, "value", v) for k, v in events[-1].metadata.items()}


def _latest_metadata(instance, asset: str) -> dict[str, Any]:
    """The metadata of the asset's latest materialization on the instance, empty when there is none."""
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    if not records:
        return {}
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def _checks_text(result) -> str:
    evaluations = [e for r in _as_list(result) for e in r.get_asset_check_evaluations()]
    if not evaluations:
        return ""
    passed = sum(1 for e in evaluations if e.passed)
    return f"checks {passed}/{len(evaluations)} passed"


def _raw_line(result) -> str:
    m = _metadata(result, "raw_risk_factors")
    statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted((m.get("rows_by_status") or {}).items()))
    superseded = len(m.get("superseded") or {})
    return (f"{m.get('filings_in', 0)} filings in, {m.get('rows', 0)} rows ({statuses or 'none'}), "
            f"{m.get('rejects', 0)} rejects, " + (f"{superseded} superseded by amendments, " if superseded else "")
            + f"raw table at Delta version {m.get('delta_version')}")


def _downstream_lines(results: list, instance) -> list[str]:
    durations = {k: v for r in results for k, v in _step_seconds(instance, r.run_id).items()}
    lines = []
    curated = _metadata(results, "curated_training_table")
    if curated:
        splits = curated.get("splits") or {}
        split_text = ", ".join(f"{v.get('records', 0)} {k}" for k, v in sorted(splits.items()))
        lines.append(f"  curated: {curated.get('rows_out')} records ({split_text}) from {curated.get('rows_in')} raw "
                     f"rows at Delta version {curated.get('source_version')}, {curated.get('rejects_total', 0)} "
                     f"rejected; Delta version {curated.get('delta_version')}"
                     f"{_seconds(durations, 'curated_training_table')}")
    elif latest := _latest_metadata(instance, "curated_training_table"):
        lines.append(f"  curated: up to date at Delta version {latest.get('delta_version')} (raw version "
                     f"{latest.get('source_version')}, {latest.get('job_run_id')}), no job started")
    model = _metadata(results, "finetuned_lora_model")
    if model:
        counts = model.get("training_data_counts") or {}
        lines.append(f"  training: {model.get('job_run_id')}: {model.get('global_step')} steps, train loss "
                     f"{_number(model.get('train_loss'))}, eval loss {_number(model.get('eval_loss'))} (base model "
                     f"{_number(model.get('base_eval_loss'))}); trained on {counts.get('records')} records of "
                     f"{counts.get('filings')} filings, {str(model.get('training_data_fingerprint'))[:19]}"
                     f"{_seconds(durations, 'finetuned_lora_model')}")
    elif latest := _latest_metadata(instance, "finetuned_lora_model"):
        lines.append(f"  training: up to date ({latest.get('job_run_id')}, eval loss "
                     f"{_number(latest.get('eval_loss'))}), no job started")
    version = _metadata(results, "uc_model_version")
    if version:
        outcome = "created" if version.get("created") else "already registered, nothing created"
        lineage = version.get("lineage") or {}
        lines.append(f"  registration: {version.get('model_name')} version {version.get('model_version')} "
                     f"{outcome}; lineage {lineage.get('created', 0)} created, {lineage.get('updated', 0)} updated, "
                     f"{lineage.get('unchanged', 0)} unchanged{_seconds(durations, 'uc_model_version')}")
    elif latest := _latest_metadata(instance, "uc_model_version"):
        lines.append(f"  registration: {latest.get('model_name')} version {latest.get('model_version')} already "
                     "registers the current adapter, nothing registered")
    return lines


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS" and entry.step_key in started:
            seconds[entry.step_key] = round(entry.timestamp - started[entry.step_key], 2)
    return seconds


def _seconds(durations: dict[str, float], step: str) -> str:
    return f" ({durations[step]:.1f} s)" if step in durations else ""


def _number(value: Any) -> str:
    return f"{float(value):.4f}" if value not in (None, "") else "n/a"


def _lineage_line(settings: Settings, name: str, version: str) -> str:
    from governed_ft_dagster.cli.lineage import describe_entry, read_lineage
    from governed_ft_dagster.lineage.derive import upstream_chain

    command = f"governed-ft lineage {name} --version {version}"
    try:
        graph, version = read_lineage(settings, name, version)
        chain = upstream_chain(graph, name, version)["chain"]
    except Exception as exc:  # the summary line must not hide the registration that succeeded
        return f"lineage: not readable ({exc}); try `{command}`"
    return f"lineage: {' <- '.join(describe_entry(e, short=True) for e in chain)} (`{command}`)"
