"""The README's main command on the embedded default: stack up, bootstrap and run against the real catalog server."""

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
from pathlib import Path
from typing import Iterator

import requests

import pyarrow as pa

from conftest import SHARED_SAMPLES, link_group
from test_curated_asset import tiny_base  # noqa: F401  (fixture)
from test_training_asset import TINY_RUN
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, MODEL_NAME, RAW_TABLE
from governed_ft_dagster.stack.bootstrap import read_token
from governed_ft_dagster.stack.server import ServerPaths, free_port_pair

CLI = Path(sys.executable).with_name("governed-ft")
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


def test_the_installed_wheel_runs_stack_up_bootstrap_and_run_from_an_empty_folder(local_stack, uc_server_jars,
                                                                                  spark_home, stack_env,
                                                                                  installed_wheel, tmp_path):
    link_group(local_stack.home, uc_server_jars, "uc-server")
    link_group(local_stack.home, spark_home, "spark")
    env = {**os.environ, **stack_env}
    env.pop("DAGSTER_HOME", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    cli = installed_wheel / "governed-ft"
    where = subprocess.run([str(installed_wheel / "python"), "-c", "import governed_ft_dagster, job_scripts; "
                            "print(governed_ft_dagster.__file__); print(job_scripts.__file__)"],
                           cwd=empty, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(installed_wheel.parent) for p in where), where
    catalog = local_stack.settings.catalog_name
    model = f"{catalog}.{MODEL_NAME}"
    try:
        for command in (("stack", "up"), ("bootstrap",), ("run",)):
            done = governed_ft(*command, env=env, cli=cli, cwd=empty)
            assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        assert f"registered {model} version 1" in done.stdout
        assert list(empty.iterdir()) == []  # everything went to the state folder

        # A short account: one line per phase with its figures, the full log in the state folder.
        lines = done.stdout.splitlines()
        assert len(lines) <= 15 and "DEBUG" not in done.stdout + done.stderr, done.stdout + done.stderr
        raw_lines = [line for line in lines if line.startswith("raw_risk_factors ")]
        assert len(raw_lines) == 4 and all("filings in" in line and "checks 3/3 passed" in line for line in raw_lines)
        assert any(line.strip().startswith("curated:") and "records" in line for line in lines)
        assert any(line.strip().startswith("training:") and "eval loss" in line for line in lines)
        assert any(line.startswith("lineage:") and "@" in line for line in lines)
        log_file = Path(lines[-1].split("full log: ", 1)[1].split(";", 1)[0])
        assert log_file.is_relative_to(local_stack.home) and "STEP_SUCCESS" in log_file.read_text(errors="replace")

        # The UI command serves the instance the run wrote to: runs, materializations and passed checks.
        port = free_port_pair()
        with served_ui(env, cli, empty, port) as served:
            # As a person sees it: all four assets materialized (raw: every partition), each asset's checks passed.
            browser = tmp_path / "browser"
            listed = page_text(f"http://127.0.0.1:{port}/assets", "Materialized •", browser)
            assert listed.count("Materialized •") == 3, listed[:3000]
            partitions = page_text(f"http://127.0.0.1:{port}/assets/raw_risk_factors?view=partitions",
                                   "Materialized (4)", browser)
            assert all(s in partitions for s in ("Materialized (4)", "Missing (0)", "Failed (0)")), partitions[:3000]
            for key, count in (("raw_risk_factors", 3), ("curated_training_table", 5), ("finetuned_lora_model", 1)):
                checks = page_text(f"http://127.0.0.1:{port}/assets/{key}?view=checks", f"Checks ({count})", browser)
                assert f"Checks ({count})" in checks and checks.count(" Succeeded ") == count, checks[:3000]
                assert "Failed" not in checks and "Evaluation result Passed" in checks, checks[:3000]
        assert len(served["runsOrError"]["results"]) == 5
        assert {r["status"] for r in served["runsOrError"]["results"]} == {"SUCCESS"}
        nodes = {"/".join(n["assetKey"]["path"]): n for n in served["assetNodes"]}
        assert all(nodes[key]["assetMaterializations"] for key in
                   ("raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version"))
        evaluated = {c["name"]: c["executionForLatestMaterialization"] for n in nodes.values()
                     for c in n["assetChecksOrError"]["checks"]}
        assert evaluated["adapter_beats_base_model"]["evaluation"]["success"] is True
        assert evaluated["curated_token_budget"]["evaluation"]["success"] is True

        shown = governed_ft("lineage", model, "--version", "1", "--json", env=env, cli=cli, cwd=empty)
        assert shown.returncode == 0, shown.stderr
        chain = json.loads(shown.stdout)
        assert chain["raw_table"]["full_name"] == f"{catalog}.{RAW_TABLE}"
        assert chain["curated_table"]["full_name"] == f"{catalog}.{CURATED_TABLE}"
        assert chain["training_run"] and chain["preprocessing_run"]
        assert sorted(r["properties"]["partition"] for r in chain["ingest_runs"]) == [
            "2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"]
        assert [s["name"] for s in chain["sources"]] == ["sec_edgar_sample"]

        # What trained version 1, down to the filing: verify re-reads it through the catalog; impact by company and
        # by filing from the manifest, with the demo corpus's restating 10-K/A superseding the 10-K it amends.
        verified = governed_ft("verify", model, "--version", "1", env=env, cli=cli, cwd=empty)
        assert (verified.returncode, verified.stdout) == (0, "match\n"), verified.stdout + verified.stderr
        corpus = json.loads((local_stack.home / "edgar_sample" / "sample_manifest.json").read_text())
        amendment = next(f for f in corpus["filings"] if f["form"] == "10-K/A" and f["expected_status"] == "extracted")
        by_cik = governed_ft("lineage", "--cik", amendment["cik"], "--json", env=env, cli=cli, cwd=empty)
        assert by_cik.returncode == 0, by_cik.stderr
        assert {"model": model, "version": "1"} in json.loads(by_cik.stdout)["model_versions"]
        by_filing = governed_ft("lineage", "--filing", amendment["amends"], "--json", env=env, cli=cli, cwd=empty)
        answer = json.loads(by_filing.stdout)
        assert answer["superseded"] == {amendment["amends"]: [amendment["accession_number"]]}
        assert {(u["accession_number"], u["amends"]) for u in answer["uses"]} == {
            (amendment["accession_number"], amendment["amends"])}

        again = governed_ft("run", env=env, cli=cli, cwd=empty)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"registered {model} version 1" in again.stdout  # unchanged inputs: no new version
        assert again.stdout.count("no job started") == 2
        tokens = [read_token(local_stack.home, p) for p in Principal]
        admin = ServerPaths.under(local_stack.home).admin_token_file
        tokens += [admin.read_text().strip()] if admin.exists() else []
        for output in (done.stdout + done.stderr, again.stdout + again.stderr, shown.stdout):
            assert not [t for t in tokens if t in output]
        leaks = scan_state_folder(local_stack.home, tokens)
        assert not leaks, leaks[:10]
    finally:
        governed_ft("stack", "down", env=env, timeout_s=120, cli=cli, cwd=empty)


def test_the_whole_graph_in_process_on_the_local_stack_from_the_shared_filings(running_stack, edgar,
                                                                              tiny_base):
    import dagster as dg

    from governed_ft_dagster.defs.assets.curated import curated_training_table
    from governed_ft_dagster.defs.assets.model import uc_model_version
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.partitions import raw_partitions
    from governed_ft_dagster.defs.assets.training import finetuned_lora_model
    from governed_ft_dagster.defs.checks import all_checks
    from governed_ft_dagster.cli.lineage import read_lineage
    from governed_ft_dagster.lineage.derive import upstream_chain
    from governed_ft_dagster.lineage.facts import openlineage_path
    from governed_ft_dagster.lineage.sinks import read_events
    from governed_ft_dagster.defs.resources import local_resources
    from governed_ft_dagster.defs.resources.base_model import BaseModelResource
    from governed_ft_dagster.stack.bootstrap import bootstrap
    from governed_ft_dagster.training.base_model import load_tokenizer

    bootstrap(running_stack)
    settings = running_stack.settings
    resources = {**local_resources(settings), "edgar": edgar, "base_model": BaseModelResource(model_ref=str(tiny_base))}
    catalog = resources["catalog"]
    raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
    assets = [raw_risk_factors, curated_training_table, finetuned_lora_model, uc_model_version,
              *all_checks(raw_risk_factors.partitions_def)]
    downstream = dg.AssetSelection.assets(curated_training_table.key, finetuned_lora_model.key, uc_model_version.key)

    def run_graph(instance):
        for partition in ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"):
            assert dg.materialize([raw_risk_factors], partition_key=partition, instance=instance,
                                  resources=resources).success
        result = dg.materialize(assets, selection=downstream, instance=instance, resources=resources,
                                raise_on_error=False, run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}})
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
        return result

    with dg.DagsterInstance.ephemeral() as instance:
        first = run_graph(instance)
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks and all(checks.values()), checks
        curated_meta = first.asset_materializations_for_node("curated_training_table")[0].metadata
        model_meta = first.asset_materializations_for_node("uc_model_version")[0].metadata

        # The curated table is registered and readable through the catalog as the train principal.
        curated, version_read = catalog.read_table(Principal.TRAIN, CURATED_TABLE)
        rows = curated.to_pylist()
        assert version_read == curated_meta["delta_version"].value
        assert curated_meta["rows_out"].value == len(rows) > 0
        assert sum(s["records"] for s in curated_meta["splits"].value.values()) == len(rows)
        companies = {split: {r["cik"] for r in rows if r["split"] == split} for split in ("train", "validation")}
        assert companies["train"] and companies["validation"] and not companies["train"] & companies["validation"]
        tokenizer = load_tokenizer(tiny_base)
        assert all(r["n_tokens"] <= 1024 for r in rows)
        for row in rows[:: max(1, len(rows) // 8)]:
            assert len(tokenizer.apply_chat_template(row["messages"], tokenize=True)["input_ids"]) == row["n_tokens"]

        # The model version carries its sources, and the lineage chain names the Delta versions actually read.
        model, version = model_meta["model_name"].value, str(model_meta["model_version"].value)
        found = catalog.client(Principal.REGISTRAR)._request(  # type: ignore[attr-defined]
            "GET", f"/api/2.1/unity-catalog/models/{model}/versions/{version}")
        facts = dict(line.split("=", 1) for line in (found.get("comment") or "").splitlines() if "=" in line)
        assert f"{settings.catalog_name}.{CURATED_TABLE}" in facts["governed_ft.source_tables"]
        graph, _ = read_lineage(settings, model, version)
        chain = upstream_chain(graph, model, version)
        assert int(chain["curated_table"]["version_read"]) == curated_meta["delta_version"].value
        assert int(chain["raw_table"]["version_read"]) == curated_meta["source_version"].value
        assert chain["training_run"] and chain["preprocessing_run"]
        events_before = read_events(openlineage_path(running_stack.home))

        # Each materialization links to what a person opens next: the training run's loss curve, the registration.
        import mlflow

        trained_meta = first.asset_materializations_for_node("finetuned_lora_model")[0].metadata
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

        again = run_graph(instance)
        # Unchanged inputs: curated yields nothing, so Dagster skips training and registration; no event, no version.
        assert not [key for key in ("curated_training_table", "finetuned_lora_model", "uc_model_version")
                    if again.asset_materializations_for_node(key)]
        skipped = {e.step_key for e in again.all_events if e.event_type_value == "STEP_SKIPPED"}
        assert {"finetuned_lora_model", "uc_model_version"} <= skipped
        latest = instance.fetch_materializations(uc_model_version.key, limit=1).records[0]
        assert str(latest.asset_materialization.metadata["model_version"].value) == version
        assert read_events(openlineage_path(running_stack.home)) == events_before

        assert_training_data_is_traceable(instance, resources, settings, first, rows, facts, chain, model, version,
                                          (raw_risk_factors, assets, downstream))


def assert_training_data_is_traceable(instance, resources, settings, first, rows, facts, chain, model, version,
                                      graph):
    """From the run above and one more after an amendment: the manifest of each version, impact by filing and
    company, verify (match, a vacuumed version reported gone, a record changed behind the catalog's back named),
    the chain from the ingest runs, the tables' retention and the check that watches it."""
    import dagster as dg
    from click.testing import CliRunner
    from deltalake import DeltaTable

    from governed_ft_dagster.audit import impact, stored_manifests, verify
    from governed_ft_dagster.cli import main
    from governed_ft_dagster.storage import local_path, storage_options, table_configuration

    catalog, registry = resources["catalog"], resources["registry"]
    curated_meta = first.asset_materializations_for_node("curated_training_table")[0].metadata
    trained_meta = first.asset_materializations_for_node("finetuned_lora_model")[0].metadata
    by_split = {s: {r["accession_number"] for r in rows if r["split"] == s} for s in ("train", "validation")}

    # The manifest: computed by the training job from the records it read, on the adapter and on the version.
    filings = trained_meta["training_data_filings"].value
    assert {s: {a for found in filings[s].values() for a in found} for s in filings} == by_split
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
    report = verify(catalog, v1)
    assert report["match"] and (report["curated"]["status"], report["raw"]["status"]) == ("match", "match"), report
    validation_cik = sorted({r["cik"] for r in rows if r["split"] == "validation"})[0]
    answer = impact(registry, [model], cik=validation_cik)
    assert answer["model_versions"] == [{"model": model, "version": version}]
    assert {u["split"] for u in answer["uses"]} == {"validation"} and answer["uses"][0]["records"] > 0

    # The chain starts at the ingest run of each raw partition, and the EDGAR-shaped source they fetched from.
    partitions = ["2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"]
    assert sorted(r["properties"]["partition"] for r in chain["ingest_runs"]) == partitions
    assert all(int(r["properties"]["filings_fetched"]) > 0 for r in chain["ingest_runs"])
    assert [(s["type"], s["name"]) for s in chain["sources"]] == [("source", "sec_edgar_folder")]

    # Both governed tables keep every version for the configured retention.
    for relative, owner in ((RAW_TABLE, Principal.INGEST), (CURATED_TABLE, Principal.PREPROCESS)):
        creds = catalog.client(owner).temporary_table_credentials(catalog.table_name(relative), "READ")
        configured = table_configuration(creds.location, storage_options(creds, catalog.endpoint()))
        assert catalog.table_properties().items() <= configured.items(), (relative, configured)

    # An amendment of a filing version 1 trained on: it supersedes the original, and the next version trains on it.
    from datetime import date

    from governed_ft_dagster.edgar.sample_corpus import file_amendment

    original, amendment = "0001045810-24-000029", "0001045810-24-000177"
    assert original in by_split["train"]
    document = (SHARED_SAMPLES / "filings" / "NVDA_10-K_2024-01-28_0001045810-24-000029.html").read_bytes()
    file_amendment(Path(resources["edgar"].local_root), original, amendment, date(2024, 5, 6),
                   document.replace(b" adversely ", b" materially and adversely "))
    raw_asset, assets, downstream = graph
    assert dg.materialize([raw_asset], partition_key="2024|10-K", instance=instance, resources=resources).success
    second = dg.materialize(assets, selection=downstream, instance=instance, resources=resources,
                            raise_on_error=False, run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}})
    assert second.success, [e.event_specific_data.error.message for e in second.get_step_failure_events()]
    raw_rows, _ = catalog.read_table(Principal.INGEST, RAW_TABLE, where={"fiscal_year": 2024, "form_type": "10-K"})
    by_accession = {r["accession_number"]: r for r in raw_rows.to_pylist()}
    assert (by_accession[original]["status"], by_accession[original]["superseded_by"]) == ("extracted", amendment)
    assert by_accession[amendment]["amends_accession"] == original and by_accession[amendment]["is_amendment"]
    curated_now, _ = catalog.read_table(Principal.TRAIN, CURATED_TABLE)
    trained_now = {r["accession_number"] for r in curated_now.to_pylist()}
    assert amendment in trained_now and original not in trained_now
    version_2 = str(second.asset_materializations_for_node("uc_model_version")[0].metadata["model_version"].value)
    assert version_2 == str(int(version) + 1)
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
