"""The raw ingest of a whole universe from EDGAR within fair access, measured against SEC's limit.

Set-up (not timed): a fresh state folder with the local stack (the real catalog server, bootstrapped) and the
EDGAR replay server (`tests/edgar_replay.py`) in its own process with N companies built from the shared real
filings, refusing as SEC does. Timed: the refresh schedule's tick, evaluated as the daemon would, and its run
requests (one per raw partition, 2023-2024 x 10-K/10-Q) launched at once against one Dagster instance, each run in
its own process as the daemon's run launcher starts it. The live EDGAR client reaches the replay server instead of
sec.gov; nothing else differs from the `local` deployment. Printed: requests made and refused
(the server's own record), wall time and its share of the physical minimum (requests / 10 per second), where the
time went, whether the raw table holds exactly one row per filing, and with --curate the curated step on that table.

    GOVERNED_FT_JAR_MIRROR=/work/shared/jars .venv/bin/python benchmarks/bench_ingest.py --companies 50 [--curate]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import warnings  # noqa: E402

import dagster as dg  # noqa: E402

# Dagster's notices about beta and preview APIs the project uses are not the benchmark's figures.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

REPLAY_URL_ENV = "GOVERNED_FT_BENCH_EDGAR_REPLAY"
USER_AGENT = "Governed FT Benchmark bench@example.com"
SEC_RPS = 10.0


def bench_definitions() -> dg.Definitions:
    """The `local` deployment's definitions, its EDGAR resource the live client pointed at the replay server."""
    from governed_ft_dagster.defs.build import build_defs
    from governed_ft_dagster.defs.resources.edgar import EdgarResource
    from governed_ft_dagster.settings import load_settings

    settings = load_settings()
    defs = build_defs(settings)
    url = os.environ[REPLAY_URL_ENV]
    edgar = EdgarResource(source="live", user_agent=USER_AGENT, base_url=url, data_url=url,
                          cache_dir=str(settings.home / "edgar_cache"), local_root=str(settings.home / "edgar_sample"))
    return dg.Definitions(assets=list(defs.assets or []), asset_checks=list(defs.asset_checks or []),
                          jobs=list(defs.jobs or []), schedules=list(defs.schedules or []),
                          resources={**(defs.resources or {}), "edgar": edgar})


def raw_refresh_job() -> dg.JobDefinition:
    """The job the refresh schedule launches (reconstructed in each run process)."""
    return bench_definitions().resolve_job_def("raw_refresh_job")


def replay_stats(url: str, what: str = "stats"):
    with urllib.request.urlopen(f"{url}/__replay__/{what}", timeout=60) as reply:
        return json.loads(reply.read())


def start_replay(companies: int, lockout_s: float, log: Path) -> tuple[subprocess.Popen, str]:
    """The replay server in its own process (its request handling never competes with ours for one GIL)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "edgar_replay.py"), "--companies",
                                str(companies), "--lockout-s", str(lockout_s)], stdout=subprocess.PIPE,
                               stderr=log.open("wb"), env=env, text=True)
    line = process.stdout.readline()
    if not line.startswith("http://"):
        process.kill()
        raise SystemExit(f"the replay server did not start: {log.read_text()[-2000:]}")
    return process, line.split()[0]


def launch_schedule_tick(instance: dg.DagsterInstance, universe: str | None,
                         logs: Path) -> tuple[list, float, float]:
    """Evaluate the refresh schedule's tick and start a run worker process per run request, all at once, as the
    daemon's run launcher does; the finished runs, the launch time and the CPU seconds the run processes used."""
    defs = bench_definitions()
    schedule = defs.resolve_schedule_def("edgar_refresh_schedule")
    job = defs.resolve_job_def("raw_refresh_job")
    context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                        scheduled_execution_time=dt.datetime.now(dt.timezone.utc))
    requests = schedule.evaluate_tick(context).run_requests or []
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if universe:
        run_config["ops"] = {"raw_risk_factors": {"config": {"universe": universe}}}
    workers = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    tick = {"governed_ft/bench_tick": context.scheduled_execution_time.isoformat()}
    for request in requests:
        tags = {**request.tags, **tick, **job.partitions_def.get_tags_for_partition_key(request.partition_key)}
        log = logs / f"run-{request.partition_key.replace('|', '-')}.log"
        workers.append(subprocess.Popen([sys.executable, __file__, "--run-worker", json.dumps(
            {"tags": tags, "run_config": run_config})], stdout=log.open("wb"), stderr=subprocess.STDOUT))
    for worker in workers:
        worker.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    runs = instance.get_runs(dg.RunsFilter(tags=tick))
    return sorted(runs, key=lambda r: r.tags.get("dagster/partition", "")), started, cpu


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(spec: str) -> int:
    """One run of the refresh job in this process, as the run launcher starts it."""
    arguments = json.loads(spec)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(raw_refresh_job), instance, run_config=arguments["run_config"],
                                tags=arguments["tags"])
    return 0 if result.success else 1


