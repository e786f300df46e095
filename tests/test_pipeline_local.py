"""The README's main command on the embedded default, run once from the installed wheel against the real catalog
server; each test reads one part of what that run left: its account, the UI, the tables, the model, MLflow, the
no-change re-run and the secrets scan."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from conftest import link_group
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
from governed_ft_dagster.settings import load_settings
from governed_ft_dagster.stack.bootstrap import read_token
from governed_ft_dagster.stack.local import LocalStack
from governed_ft_dagster.stack.server import ServerPaths, free_port_pair

CLI = Path(sys.executable).with_name("governed-ft")
# The local deployment trains the tiny stand-in, so its adapters never become versions of the production model.
LOCAL_MODEL_NAME = "ml.tiny_ministral3_sec_risk_factors"
UI_QUERY = """{ runsOrError { ... on Runs { results { status } } }
  assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId metadataEntries { label } }
               assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization {
                 evaluation { success } } } } } } }"""


def governed_ft(*args: str, env: dict[str, str], timeout_s: float = 900, cli: Path = CLI,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=timeout_s, cwd=cwd)


@contextlib.contextmanager
def served_ui(env: dict[str, str], cli: Path, cwd: Path, port: int) -> Iterator[dict]:
    """What `governed-ft ui` serves over GraphQL once it answers; the UI is stopped again on leaving."""
    from governed_ft_dagster.processes import end_group

    with (cwd.parent / "ui.log").open("wb") as log:
        process = subprocess.Popen([str(cli), "ui", "--port", str(port), "--mlflow-port", "0"], env=env, cwd=cwd,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (cwd.parent / "ui.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "governed-ft ui did not answer GraphQL within 240 s"
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": UI_QUERY}, timeout=10)
                if reply.ok and (reply.json().get("data") or {}).get("assetNodes"):
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        yield reply.json()["data"]
    finally:
        end_group(process, grace_s=20)


def page_text(url: str, expected: str, profile: Path, attempts: int = 3) -> str:
    """The visible text of a page as headless Chromium renders it, scripts run; retried until `expected` shows."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert browser, "no Chromium on this machine: `make test` installs Debian's chromium (make browser)"
    text = ""
    for attempt in range(attempts):
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               f"--user-data-dir={profile}", f"--virtual-time-budget={30_000 * (attempt + 1)}",
                               "--dump-dom", url], capture_output=True, text=True, timeout=300)
        dom = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.S)
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())
        if expected in text:
            break
    return text


def scan_state_folder(home: Path, secrets: list[str]) -> list[str]:
    """Files of the state folder holding any secret, apart from where the tokens are meant to live."""
    kept = {home / "tokens", ServerPaths.under(home).conf, home / "jars"}
    leaks, scanned = [], 0
    for path in home.rglob("*"):
        if not path.is_file() or any(k in path.parents for k in kept) or path.stat().st_size > 50_000_000:
            continue
        scanned += 1
        text = path.read_bytes().decode("latin-1")
        leaks += [f"{path.relative_to(home)}: {secret[:12]}" for secret in secrets if secret in text]
    assert scanned > 50  # the Dagster and MLflow stores, lineage, job logs, landing JSON and Delta files
    return leaks


