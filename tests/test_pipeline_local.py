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
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest
import requests

from conftest import link_group
from test_training_asset import TINY_RUN
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
    verified: subprocess.CompletedProcess
    by_cik: subprocess.CompletedProcess
    by_filing: subprocess.CompletedProcess
    amendment: dict
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
        model = f"{catalog}.{LOCAL_MODEL_NAME}"
        shown = governed_ft("lineage", model, "--version", "1", "--json", env=env, cli=cli, cwd=empty)
        verified = governed_ft("verify", model, "--version", "1", env=env, cli=cli, cwd=empty)
        corpus = json.loads((stack.home / "edgar_sample" / "sample_manifest.json").read_text())
        amendment = next(f for f in corpus["filings"] if f["form"] == "10-K/A" and f["expected_status"] == "extracted")
        by_cik = governed_ft("lineage", "--cik", amendment["cik"], "--json", env=env, cli=cli, cwd=empty)
        by_filing = governed_ft("lineage", "--filing", amendment["amends"], "--json", env=env, cli=cli, cwd=empty)
        events = read_events(openlineage_path(stack.home))
        again = governed_ft("run", env=env, cli=cli, cwd=empty)
        tokens = [read_token(stack.home, p) for p in Principal]
        admin = ServerPaths.under(stack.home).admin_token_file
        tokens += [admin.read_text().strip()] if admin.exists() else []
        yield Demo(stack, env, cli, empty, done, log_file.read_text(errors="replace"), ui_log, served, pages, shown,
                   verified, by_cik, by_filing, amendment, events, again, tokens)
    finally:
        governed_ft("stack", "down", env=env, timeout_s=120, cli=cli, cwd=empty)


CHECKS_PER_ASSET = {"raw_risk_factors": 4, "curated_training_table": 5, "finetuned_lora_model": 1}


def test_the_installed_wheel_runs_stack_up_bootstrap_and_run_from_an_empty_folder(demo):
    done = demo.first
    assert f"registered {demo.model} version 1" in done.stdout
    # A short account: one line per phase with its figures, the full log in the state folder.
    lines = done.stdout.splitlines()
    assert len(lines) <= 15 and "DEBUG" not in done.stdout + done.stderr, done.stdout + done.stderr
    raw_lines = [line for line in lines if line.startswith("raw_risk_factors ")]
    assert len(raw_lines) == 4 and all("filings in" in line and "checks 4/4 passed" in line for line in raw_lines)
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
    assert sorted(r["properties"]["partition"] for r in printed["ingest_runs"]) == [
        "2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"]
    assert all(int(r["properties"]["filings_fetched"]) > 0 for r in printed["ingest_runs"])
    assert [s["name"] for s in printed["sources"]] == ["sec_edgar_sample"]


def test_version_1_is_verified_through_the_catalog_and_found_by_company_and_by_amended_filing(demo):
    # What trained version 1, down to the filing: verify re-reads it through the catalog; impact by company and
    # by filing from the manifest, with the demo corpus's restating 10-K/A superseding the 10-K it amends.
    assert (demo.verified.returncode, demo.verified.stdout) == (0, "match\n"), demo.verified.stdout + demo.verified.stderr
    amendment = demo.amendment
    assert demo.by_cik.returncode == 0, demo.by_cik.stderr
    assert {"model": demo.model, "version": "1"} in json.loads(demo.by_cik.stdout)["model_versions"]
    assert demo.by_filing.returncode == 0, demo.by_filing.stderr
    answer = json.loads(demo.by_filing.stdout)
    assert answer["superseded"] == {amendment["amends"]: [amendment["accession_number"]]}
    assert {(u["accession_number"], u["amends"]) for u in answer["uses"]} == {
        (amendment["accession_number"], amendment["amends"])}


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
                   demo.lineage_json.stdout, demo.verified.stdout + demo.verified.stderr, demo.by_cik.stdout,
                   demo.by_filing.stdout, demo.ui_log, demo.log_text):
        assert not [t for t in demo.tokens if t in output]
    leaks = scan_state_folder(demo.stack.home, demo.tokens)
    assert not leaks, leaks[:10]


def latest_metadata(demo: Demo, key: str) -> dict:
    """The metadata of the asset's materialization in the demo's first run (the re-run materializes nothing)."""
    import dagster as dg

    with demo.instance() as instance:
        return dict(instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0]
                    .asset_materialization.metadata)