def step_timeline(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall-clock moments of one run: listing done, last extraction, materialization, raw step end, checks end."""
    moments: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event, message = entry.dagster_event, entry.user_message or ""
        kind = event.event_type_value if event is not None else ""
        if kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            key = "raw step end" if entry.step_key == "raw_risk_factors" else "checks end"
            moments[key] = max(moments.get(key, 0.0), entry.timestamp)
        elif kind == "ASSET_MATERIALIZATION":
            moments["materialized"] = entry.timestamp
        elif "filings for fiscal year" in message:
            moments["listed"] = entry.timestamp
        elif message.startswith("extracted "):
            moments["extracted"] = entry.timestamp
    return moments


def table_rows(settings) -> list[dict]:
    from governed_ft_dagster.catalog.base import Principal
    from governed_ft_dagster.governance import RAW_TABLE

    resources = bench_definitions().resources
    table, _ = resources["catalog"].read_table(Principal.INGEST, RAW_TABLE,
                                               ["accession_number", "form_type", "fiscal_year", "status",
                                                "risk_factors_text"])
    return table.to_pylist()


def run_curated(instance: dg.DagsterInstance, home: Path) -> dict:
    """Materialize the curated table from the raw table just written: the real step (spark-submit), timed."""
    from governed_ft_dagster.defs.resources.base_model import BaseModelResource
    from governed_ft_dagster.training.base_model import build_tiny_base
    from edgar_replay import SHARED_SAMPLES
    from lxml import html

    base = home / "models" / "tiny-bench"
    texts = [html.fromstring(p.read_bytes()).text_content()
             for p in sorted([*(SHARED_SAMPLES / "filings").glob("*.htm*"), *(SHARED_SAMPLES / "more").glob("*.htm*")])]
    build_tiny_base(texts, base)
    defs = bench_definitions()
    resources = {**defs.resources, "base_model": BaseModelResource(model_ref=str(base))}
    curated = defs.get_assets_def("curated_training_table")
    started = time.time()
    result = dg.materialize([curated], instance=instance, resources=resources, raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    seconds = time.time() - started
    metadata = {}
    for event in result.get_asset_materialization_events():
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    failures = [str(f.event_specific_data.error.message).splitlines()[0] for f in result.get_step_failure_events()]
    return {"seconds": seconds, "metadata": metadata, "failures": failures,
            "job_seconds": float(metadata.get("seconds") or 0.0)}


def profile_curation(home: Path) -> str:
    """bench_preprocess.py's stage table on the raw table just written (where the job's time goes)."""
    location = home / "warehouse" / "raw" / "tables" / "risk_factors"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_preprocess.py"), "--raw-location",
                           location.as_uri()], capture_output=True, text=True, timeout=3600)
    table = done.stdout[done.stdout.find("\nlocal["):] if "\nlocal[" in done.stdout else done.stdout[-3000:]
    causes = [line for line in done.stderr.splitlines() if "Error" in line or "Exception:" in line][:5]
    return table if done.returncode == 0 else f"stage profile failed (exit {done.returncode}): " + "\n".join(causes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=500)
    parser.add_argument("--lockout-s", type=float, default=10.0,
                        help="seconds the replay server refuses everything after the rate is exceeded (SEC: 600)")
    parser.add_argument("--curate", action="store_true", help="then run the curated step on the raw table")
    parser.add_argument("--home", type=Path, help="state folder (default: a temporary one, removed at the end)")
    parser.add_argument("--curate-only", action="store_true",
                        help="only the curated step, on the raw table a run with this --home left")
    parser.add_argument("--stage-profile", action=argparse.BooleanOptionalAction, default=True,
                        help="then bench_preprocess.py's stage table on the same table (takes as long again)")
    parser.add_argument("--run-worker", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.run_worker:
        return run_worker(options.run_worker)
    if options.curate_only:
        return curate_only(options.home, options.stage_profile)

    from governed_ft_dagster.settings import load_settings
    from governed_ft_dagster.stack.bootstrap import bootstrap
    from governed_ft_dagster.stack.local import LocalStack
    from governed_ft_dagster.stack.server import free_port_pair
    from edgar_replay import Universe

    home = options.home or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    os.environ.update({"GOVERNED_FT_HOME": str(home), "GOVERNED_FT_DEPLOYMENT": "local",
                       "GOVERNED_FT_UC_PORT": str(free_port_pair()), "GOVERNED_FT_FISCAL_YEARS": "2023-2024"})
    os.environ.pop("DAGSTER_HOME", None)
    settings = load_settings()
    settings.prepare_dagster_home()
    stack = LocalStack(settings)
    replay = None
    started = time.monotonic()
    try:
        stack.up()
        bootstrap(stack)
        universe = Universe(options.companies)
        replay, url = start_replay(options.companies, options.lockout_s, home / "replay.log")
        os.environ[REPLAY_URL_ENV] = url
        tickers = [c.ticker for c in universe.companies]
        from governed_ft_dagster.edgar.universe import sp500_tickers

        universe_config = None if tickers == sp500_tickers() else ",".join(tickers)
        expected = {f.accession for _, f in universe.in_period()}
        print(f"set-up (not timed): stack up, bootstrap, replay server with {len(universe.companies)} companies "
              f"and {len(expected)} filings in 2023-2024: {time.monotonic() - started:.0f} s", flush=True)

        with dg.DagsterInstance.get() as instance:
            replay_cpu = process_cpu_seconds(replay.pid)
            results, launched, runs_cpu = launch_schedule_tick(instance, universe_config, home)
            wall = time.time() - launched
            cpu = {"runs": runs_cpu, "replay": process_cpu_seconds(replay.pid) - replay_cpu}
            stats = replay_stats(url)
            records = replay_stats(url, "records")
            timelines = {r.run_id: step_timeline(instance, r.run_id) for r in results}
            metadata = {r.run_id: run_metadata(instance, r.run_id) for r in results}
            rows = table_rows(settings)
            summary = report(options.companies, results, launched, wall, cpu, stats, records, timelines, metadata,
                             rows, expected)
            curated = run_curated(instance, home) if options.curate else None
        if curated is not None:
            report_curated(curated, rows, wall, profile_curation(home) if options.stage_profile else "")
        print(f"\n{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}")
        print(summary)
        ok = (stats["refused"] == 0 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in results)
              and len(rows) == len(expected))
        return 0 if ok else 1
    finally:
        if replay is not None:
            replay.terminate()
            replay.wait(timeout=30)
        stack.down()
        if options.home is None:
            shutil.rmtree(home, ignore_errors=True)


def curate_only(home: Path | None, stage_profile: bool = True) -> int:
    """The curated step again on a kept state folder's raw table (after a change to the curated job)."""
    from governed_ft_dagster.settings import load_settings
    from governed_ft_dagster.stack.local import LocalStack
    from governed_ft_dagster.stack.server import free_port_pair

    if home is None or not (home / "warehouse").is_dir():
        raise SystemExit("--curate-only needs --home with the state folder of an earlier run")
    os.environ.update({"GOVERNED_FT_HOME": str(home), "GOVERNED_FT_DEPLOYMENT": "local",
                       "GOVERNED_FT_UC_PORT": str(free_port_pair()), REPLAY_URL_ENV: "http://127.0.0.1:9"})
    os.environ.pop("DAGSTER_HOME", None)
    settings = load_settings()
    settings.prepare_dagster_home()
    stack = LocalStack(settings)
    try:
        stack.up()
        with dg.DagsterInstance.get() as instance:
            rows = table_rows(settings)
            curated = run_curated(instance, home)
        report_curated(curated, rows, None, profile_curation(home) if stage_profile else "")
        return 1 if curated["failures"] else 0
    finally:
        stack.down()


