"""uc_model_version on the aws world: registration, lineage from the asset graph, idempotency, failures, the CLI."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from aws_fixtures import BUCKET, CATALOG, REGION, application_id, start_registry_world
from conftest import free_port, tiny_lora_adapter
from fake_mlflow_uc import PREFIX
from governed_ft_dagster.defs.assets.model import uc_model_version
from governed_ft_dagster.defs.checks import adapter_beats_base_model
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.cli import main
from governed_ft_dagster.cli.lineage import graph_from_databricks
from governed_ft_dagster.governance import CURATED_TABLE, PRODUCTION_MODEL_NAME, RAW_TABLE
from governed_ft_dagster.lineage.derive import derive_lineage, metadata_name, upstream_chain
from governed_ft_dagster.lineage import manifest
from governed_ft_dagster.lineage.facts import lineage_nodes_from_graph
from governed_ft_dagster.lineage.sinks import OpenLineageFileSink
from governed_ft_dagster.registry import (
    TAG_ARTIFACT_SHA256,
    TAG_HYPERPARAMETERS_SHA256,
    artifact_sha256,
    hyperparameters_sha256,
)
from governed_ft_dagster.defs.resources.registry import (
    DatabricksLineageResource,
    DatabricksRegistryResource,
    openlineage_path,
)
from test_lineage import standard_nodes
from fake_lineage import LT

MODEL = f"{CATALOG}.{PRODUCTION_MODEL_NAME}"
RAW = f"{CATALOG}.{RAW_TABLE}"
CURATED = f"{CATALOG}.{CURATED_TABLE}"
EMR_RUN = "00fmq3a1b2c3d4e5"
TRAIN_JOB = "governed-ft-train-20250101-120000"
EMR = metadata_name("EMRServerlessJobRun", EMR_RUN)
SAGEMAKER = metadata_name("SageMakerTrainingJob", TRAIN_JOB)
HYPERPARAMETERS = {"lora_r": 4, "learning_rate": 2e-4, "epochs": 1, "max_tokens": 1024}
YEARS = dg.StaticPartitionsDefinition(["2023", "2024"])
EDGAR_SOURCE = {"name": "sec_edgar", "entity_type": "FilingArchive", "properties": {"url": "https://www.sec.gov"}}
EDGAR = "sec_edgar"
RAW_VERSIONS = {"2023": 2, "2024": 3}
CURATED_VERSION = 7
CORPUS = [
    "Risk factors: our business depends on suppliers, interest rates and cybersecurity incidents.",
    "We may be unable to protect our intellectual property, and litigation could harm our results.",
] * 30


TRAINED_CIK, VALIDATION_CIK = "0000320193", "0001045810"
TRAINED_ON = "0000320193-24-000123"
MANIFEST = manifest.build_manifest(
    [{"record_id": f"r{i}", "accession_number": TRAINED_ON, "cik": TRAINED_CIK, "split": "train",
      "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "heading"}]}
     for i, text in enumerate(CORPUS[:2])],
    [{"record_id": "v0", "accession_number": "0001045810-24-000029", "cik": VALIDATION_CIK, "split": "validation",
      "messages": [{"role": "user", "content": CORPUS[0]}, {"role": "assistant", "content": "heading"}]}],
    table=CURATED, delta_version=CURATED_VERSION, source_table=RAW, source_version=RAW_VERSIONS["2024"])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Ministral3 base and a LoRA adapter saved by peft with its training-data manifest, as the training job
    leaves them."""
    base, model_dir = tiny_lora_adapter(tmp_path_factory.mktemp("adapter"), CORPUS, seed=2, name="model")
    (model_dir / manifest.MANIFEST_FILE).write_bytes(manifest.dumps(MANIFEST))
    return base, model_dir


@pytest.fixture
def world(monkeypatch):
    world, server, registry, service = start_registry_world(monkeypatch, free_port())
    for table in (RAW, CURATED):  # the stub assets report these tables; lineage may only name registered ones
        world.databricks.add_table(table, f"s3://{BUCKET}/{table.split('.', 1)[1].replace('.', '/tables/')}")
    yield world, registry, service
    world.databricks.stop()
    server.stop()