def test_training_data_is_traceable_through_an_amendment_a_vacuum_and_a_changed_record(demo):
    """Last in this module, it changes the demo's data: the manifest of each version, impact by filing and company,
    verify (match, a vacuumed version reported gone, a record changed behind the catalog's back named), the tables'
    retention and the check that watches it."""
    import dagster as dg
    from click.testing import CliRunner
    from deltalake import DeltaTable

    from governed_ft_dagster.audit import impact, stored_manifests, verify
    from governed_ft_dagster.cli import main
    from governed_ft_dagster.defs.assets.curated import curated_training_table
    from governed_ft_dagster.defs.assets.model import uc_model_version
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.assets.training import finetuned_lora_model
    from governed_ft_dagster.defs.checks import all_checks
    from governed_ft_dagster.defs.partitions import raw_partitions
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.edgar.sample_corpus import file_amendment
    from governed_ft_dagster.storage import local_path, storage_options, table_configuration

    settings, model, version = demo.settings, demo.model, "1"
    resources = local_resources(settings)
    catalog, registry = resources["catalog"], resources["registry"]
    curated_meta = latest_metadata(demo, "curated_training_table")
    trained_meta = latest_metadata(demo, "finetuned_lora_model")
    rows = catalog.read_table(Principal.TRAIN, CURATED_TABLE)[0].to_pylist()
    by_split = {s: {r["accession_number"] for r in rows if r["split"] == s} for s in ("train", "validation")}
    found = catalog.client(Principal.REGISTRAR)._request(  # type: ignore[attr-defined]
        "GET", f"/api/2.1/unity-catalog/models/{model}/versions/{version}")
    facts = dict(line.split("=", 1) for line in (found.get("comment") or "").splitlines() if "=" in line)

    # The manifest: computed by the training job from the records it read, on the adapter and on the version.
    filings = trained_meta["training_data_filings"].value
    assert {s: {a for listed in filings[s].values() for a in listed} for s in filings} == by_split
    assert trained_meta["training_data_counts"].value == {
        "records": len(rows), "train": sum(r["split"] == "train" for r in rows),
        "validation": sum(r["split"] == "validation" for r in rows),
        "filings": len(by_split["train"] | by_split["validation"]), "companies": len({r["cik"] for r in rows})}
    fingerprint = trained_meta["training_data_fingerprint"].value
    assert facts["governed_ft.training_data_fingerprint"] == fingerprint
    assert facts["governed_ft.training_data_records"] == str(len(rows))
    (v1,), without = stored_manifests(registry, [model], version)
    assert not without and v1.manifest["fingerprint"] == fingerprint
    assert v1.manifest["table"]["delta_version"] == curated_meta["delta_version"].value
    assert v1.manifest["source"] == {"name": f"{settings.catalog_name}.{RAW_TABLE}",
                                     "delta_version": curated_meta["source_version"].value,
                                     "fingerprint": curated_meta["source_fingerprint"].value}
    validation_cik = sorted({r["cik"] for r in rows if r["split"] == "validation"})[0]
    answer = impact(registry, [model], cik=validation_cik)
    assert answer["model_versions"] == [{"model": model, "version": version}]
    assert {u["split"] for u in answer["uses"]} == {"validation"} and answer["uses"][0]["records"] > 0

    # Both governed tables keep every version for the configured retention.
    for relative, owner in ((RAW_TABLE, Principal.INGEST), (CURATED_TABLE, Principal.PREPROCESS)):
        creds = catalog.client(owner).temporary_table_credentials(catalog.table_name(relative), "READ")
        configured = table_configuration(creds.location, storage_options(creds, catalog.endpoint()))
        assert catalog.table_properties().items() <= configured.items(), (relative, configured)

    # An amendment of a 2024 10-K version 1 trained on: it supersedes the original, the next version trains on it.
    root = settings.home / "edgar_sample"
    corpus = json.loads((root / "sample_manifest.json").read_text())
    amended = {f["amends"] for f in corpus["filings"] if f["amends"]}
    listed = next(f for f in corpus["filings"] if f["form"] == "10-K" and f["fiscal_year"] == 2024
                  and f["expected_status"] == "extracted" and f["accession_number"] in by_split["train"]
                  and f["accession_number"] not in amended)
    original, amendment = listed["accession_number"], f"{listed['accession_number'][:10]}-24-000999"
    heading = listed["risk_factor_headings"][0]
    document = (root / listed["archive_path"]).read_bytes()
    assert heading.encode() in document
    file_amendment(root, original, amendment, date.fromisoformat(listed["filing_date"]) + timedelta(days=60),
                   document.replace(heading.encode(), heading.removesuffix(".").encode() + b", as restated.", 1))
    raw_asset = raw_risk_factors_asset(raw_partitions(settings.fiscal_years))
    assets = [raw_asset, curated_training_table, finetuned_lora_model, uc_model_version,
              *all_checks(raw_asset.partitions_def)]
    downstream = dg.AssetSelection.assets(curated_training_table.key, finetuned_lora_model.key, uc_model_version.key)
    with demo.instance() as instance:
        assert dg.materialize([raw_asset], partition_key="2024|10-K", instance=instance, resources=resources).success
        second = dg.materialize(assets, selection=downstream, instance=instance, resources=resources,
                                raise_on_error=False,
                                run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}})
        assert second.success, [e.event_specific_data.error.message for e in second.get_step_failure_events()]
        raw_rows, _ = catalog.read_table(Principal.INGEST, RAW_TABLE, where={"fiscal_year": 2024, "form_type": "10-K"})
        by_accession = {r["accession_number"]: r for r in raw_rows.to_pylist()}
        assert (by_accession[original]["status"], by_accession[original]["superseded_by"]) == ("extracted", amendment)
        assert by_accession[amendment]["amends_accession"] == original and by_accession[amendment]["is_amendment"]
        curated_now, _ = catalog.read_table(Principal.TRAIN, CURATED_TABLE)
        trained_now = {r["accession_number"] for r in curated_now.to_pylist()}
        assert amendment in trained_now and original not in trained_now
        version_2 = str(second.asset_materializations_for_node("uc_model_version")[0].metadata["model_version"].value)
        assert version_2 == "2"
        uses = {(u["version"], u["accession_number"]): u for u in impact(registry, [model], accession=original)["uses"]}
        assert uses[(version, original)]["trained_on_superseded_text"]
        assert uses[(version, original)]["superseded_by"] == [amendment]
        assert uses[(version_2, amendment)]["amends"] == original and (version_2, original) not in uses
        (v2,), _ = stored_manifests(registry, [model], version_2)
        assert verify(catalog, v2)["match"]

        # The retention check warns once a window reaches past a replaced version's retention, and only for those.
        check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("uc_model_version"), "training_data_retained"))
        warned = dg.materialize(assets, selection=check, instance=instance, resources=resources, run_config={
            "ops": {"uc_model_version_training_data_retained": {"config": {"warn_within_days": 4000}}}})
    (evaluation,) = warned.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    at_risk = {(v["table"].rsplit(".", 1)[1], v["version"]) for v in evaluation.metadata["versions"].value
               if v["days_left"] is not None}
    assert at_risk == {("risk_factor_instructions", v1.manifest["table"]["delta_version"]),
                       ("risk_factors", v1.manifest["source"]["delta_version"])}

    # VACUUM with a short retention takes version 1's curated table version away: verify says so.
    creds = catalog.client(Principal.PREPROCESS).temporary_table_credentials(catalog.table_name(CURATED_TABLE), "READ")
    DeltaTable(str(local_path(creds.location))).vacuum(retention_hours=0, enforce_retention_duration=False,
                                                       dry_run=False)
    gone = verify(catalog, v1)
    assert not gone["match"] and gone["curated"]["status"] == "gone" and gone["raw"]["status"] == "match"
    assert "deleted by VACUUM" in gone["curated"]["detail"][0] and v1.where in gone["curated"]["detail"][0]

    # One record of version 2's data changed behind the catalog's back: verify names it and exits non-zero.
    record = sorted(r["record_id"] for r in curated_now.to_pylist() if r["accession_number"] == amendment)[0]
    change_record_behind_the_catalog(local_path(creds.location), v2.manifest["table"]["delta_version"], record)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in demo.env.items():
            if key.startswith("GOVERNED_FT_"):
                patch.setenv(key, value)
        printed = CliRunner().invoke(main, ["verify", model, "--version", version_2])
    assert printed.exit_code == 1 and f"{amendment}: 1 record changed: {record}" in printed.stdout, printed.output
    assert verify(catalog, v2)["curated"]["records_changed"] == {amendment: [record]}


def change_record_behind_the_catalog(location: Path, version: int, record_id: str) -> None:
    """Edit one record's answer in the data file of the version that holds it, as a writer with direct storage
    access would, and the file's size in the table's log so the version still opens."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    for uri in DeltaTable(str(location), version=version).file_uris():
        path = Path(uri.removeprefix("file://"))
        table = pq.read_table(path)
        ids = table.column("record_id").to_pylist()
        if record_id not in ids:
            continue
        records = table.to_pylist()
        answer = records[ids.index(record_id)]["messages"][-1]
        answer["content"] = answer["content"] + " (edited)"
        pq.write_table(pa.Table.from_pylist(records, schema=table.schema), path)
        for log in sorted((location / "_delta_log").glob("*.json")):
            lines = log.read_text().splitlines()
            actions = [json.loads(line) for line in lines]
            for action in actions:
                if "add" in action and action["add"]["path"] == path.name:
                    action["add"]["size"] = path.stat().st_size
                    action["add"].pop("stats", None)
            log.write_text("".join(json.dumps(a) + "\n" for a in actions))
        return
    raise AssertionError(f"record {record_id} is in no data file of version {version}")