def run_metadata(instance: dg.DagsterInstance, run_id: str) -> dict:
    """The raw materialization's metadata in one run, or its step failure's (with its sentence as 'failure')."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        return {k: v.value for k, v in entry.asset_materialization.metadata.items()}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        failure = entry.dagster_event.step_failure_data
        user, error = failure.user_failure_data, failure.error.cause or failure.error
        return {**({k: v.value for k, v in user.metadata.items()} if user else {}),
                "failure": user.description if user and user.description else error.message.splitlines()[0]}
    return {}


def report(companies: int, results: list, launched: float, wall: float, cpu: dict, stats: dict, records: list,
           timelines: dict, metadata: dict, rows: list[dict], expected: set[str]) -> str:
    """Print the ingest's figures; return the summary line."""
    from collections import Counter

    requests, refused = stats["requests"], stats["refused"]
    minimum = requests / SEC_RPS
    first, last = stats["first"] or launched, stats["last"] or launched
    kinds = Counter("documents" if p.startswith("/Archives/") else "submissions" if p.startswith("/submissions/")
                    else "company list" for _, _, p in records)
    print(f"\nrequests: {requests} ({', '.join(f'{n} {k}' for k, n in kinds.most_common())}); refused: {refused}; "
          f"most in any one second: {stats['max_in_window']}")
    for at, status, path in [r for r in records if r[1] != 200][:3]:
        window = [r for r in records if at - 1.0 < r[0] <= at]
        print(f"  refused {status} {path}; arrivals in the second before it (ms): "
              + ", ".join(f"{(r[0] - at) * 1000:.0f}" for r in window))
    print(f"wall: {wall:.1f} s; physical minimum at {SEC_RPS:.0f}/s: {minimum:.1f} s; share {minimum / wall:.3f}")
    print(f"  launch to first request: {first - launched:.1f} s (run process start-up, imports, catalog preflight)")
    print(f"  first to last request: {last - first:.1f} s ({(requests - 1) / max(last - first, 1e-9):.2f} requests/s)")
    times = sorted(r[0] for r in records)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    if gaps:
        pick = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))] * 1000  # noqa: E731
        print(f"    gaps between arrivals (ms): p10 {pick(0.1):.0f}, p50 {pick(0.5):.0f}, p90 {pick(0.9):.0f}, "
              f"p99 {pick(0.99):.0f}; {sum(g for g in gaps if g > 0.2):.1f} s in gaps over 200 ms")
    print(f"  last request to the end: {launched + wall - last:.1f} s (extraction backlog, Delta merge, checks)")
    columns = ("listed", "extracted", "materialized", "raw step end", "checks end")
    print(f"  CPU: the four run processes {cpu['runs']:.0f} s ({cpu['runs'] / max(len(expected), 1) * 1000:.0f} ms a "
          f"filing), the replay server {cpu['replay']:.0f} s; {os.cpu_count()} CPUs x {wall:.0f} s wall = "
          f"{os.cpu_count() * wall:.0f} CPU-seconds, shared with whatever else runs (load average "
          f"{os.getloadavg()[0]:.1f})")
    print("\n| partition | run | filings | rows | " + " | ".join(columns) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(columns))
    for run in results:
        moments, meta = timelines[run.run_id], metadata[run.run_id]
        cells = [f"{moments[c] - launched:.1f}" if c in moments else "-" for c in columns]
        print(f"| {run.tags.get('dagster/partition', '?')} | {run.status.value.lower()} | "
              f"{meta.get('filings_in', '-')} | {meta.get('rows', '-')} | " + " | ".join(cells) + " |")
    print("(seconds after launch: listing done, last filing extracted, Delta merge committed, raw step done, "
          "its checks done)")
    for run in results:
        if "failure" in metadata[run.run_id]:
            print(f"  {run.tags.get('dagster/partition', '?')} failed: {metadata[run.run_id]['failure']}")
    accessions = [r["accession_number"] for r in rows]
    statuses = Counter(r["status"] for r in rows)
    complete = set(accessions) == expected and len(accessions) == len(set(accessions))
    print(f"\nraw table: {len(rows)} rows, {len(set(accessions))} distinct accession numbers, {len(expected)} filings "
          f"served; {'complete, one row per filing' if complete else 'NOT one row per filing'}; "
          f"by status: {dict(sorted(statuses.items()))}", flush=True)
    return (f"companies={companies} filings={len(expected)} rows={len(rows)} requests={requests} refused={refused} "
            f"rate_share={minimum / wall:.2f}")