def stub_assets(model_dir: str, adapter_location: str, base: str, adapter_sha256: str,
                state: dict[str, Any] | None = None) -> list[dg.AssetsDefinition]:
    """Upstream assets that report the metadata contract and data versions of the real ones, without running any job.

    state (curated Delta version and EMR run, eval loss) may change between runs, as a rebuild or retraining would."""
    state = state if state is not None else {}

    @dg.asset(name="raw_risk_factors", partitions_def=YEARS, group_name="ingestion")
    def raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        version = RAW_VERSIONS[context.partition_key]
        return dg.MaterializeResult(metadata={
            "catalog_table": RAW, "delta_version": version, "delta_version_written": version,
            "job_run_kind": "EdgarIngestRun", "job_run_id": f"{context.run.run_id}:{context.partition_key}",
            "job_properties": dg.MetadataValue.json({"filings_fetched": 3, "source_url": "https://www.sec.gov"}),
            "external_source": dg.MetadataValue.json(EDGAR_SOURCE)}, data_version=dg.DataVersion(str(version)))

    @dg.asset(name="curated_training_table", deps=[dg.AssetKey("raw_risk_factors")], group_name="curation")
    def curated() -> dg.MaterializeResult:
        version = state.get("curated_version", CURATED_VERSION)
        return dg.MaterializeResult(metadata={
            "catalog_table": CURATED, "delta_version": version, "source_table": RAW,
            "source_version": state.get("raw_version", RAW_VERSIONS["2024"]), "job_run_kind": "EMRServerlessJobRun",
            "job_run_id": state.get("emr_run", EMR_RUN),
            "job_properties": dg.MetadataValue.json({"application_id": "00fmq3", "code_version": "git:4f2a9c1"}),
        }, data_version=dg.DataVersion(str(version)))

    @dg.asset(name="finetuned_lora_model", deps=[dg.AssetKey("curated_training_table")], group_name="training")
    def finetuned() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={
            "source_table": CURATED, "source_version": state.get("curated_version", CURATED_VERSION),
            "job_run_kind": "SageMakerTrainingJob", "job_run_id": TRAIN_JOB, "adapter_sha256": adapter_sha256,
            "job_properties": dg.MetadataValue.json({"training_job_arn": f"arn:aws:sagemaker:{REGION}:123456789012:"
                                                                         f"training-job/{TRAIN_JOB}"}),
            "adapter_location": adapter_location, "model_dir": model_dir,
            "hyperparameters": dg.MetadataValue.json(HYPERPARAMETERS),
            "hyperparameters_sha256": hyperparameters_sha256(HYPERPARAMETERS), "base_model": base,
            "mlflow_run_id": "0123456789abcdef0123456789abcdef", "eval_loss": state.get("eval_loss", 2.31),
            "base_eval_loss": 3.05, "training_data_fingerprint": MANIFEST["fingerprint"],
            "training_data_counts": dg.MetadataValue.json(MANIFEST["counts"]),
        }, data_version=dg.DataVersion(adapter_sha256))

    return [raw, curated, finetuned]