@dataclass
class Demo:
    """The README's main command, run once from the installed wheel in an empty folder: what it left behind."""

    stack: LocalStack
    env: dict[str, str]
    cli: Path
    empty: Path
    first: subprocess.CompletedProcess
    log_text: str
    ui_log: str
    served: dict
    pages: dict[str, str]
    lineage_json: subprocess.CompletedProcess
    events_before_rerun: list
    again: subprocess.CompletedProcess
    tokens: list[str]

    @property
    def settings(self):
        return self.stack.settings

    @property
    def model(self) -> str:
        return f"{self.settings.catalog_name}.{LOCAL_MODEL_NAME}"

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.settings.dagster_home))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, uc_server_jars, spark_home, installed_wheel) -> Iterator[Demo]:
    """`stack up`, `bootstrap`, `run` from the installed wheel in an empty folder against the real catalog server
    (its own, as `stack up` starts it); then the UI it serves, the lineage it prints and the same `run` again."""
    from governed_ft_dagster.lineage.facts import openlineage_path
    from governed_ft_dagster.lineage.sinks import read_events

    root = tmp_path_factory.mktemp("demo")
    stack_env = {"GOVERNED_FT_HOME": str(root / "state"), "GOVERNED_FT_UC_PORT": str(free_port_pair()),
                 "GOVERNED_FT_DEPLOYMENT": "local"}
    stack = LocalStack(load_settings(stack_env))
    link_group(stack.home, uc_server_jars, "uc-server")
    link_group(stack.home, spark_home, "spark")
    link_group(stack.home, spark_home, "hadoop")
    env = {key: value for key, value in {**os.environ, **stack_env}.items()
           if key not in ("DAGSTER_HOME", "PYTHONPATH")}  # the wheel's own files, never a checkout's
    empty = root / "empty"
    empty.mkdir()
    cli = installed_wheel / "governed-ft"
    where = subprocess.run([str(installed_wheel / "python"), "-c", "import governed_ft_dagster, job_scripts; "
                            "print(governed_ft_dagster.__file__); print(job_scripts.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(installed_wheel.parent) for p in where), where
    try:
        for command in (("stack", "up"), ("bootstrap",), ("run",)):
            done = governed_ft(*command, env=env, cli=cli, cwd=empty)
            assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        assert list(empty.iterdir()) == []  # everything went to the state folder
        lines = done.stdout.splitlines()
        log_file = Path(lines[-1].split("full log: ", 1)[1].split(";", 1)[0])
        assert log_file.is_relative_to(stack.home)
        port = free_port_pair()
        pages = {}
        with served_ui(env, cli, empty, port) as served:
            browser = root / "browser"
            pages["assets"] = page_text(f"http://127.0.0.1:{port}/assets", "Materialized •", browser)
            pages["partitions"] = page_text(f"http://127.0.0.1:{port}/assets/raw_risk_factors?view=partitions",
                                            "Materialized (4)", browser)
            for key, count in CHECKS_PER_ASSET.items():
                pages[key] = page_text(f"http://127.0.0.1:{port}/assets/{key}?view=checks", f"Checks ({count})",
                                       browser)
        ui_log = (empty.parent / "ui.log").read_text(errors="replace")
        catalog = stack.settings.catalog_name
        shown = governed_ft("lineage", f"{catalog}.{LOCAL_MODEL_NAME}", "--version", "1", "--json", env=env)
        events = read_events(openlineage_path(stack.home))
        again = governed_ft("run", env=env, cli=cli, cwd=empty)
        tokens = [read_token(stack.home, p) for p in Principal]
        admin = ServerPaths.under(stack.home).admin_token_file
        tokens += [admin.read_text().strip()] if admin.exists() else []
        yield Demo(stack, env, cli, empty, done, log_file.read_text(errors="replace"), ui_log, served, pages, shown,
                   events, again, tokens)
    finally:
        governed_ft("stack", "down", env=env, timeout_s=120, cli=cli, cwd=empty)


CHECKS_PER_ASSET = {"raw_risk_factors": 3, "curated_training_table": 5, "finetuned_lora_model": 1}


def test_the_installed_wheel_runs_stack_up_bootstrap_and_run_from_an_empty_folder(demo):
    done = demo.first
    assert f"registered {demo.model} version 1" in done.stdout
    # A short account: one line per phase with its figures, the full log in the state folder.
    lines = done.stdout.splitlines()
    assert len(lines) <= 15 and "DEBUG" not in done.stdout + done.stderr, done.stdout + done.stderr
    raw_lines = [line for line in lines if line.startswith("raw_risk_factors ")]
    assert len(raw_lines) == 4 and all("filings in" in line and "checks 3/3 passed" in line for line in raw_lines)
    assert any(line.strip().startswith("curated:") and "records" in line for line in lines)
    assert any(line.strip().startswith("training:") and "eval loss" in line for line in lines)
    assert any(line.startswith("lineage:") and "@" in line for line in lines)
    assert "STEP_SUCCESS" in demo.log_text


def test_the_ui_serves_the_demo_instance_with_every_asset_materialized_and_every_check_passed(demo):
    # As a person sees it: all four assets materialized (raw: every partition), each asset's checks passed.
    assert demo.pages["assets"].count("Materialized •") == 3, demo.pages["assets"][:3000]
    partitions = demo.pages["partitions"]
    assert all(s in partitions for s in ("Materialized (4)", "Missing (0)", "Failed (0)")), partitions[:3000]
    for key, count in CHECKS_PER_ASSET.items():
        checks = demo.pages[key]
        assert f"Checks ({count})" in checks and checks.count(" Succeeded ") == count, checks[:3000]
        assert "Failed" not in checks and "Evaluation result Passed" in checks, checks[:3000]
    served = demo.served
    assert len(served["runsOrError"]["results"]) == 5
    assert {r["status"] for r in served["runsOrError"]["results"]} == {"SUCCESS"}
    nodes = {"/".join(n["assetKey"]["path"]): n for n in served["assetNodes"]}
    assert all(nodes[key]["assetMaterializations"] for key in
               ("raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version"))
    evaluated = {c["name"]: c["executionForLatestMaterialization"] for n in nodes.values()
                 for c in n["assetChecksOrError"]["checks"]}
    assert evaluated["adapter_beats_base_model"]["evaluation"]["success"] is True
    assert evaluated["curated_token_budget"]["evaluation"]["success"] is True
    # `governed-ft ui` serves through `dg dev`, which supersedes `dagster dev`: no supersession warning.
    assert "Dagster UI: http://" in demo.ui_log
    assert "superseded" not in demo.ui_log.lower(), demo.ui_log[-3000:]


def test_the_curated_table_is_registered_and_read_through_the_catalog_within_the_token_budget(demo):
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.training.base_model import load_tokenizer

    curated_meta = latest_metadata(demo, "curated_training_table")
    catalog = local_resources(demo.settings)["catalog"]
    curated, version_read = catalog.read_table(Principal.TRAIN, CURATED_TABLE)
    rows = curated.to_pylist()
    assert version_read == curated_meta["delta_version"].value
    assert curated_meta["rows_out"].value == len(rows) > 0
    assert sum(s["records"] for s in curated_meta["splits"].value.values()) == len(rows)
    companies = {split: {r["cik"] for r in rows if r["split"] == split} for split in ("train", "validation")}
    assert companies["train"] and companies["validation"] and not companies["train"] & companies["validation"]
    tokenizer = load_tokenizer(demo.settings.home / "models" / "tiny-ministral3")
    assert all(r["n_tokens"] <= 1024 for r in rows)
    for row in rows[:: max(1, len(rows) // 8)]:
        assert len(tokenizer.apply_chat_template(row["messages"], tokenize=True)["input_ids"]) == row["n_tokens"]


def test_the_model_version_carries_its_sources_and_the_lineage_names_the_versions_read(demo):
    from governed_ft_dagster.cli.lineage import read_lineage
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.lineage.derive import upstream_chain

    settings = demo.settings
    curated_meta = latest_metadata(demo, "curated_training_table")
    model_meta = latest_metadata(demo, "uc_model_version")
    model, version = model_meta["model_name"].value, str(model_meta["model_version"].value)
    assert (model, version) == (demo.model, "1")
    catalog = local_resources(settings)["catalog"]
    found = catalog.client(Principal.REGISTRAR)._request(  # type: ignore[attr-defined]
        "GET", f"/api/2.1/unity-catalog/models/{model}/versions/{version}")
    facts = dict(line.split("=", 1) for line in (found.get("comment") or "").splitlines() if "=" in line)
    assert f"{settings.catalog_name}.{CURATED_TABLE}" in facts["governed_ft.source_tables"]
    graph, _ = read_lineage(settings, model, version)
    chain = upstream_chain(graph, model, version)
    assert int(chain["curated_table"]["version_read"]) == curated_meta["delta_version"].value
    assert int(chain["raw_table"]["version_read"]) == curated_meta["source_version"].value
    assert chain["training_run"] and chain["preprocessing_run"]
    # `governed-ft lineage` prints the same chain.
    assert demo.lineage_json.returncode == 0, demo.lineage_json.stderr
    printed = json.loads(demo.lineage_json.stdout)
    assert printed["raw_table"]["full_name"] == f"{settings.catalog_name}.{RAW_TABLE}"
    assert printed["curated_table"]["full_name"] == f"{settings.catalog_name}.{CURATED_TABLE}"
    assert printed["training_run"] and printed["preprocessing_run"]


def test_the_training_and_registration_runs_are_linked_in_the_demo_mlflow_store(demo):
    import mlflow

    settings = demo.settings
    trained_meta = latest_metadata(demo, "finetuned_lora_model")
    model_meta = latest_metadata(demo, "uc_model_version")
    curated_meta = latest_metadata(demo, "curated_training_table")
    tracking = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    for meta, run_id in ((trained_meta, trained_meta["mlflow_run_id"].value),
                         (model_meta, model_meta["mlflow_run_id"].value)):
        run = tracking.get_run(run_id)
        assert meta["mlflow_run"].value == (f"{settings.mlflow_ui_url}/#/experiments/"
                                            f"{run.info.experiment_id}/runs/{run_id}")
    curve = tracking.get_metric_history(trained_meta["mlflow_run_id"].value, "train_loss")
    assert len(curve) >= 2 and [m.step for m in curve] == sorted(m.step for m in curve)
    assert tracking.get_run(trained_meta["mlflow_run_id"].value).data.params["source_delta_version"] == \
        str(curated_meta["delta_version"].value)
    artifacts = Path(settings.mlflow_artifact_location.removeprefix("file://"))
    assert list(artifacts.rglob("training_summary.json"))  # the run's artifacts live in the state folder


def test_the_same_run_again_starts_no_job_and_creates_no_version_event_or_lineage(demo):
    import dagster as dg

    from governed_ft_dagster.lineage.facts import openlineage_path
    from governed_ft_dagster.lineage.sinks import read_events

    again = demo.again
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"registered {demo.model} version 1" in again.stdout  # unchanged inputs: no new version
    assert again.stdout.count("no job started") == 2
    with demo.instance() as instance:
        latest_runs = instance.get_runs(limit=1)
        skipped = {e.step_key for e in instance.all_logs(latest_runs[0].run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "STEP_SKIPPED"}
        assert {"finetuned_lora_model", "uc_model_version"} <= skipped
        for key in ("curated_training_table", "finetuned_lora_model", "uc_model_version"):
            assert len(instance.fetch_materializations(dg.AssetKey(key), limit=5).records) == 1, key
    assert read_events(openlineage_path(demo.stack.home)) == demo.events_before_rerun


def test_no_principal_or_admin_token_leaves_the_token_files(demo):
    for output in (demo.first.stdout + demo.first.stderr, demo.again.stdout + demo.again.stderr,
                   demo.lineage_json.stdout, demo.ui_log, demo.log_text):
        assert not [t for t in demo.tokens if t in output]
    leaks = scan_state_folder(demo.stack.home, demo.tokens)
    assert not leaks, leaks[:10]


def latest_metadata(demo: Demo, key: str) -> dict:
    """The metadata of the asset's materialization in the demo's first run (the re-run materializes nothing)."""
    import dagster as dg

    with demo.instance() as instance:
        return dict(instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0]
                    .asset_materialization.metadata)