def report_curated(curated: dict, rows: list[dict], ingest_wall: float | None, profile: str) -> None:
    """Print the curated step's figures and the stage profile of its job."""
    seconds, meta = curated["seconds"], curated["metadata"]
    text_mb = sum(len((r["risk_factors_text"] or "").encode()) for r in rows) / 1e6
    records = meta.get("rows_out") or 0
    print(f"\ncurated step: {seconds:.1f} s for {len(rows)} raw rows ({text_mb:.1f} MB of section text) -> {records} "
          f"records; {records / seconds:.1f} records/s, {len(rows) / seconds:.1f} raw rows/s, {text_mb / seconds:.2f} "
          f"MB/s" + (f"; {'less' if seconds < ingest_wall else 'MORE'} than the ingest's {ingest_wall:.1f} s"
                     if ingest_wall is not None else "")
          + (f"; FAILED: {curated['failures'][0]}" if curated["failures"] else ""))
    print(f"  of which the Spark job itself (read to write, after Spark start-up): {curated['job_seconds']:.1f} s; "
          f"the rest: building the job's code wheel, spark-submit and JVM start-up, catalog calls")
    print("  curated metadata: " + json.dumps({k: v for k, v in meta.items() if k in (
        "rows_in", "risk_factors", "records_in", "rows_out", "rejects", "token_length")}))
    print(profile, flush=True)

if __name__ == "__main__":
    sys.exit(main())