class Pipeline:
    """The stub upstream assets and uc_model_version on one Dagster instance and one set of resources."""

    def __init__(self, world, tmp_path: Path, model_dir: str, adapter_location: str, base: str,
                 registry_host: str | None = None, adapter_files: Path | None = None,
                 state: dict[str, Any] | None = None):
        sha = artifact_sha256(adapter_files or Path(model_dir))
        self.state = state if state is not None else {}
        self.assets = [*stub_assets(model_dir, adapter_location, base, sha, self.state), uc_model_version,
                       adapter_beats_base_model]
        (tmp_path / "dagster").mkdir()
        self.instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))  # run-sharded SQLite, as deployed
        self.tracking_db = tmp_path / "mlflow.db"
        self.resources = {
            "catalog": world.catalog_resource(),
            "registry": DatabricksRegistryResource(
                host=registry_host or world.databricks.url, region=REGION, aws_endpoint_url=world.moto_url,
                tracking_uri=f"sqlite:///{self.tracking_db}", artifact_location=(tmp_path / "mlartifacts").as_uri(),
                experiment="governed-ft"),
            "lineage": DatabricksLineageResource(host=world.databricks.url, region=REGION,
                                                 aws_endpoint_url=world.moto_url, timeout_s=10),
        }
        for partition in YEARS.get_partition_keys():
            self.run(["raw_risk_factors"], partition_key=partition)

    def run(self, selection: list[str], **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(self.assets, resources=self.resources, instance=self.instance, selection=selection,
                              raise_on_error=False, **kwargs)

    def all(self) -> dg.ExecuteInProcessResult:
        return self.run(["curated_training_table", "finetuned_lora_model", "uc_model_version"])

    def model_only(self) -> dg.ExecuteInProcessResult:
        return self.run(["uc_model_version"])


def registered(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    assert result.success, failure(result)
    (materialization,) = result.asset_materializations_for_node("uc_model_version")
    return {k: v.value for k, v in materialization.metadata.items()}


def failure(result: dg.ExecuteInProcessResult) -> Any:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.user_failure_data


def uc_calls(fake) -> list[str]:
    return [f"{r.method} {r.path.removeprefix(PREFIX)}" for r in fake.calls(PREFIX)]


def writes(fake) -> list[str]:
    return [p for p in fake.paths(LT) if not p.startswith("GET ")]


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def test_registers_the_adapter_with_its_sources_and_pushes_lineage_once(world, adapter, tmp_path, monkeypatch):
    world, registry, service = world
    fake = world.databricks
    base, model_dir = adapter
    pipeline = Pipeline(world, tmp_path, str(model_dir), f"s3://{BUCKET}/ml/training/{TRAIN_JOB}/model", str(base))
    fake.clear_requests()

    first = registered(pipeline.all())
    assert (first["model_name"], first["model_version"], first["created"]) == (MODEL, 1, True)
    assert first["lineage"] == {"created": 13, "updated": 0, "unchanged": 0}
    assert (first["lineage_external_metadata"], first["lineage_relationships"]) == (5, 8)
    assert first["lineage_command"] == f"`governed-ft lineage {MODEL} --version 1 --json`"
    assert first["lineage_where"] == f"{fake.url}/explore/data/models/{CATALOG}/ml/{PRODUCTION_MODEL_NAME.split('.')[1]}/version/1"
    version = registry.versions[MODEL]["1"]
    tags = version["tags"]
    assert version["status"] == "READY" and tags["governed_ft.mlflow_run_id"] == first["mlflow_run_id"]
    assert tags["governed_ft.source_tables"] == f"{CURATED}@{CURATED_VERSION},{RAW}@3"
    assert tags["governed_ft.preprocessing_job"] == f"EMRServerlessJobRun:{EMR_RUN}"
    assert tags["governed_ft.training_job"] == f"SageMakerTrainingJob:{TRAIN_JOB}"
    assert tags[TAG_HYPERPARAMETERS_SHA256] == hyperparameters_sha256(HYPERPARAMETERS)
    assert tags[TAG_ARTIFACT_SHA256] == artifact_sha256(model_dir)
    assert tags["governed_ft.training_mlflow_run_id"] == "0123456789abcdef0123456789abcdef"
    assert tags["governed_ft.code_version"].startswith(("git:", "package:"))
    assert tags["governed_ft.training_data_fingerprint"] == MANIFEST["fingerprint"]
    assert (tags["governed_ft.training_data_train"], tags["governed_ft.training_data_validation"],
            tags["governed_ft.training_data_filings"]) == ("2", "1", "2")
    assert tags["governed_ft.attachment.training_data_manifest"] == "artifacts/training_data_manifest.json"
    assert f"{CURATED} at Delta version {CURATED_VERSION}" in version["description"]
    assert {r.principal for r in fake.calls(PREFIX)} == {application_id(Principal.REGISTRAR)}

    assert writes(fake) == [f"POST {LT}/external-metadata"] * 5 + [f"POST {LT}/external-lineage"] * 8
    assert {r.principal for r in fake.calls(LT)} == {application_id(Principal.REGISTRAR)}
    ingest = {m["properties"]["partition"]: m["name"] for m in service.metadata.values()
              if m["entity_type"] == "EdgarIngestRun"}
    assert set(ingest) == {"2023", "2024"}
    assert {(m["name"], m["system_type"], m["entity_type"]) for m in service.metadata.values()} == {
        (EMR, "OTHER", "EMRServerlessJobRun"), (SAGEMAKER, "OTHER", "SageMakerTrainingJob"),
        (EDGAR, "OTHER", "FilingArchive"), *((name, "OTHER", "EdgarIngestRun") for name in ingest.values())}
    assert service.metadata[ingest["2024"]]["properties"]["filings_fetched"] == "3"
    assert service.metadata[EDGAR]["properties"]["url"] == "https://www.sec.gov"
    assert service.metadata[SAGEMAKER]["properties"]["training_job_arn"].endswith(TRAIN_JOB)
    stored = {(canonical(r["source"]), canonical(r["target"])): r["properties"] for r in service.relationships}
    raw, curated = {"table": {"name": RAW}}, {"table": {"name": CURATED}}
    emr, sagemaker = {"external_metadata": {"name": EMR}}, {"external_metadata": {"name": SAGEMAKER}}
    model_version = {"model_version": {"name": MODEL, "version": "1"}}
    expected = [
        (raw, emr, "delta_version_read", "3"),
        (emr, curated, "delta_version_written", str(CURATED_VERSION)),
        (curated, sagemaker, "delta_version_read", str(CURATED_VERSION)),
        (sagemaker, model_version, "model_version", "1"),
        *(({"external_metadata": {"name": EDGAR}}, {"external_metadata": {"name": run}}, "partition", partition)
          for partition, run in ingest.items()),
        *(({"external_metadata": {"name": run}}, raw, "delta_version_written", str(RAW_VERSIONS[partition]))
          for partition, run in ingest.items()),
    ]
    assert set(stored) == {(canonical(source), canonical(target)) for source, target, _, _ in expected}
    for source, target, key, value in expected:
        assert stored[(canonical(source), canonical(target))][key] == value

    fake.clear_requests()
    again = registered(pipeline.model_only())
    assert (again["model_version"], again["created"], again["mlflow_run_id"]) == (1, False, first["mlflow_run_id"])
    assert again["lineage"] == {"created": 0, "updated": 0, "unchanged": 13}
    assert [c for c in uc_calls(fake) if not c.startswith("GET ")] == []
    assert writes(fake) == [] and list(registry.versions[MODEL]) == ["1"]
    assert len(service.metadata) == 5 and len(service.relationships) == 8

    lineage = pipeline.resources["lineage"]
    chain = upstream_chain(graph_from_databricks(lineage.workspace_client(), MODEL, "1"), MODEL, "1")
    assert_standard_chain(chain, raw_version="3", curated_version=str(CURATED_VERSION))
    for key, value in {"GOVERNED_FT_DEPLOYMENT": "aws", "DATABRICKS_HOST": fake.url, "AWS_REGION": REGION,
                       "AWS_ENDPOINT_URL": world.moto_url}.items():
        monkeypatch.setenv(key, value)
    printed = CliRunner().invoke(main, ["lineage", MODEL, "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == chain

    # Impact from the manifest attached to the version, read with the registry's temporary credentials.
    fake.clear_requests()
    printed = CliRunner().invoke(main, ["lineage", "--cik", TRAINED_CIK.lstrip("0"), "--json"])
    assert printed.exit_code == 0, printed.output
    answer = json.loads(printed.stdout)
    assert answer["model_versions"] == [{"model": MODEL, "version": "1"}]
    assert [(u["accession_number"], u["split"], u["records"]) for u in answer["uses"]] == [(TRAINED_ON, "train", 2)]
    assert any(c.endswith("generate-temporary-credentials") for c in uc_calls(fake))
    assert not [r for r in fake.requests if "table" in r.path]  # answered without reading any table
    by_filing = CliRunner().invoke(main, ["lineage", "--filing", "0001045810-24-000029"])
    assert by_filing.exit_code == 0 and "v1: 0001045810-24-000029 (CIK 0001045810, validation, 1 records)" in \
        by_filing.stdout, by_filing.output

def assert_standard_chain(chain: dict[str, Any], *, raw_version: str, curated_version: str, model: str = MODEL,
                          version: str = "1", ingest_partitions: tuple[str, ...] = ("2023", "2024")) -> None:
    assert (chain["model_version"]["full_name"], chain["model_version"]["version"]) == (model, version)
    assert (chain["training_run"]["kind"], chain["training_run"]["run_id"]) == ("SageMakerTrainingJob", TRAIN_JOB)
    assert chain["curated_table"]["full_name"].endswith(CURATED_TABLE)
    assert chain["curated_table"]["version_read"] == curated_version
    preprocessing = chain["preprocessing_run"]
    assert (preprocessing["kind"], preprocessing["run_id"]) == ("EMRServerlessJobRun", EMR_RUN)
    assert chain["raw_table"]["full_name"].endswith(RAW_TABLE) and chain["raw_table"]["version_read"] == raw_version
    # the chain starts at the ingest run of each partition that wrote the raw table up to the version read, and
    # the source they fetched from
    runs = chain["ingest_runs"]
    assert sorted(r["properties"]["partition"] for r in runs) == list(ingest_partitions)
    assert {r["kind"] for r in runs} <= {"EdgarIngestRun"} and len(chain["raw_table"]["upstream"]) == len(runs)
    assert [(s["type"], s["name"]) for s in chain["sources"]] == ([("source", EDGAR)] if runs else [])


def test_a_registrar_without_create_model_fails_before_any_mlflow_run(world, adapter, tmp_path):
    world, registry, service = world
    fake = world.databricks
    registrar = application_id(Principal.REGISTRAR)
    fake.revoke("schema", f"{CATALOG}.ml", registrar, "CREATE_MODEL")
    pipeline = Pipeline(world, tmp_path, str(adapter[1]), "", str(adapter[0]))

    result = pipeline.all()
    assert not result.success
    refused = failure(result)
    assert "CREATE MODEL" in refused.description and registrar in refused.description
    assert f"{CATALOG}.ml" in refused.description
    assert refused.metadata["missing_privileges"].value == "CREATE MODEL"
    assert uc_calls(fake) == [] and registry.versions == {} and MODEL not in fake.models
    assert not pipeline.tracking_db.exists() and writes(fake) == []


class Forwarder:
    """A loopback TCP port forwarded to another one; stop() makes it unreachable, start() brings it back."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Forwarder":
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.05)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stopping.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                with self._lock:
                    self._open.update((client, upstream))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def test_an_unreachable_registry_fails_in_one_sentence_and_a_rerun_registers_once(world, adapter, tmp_path):
    world, registry, service = world
    fake = world.databricks
    forwarder = Forwarder(fake.port).start()
    pipeline = Pipeline(world, tmp_path, str(adapter[1]), "", str(adapter[0]), registry_host=forwarder.url)
    forwarder.stop()
    try:
        result = pipeline.all()
        assert not result.success
        message = failure(result).description
        assert message.endswith(".") and "\n" not in message and message.count(". ") == 0
        assert "cannot be reached" in message and forwarder.url in message and "DATABRICKS_HOST" in message
        assert registry.versions == {} and writes(fake) == []

        forwarder.start()
        back = registered(pipeline.model_only())
        assert (back["model_version"], back["created"]) == (1, True)
        again = registered(pipeline.model_only())
        assert (again["model_version"], again["created"]) == (1, False)
    finally:
        forwarder.stop()
    assert list(registry.versions[MODEL]) == ["1"]
    assert uc_calls(fake).count("POST /model-versions/create") == 1
    assert len(service.metadata) == 5 and len(service.relationships) == 8


def test_an_adapter_only_in_the_bucket_is_read_with_the_registrars_path_credentials(world, adapter, tmp_path):
    world, registry, service = world
    fake = world.databricks
    prefix = f"ml/training/{TRAIN_JOB}/output/model"
    s3 = world.boto("s3")
    for path in sorted(p for p in adapter[1].rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(adapter[1]).as_posix()}")
    pipeline = Pipeline(world, tmp_path, str(tmp_path / "not-on-this-machine"), f"s3://{BUCKET}/{prefix}/",
                        str(adapter[0]), adapter_files=adapter[1])

    first = registered(pipeline.all())
    assert first["created"] and first["artifact_sha256"] == artifact_sha256(adapter[1])
    reads = [v for v in fake.vended if v["operation"] == "PATH_READ"]
    assert [(v["location"], v["principal"]) for v in reads] == [
        (f"s3://{BUCKET}/{prefix}", application_id(Principal.REGISTRAR))]


# ---- lineage from any graph, and the CLI ---------------------------------------------------------------------


STANDARD_DESCRIPTION = {
    "raw_risk_factors": [],
    "curated_training_table": ["raw_risk_factors"],
    "finetuned_lora_model": ["curated_training_table"],
    "uc_model_version": ["finetuned_lora_model"],
}


def standard_facts() -> dict[str, dict[str, Any]]:
    """The facts that reproduce test_lineage.standard_nodes(), as materialization metadata."""
    nodes = {n.key: n for n in standard_nodes()}
    curated, trained = nodes["curated_training_table"], nodes["finetuned_lora_model"]
    raw_name = nodes["raw_risk_factors"].catalog_object.full_name
    model = nodes["uc_model_version"].catalog_object
    return {
        "raw_risk_factors": {"catalog_table": raw_name, "delta_version": 3, "rows": 120},
        "curated_training_table": {
            "catalog_table": curated.catalog_object.full_name, "delta_version": 5, "source_table": raw_name,
            "source_version": 3, "job_run_kind": curated.job_run.kind, "job_run_id": curated.job_run.run_id,
            "job_properties": json.dumps(dict(curated.job_run.properties)),
        },
        "finetuned_lora_model": {
            "source_table": curated.catalog_object.full_name, "source_version": "5", "eval_loss": 2.3,
            "job_run_kind": trained.job_run.kind, "job_run_id": trained.job_run.run_id,
            "job_properties": dict(trained.job_run.properties),
        },
        "uc_model_version": {"model_name": model.full_name, "model_version": 1, "created": True},
    }


def edges(graph) -> set[tuple[str, str | None, str, str | None]]:
    return {(r.source.ref, r.source.version, r.target.ref, r.target.version) for r in graph.relationships}


def test_lineage_nodes_from_graph_reproduce_the_standard_lineage_and_grow_with_the_graph() -> None:
    graph = derive_lineage(lineage_nodes_from_graph(STANDARD_DESCRIPTION, standard_facts()))
    assert graph.to_dict() == derive_lineage(standard_nodes()).to_dict()

    model = standard_facts()["uc_model_version"]["model_name"]
    description = {**STANDARD_DESCRIPTION, "model_evaluation_table": ["uc_model_version"]}
    facts = {**standard_facts(), "model_evaluation_table": {
        "catalog_table": "main.ml.model_evaluation", "delta_version": 0, "job_run_kind": "LocalEvaluationRun",
        "job_run_id": "eval-0001", "job_properties": {"prompts": "200"}}}
    extended = derive_lineage(lineage_nodes_from_graph(description, facts))

    evaluation = f"external_metadata:{metadata_name('LocalEvaluationRun', 'eval-0001')}"
    assert edges(extended) - edges(graph) == {
        (f"model_version:{model}@1", "1", evaluation, None),
        (evaluation, None, "table:main.ml.model_evaluation", "0"),
    }
    assert edges(graph) <= edges(extended)
    assert [m.entity_type for m in extended.external_metadata] == [
        "EMRServerlessJobRun", "SageMakerTrainingJob", "LocalEvaluationRun"]


def test_lineage_cli_prints_the_chain_from_the_local_openlineage_file(tmp_path) -> None:
    home = tmp_path / "state"
    description = {**STANDARD_DESCRIPTION, "model_evaluation_table": ["uc_model_version"]}
    facts = standard_facts()
    facts["model_evaluation_table"] = {"catalog_table": "main.ml.model_evaluation", "delta_version": 0,
                                       "job_run_kind": "LocalEvaluationRun", "job_run_id": "eval-0001"}
    OpenLineageFileSink(openlineage_path(home)).push(derive_lineage(lineage_nodes_from_graph(description, facts)))
    model = facts["uc_model_version"]["model_name"]
    env = {**os.environ, "GOVERNED_FT_HOME": str(home), "GOVERNED_FT_DEPLOYMENT": "local"}
    cli = str(Path(sys.executable).parent / "governed-ft")

    shown = subprocess.run([cli, "lineage", model, "--version", "1", "--json"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    chain = json.loads(shown.stdout)
    assert_standard_chain(chain, raw_version="3", curated_version="5", model=model, ingest_partitions=())
    assert chain["model_version"]["asset_key"] is None or chain["model_version"]["asset_key"] == "uc_model_version"
    assert chain["training_run"]["asset_key"] == "finetuned_lora_model"
    assert chain["preprocessing_run"]["properties"]["code_version"] == "git:4f2a9c1"
    assert len(chain["chain"]) == 5

    latest = subprocess.run([cli, "lineage", model], env=env, capture_output=True, text=True, timeout=120)
    assert latest.returncode == 0, latest.stderr
    assert f"model {model} version 1" in latest.stdout and "EMRServerlessJobRun" in latest.stdout

    unknown = subprocess.run([cli, "lineage", "main.ml.other_model", "--json"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: no lineage recorded for model main.ml.other_model")
    assert len(unknown.stderr.strip().splitlines()) == 1
