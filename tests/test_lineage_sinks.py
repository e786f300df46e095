"""Lineage sinks: the OpenLineage JSON-lines file and Databricks External Metadata/Lineage against a fake workspace."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from openlineage.client.serde import Serde

from governed_ft_dagster.lineage.derive import AssetNode, CatalogObject, JobRun, LineageGraph, derive_lineage, metadata_name
from governed_ft_dagster.lineage.sinks import (
    JOB_NAMESPACE,
    DatabricksLineageSink,
    LineageSinkError,
    OpenLineageFileSink,
    build_run_events,
    openlineage_run_id,
    read_events,
)

from fake_databricks import FakeDatabricks
from fake_lineage import LT, FakeLineageService
from test_lineage import CURATED, EMR, MODEL, RAW, SAGEMAKER, SECRET_VALUES, TRAIN_JOB, standard_nodes

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
PART_TABLES = [f"main.raw.part_{i}" for i in range(3)]
MERGED = "main.curated.merged"
EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
NEW_TRAINING_RUN = JobRun("SageMakerTrainingJob", TRAIN_JOB, {"config_hash": "sha256:new"})


# ---- OpenLineage structure ------------------------------------------------------------------------------------


def assert_uri(value: Any) -> None:
    assert isinstance(value, str) and urlparse(value).scheme, f"not a URI: {value!r}"


def assert_facets(facets: Any) -> None:
    assert isinstance(facets, dict)
    for name, facet in facets.items():
        assert isinstance(name, str) and not name.startswith("_")
        assert_uri(facet["_producer"])
        assert_uri(facet["_schemaURL"])
        assert facet["_schemaURL"].startswith("https://openlineage.io/spec/")


def assert_openlineage_run_event(event: dict[str, Any]) -> None:
    """The RunEvent requirements of the OpenLineage 2-0-2 spec and of the standard facets used, checked by hand."""
    assert event["eventType"] in EVENT_TYPES
    assert "T" in event["eventTime"] and dt.datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert_uri(event["producer"])
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
    assert str(uuid.UUID(event["run"]["runId"])) == event["run"]["runId"]
    assert isinstance(event["job"]["namespace"], str) and event["job"]["namespace"]
    assert isinstance(event["job"]["name"], str) and event["job"]["name"]
    assert_facets(event["run"].get("facets", {}))
    assert_facets(event["job"].get("facets", {}))
    for tag in event["run"].get("facets", {}).get("tags", {}).get("tags", []):
        assert isinstance(tag["key"], str) and isinstance(tag["value"], str)
    job_type = event["job"].get("facets", {}).get("jobType")
    if job_type is not None:
        assert isinstance(job_type["processingType"], str) and isinstance(job_type["integration"], str)
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        assert isinstance(dataset["namespace"], str) and dataset["namespace"]
        assert isinstance(dataset["name"], str) and dataset["name"]
        facets = dataset.get("facets", {})
        assert_facets(facets)
        if "version" in facets:
            assert isinstance(facets["version"]["datasetVersion"], str)
        if "datasetType" in facets:
            assert isinstance(facets["datasetType"]["datasetType"], str)
    for dataset in event.get("inputs", []):
        assert_facets(dataset.get("inputFacets", {}))
    for dataset in event.get("outputs", []):
        assert_facets(dataset.get("outputFacets", {}))


def dataset_versions(datasets: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(d["namespace"], d["name"], d.get("facets", {}).get("version", {}).get("datasetVersion")) for d in datasets]


# ---- OpenLineage file sink ------------------------------------------------------------------------------------


def test_file_sink_writes_one_complete_event_per_job_run_with_versions(tmp_path: Path) -> None:
    path = tmp_path / "lineage" / "openlineage.jsonl"
    graph = derive_lineage(standard_nodes())
    result = OpenLineageFileSink(path).push(graph, event_time=T0)

    events = read_events(path)
    assert len(result.created) == 2 and result.updated == result.unchanged == []
    assert len(path.read_text().splitlines()) == 2
    emr, train = events
    for event in events:
        assert_openlineage_run_event(event)
        assert event["eventType"] == "COMPLETE"
        assert event["job"]["namespace"] == JOB_NAMESPACE
        assert event["eventTime"].startswith("2025-01-01T12:00:00")
    assert emr["job"]["name"] == "curated_training_table"
    assert dataset_versions(emr["inputs"]) == [("uc://local", RAW, "3")]
    assert dataset_versions(emr["outputs"]) == [("uc://local", CURATED, "5")]
    assert train["job"]["name"] == "finetuned_lora_model"
    assert dataset_versions(train["inputs"]) == [("uc://local", CURATED, "5")]
    assert dataset_versions(train["outputs"]) == [("uc://local", MODEL, "1")]
    assert train["outputs"][0]["facets"]["datasetType"]["datasetType"] == "MODEL"
    tags = {t["key"]: t["value"] for t in train["run"]["facets"]["tags"]["tags"]}
    assert tags["run_id"] == TRAIN_JOB and tags["job_kind"] == "SageMakerTrainingJob"
    assert tags["external_metadata_name"] == SAGEMAKER
    record = graph.metadata(SAGEMAKER)
    assert record is not None
    assert train["run"]["runId"] == openlineage_run_id(record) == str(
        uuid.uuid5(
            uuid.uuid5(uuid.NAMESPACE_URL, "urn:governed-ft-dagster:job-run"), f"SageMakerTrainingJob:{TRAIN_JOB}"
        )
    )


def test_file_sink_carries_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "openlineage.jsonl"
    OpenLineageFileSink(path).push(derive_lineage(standard_nodes()))

    text = path.read_text()
    for secret in SECRET_VALUES:
        assert secret not in text


def test_re_pushing_never_duplicates_and_updates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "openlineage.jsonl"
    sink = OpenLineageFileSink(path, catalog_host="dbc-1234.cloud.databricks.com")
    graph = derive_lineage(standard_nodes())
    sink.push(graph, event_time=T0)
    first = path.read_bytes()

    again = sink.push(derive_lineage(standard_nodes()), event_time=T0 + dt.timedelta(hours=1))
    assert again.created == again.updated == [] and len(again.unchanged) == 2
    assert path.read_bytes() == first

    nodes = standard_nodes()
    nodes[2] = dataclasses.replace(nodes[2], job_run=NEW_TRAINING_RUN)
    changed = sink.push(derive_lineage(nodes), event_time=T0 + dt.timedelta(hours=2))
    events = read_events(path)
    assert len(changed.updated) == 1 and len(changed.unchanged) == 1 and changed.created == []
    assert [e["job"]["name"] for e in events] == ["curated_training_table", "finetuned_lora_model"]
    tags = {t["key"]: t["value"] for t in events[1]["run"]["facets"]["tags"]["tags"]}
    assert tags["config_hash"] == "sha256:new"
    assert events[0]["eventTime"] == read_events_from_bytes(first)[0]["eventTime"]
    assert events[0]["inputs"][0]["namespace"] == "uc://dbc-1234.cloud.databricks.com"
    assert len({(e["run"]["runId"], e["eventType"]) for e in events}) == len(events) == 2


def read_events_from_bytes(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def test_a_new_asset_appends_its_event_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "openlineage.jsonl"
    sink = OpenLineageFileSink(path)
    sink.push(derive_lineage(standard_nodes()), event_time=T0)
    before = path.read_text()
    evaluation = AssetNode(
        "model_evaluation_table",
        ("uc_model_version",),
        CatalogObject("table", "main.ml.model_evaluation", 0),
        JobRun("LocalEvaluationRun", "eval-0001"),
    )
    result = sink.push(derive_lineage([*standard_nodes(), evaluation]), event_time=T0)

    assert len(result.created) == 1 and len(result.unchanged) == 2
    assert path.read_text().startswith(before)
    last = read_events(path)[-1]
    assert_openlineage_run_event(last)
    assert dataset_versions(last["inputs"]) == [("uc://local", MODEL, "1")]
    assert dataset_versions(last["outputs"]) == [("uc://local", "main.ml.model_evaluation", "0")]


def test_build_run_events_is_deterministic_apart_from_time() -> None:
    graph = derive_lineage(standard_nodes())
    one = [Serde.to_dict(e) for e in build_run_events(graph, event_time=T0)]
    two = [Serde.to_dict(e) for e in build_run_events(derive_lineage(standard_nodes()), event_time=T0)]
    assert one == two


def test_read_events_reports_a_corrupt_line(tmp_path: Path) -> None:
    path = tmp_path / "openlineage.jsonl"
    path.write_text('{"run": {"runId": "x"}}\n{not json\n')

    with pytest.raises(LineageSinkError, match=r"openlineage.jsonl:2"):
        read_events(path)
    assert read_events(tmp_path / "missing.jsonl") == []


# ---- Databricks sink against the fake workspace -------------------------------------------------------------


@pytest.fixture
def workspace() -> Iterator[tuple[FakeDatabricks, FakeLineageService, WorkspaceClient]]:
    with FakeDatabricks() as fake:
        fake.add_service_principal("app-registrar", "registrar-secret-1f2e")
        fake.grant("metastore", fake.metastore_id, "app-registrar", "CREATE_EXTERNAL_METADATA")
        for table in (RAW, CURATED, *PART_TABLES, MERGED):  # relationships may only name registered objects
            fake.add_table(table, f"s3://lake/{table.replace('.', '/')}")
        fake.model_versions[MODEL] = {"1": {"version": "1"}}
        service = FakeLineageService()
        service.install(fake)
        config = Config(
            host=fake.url,
            client_id="app-registrar",
            client_secret="registrar-secret-1f2e",
            auth_type="oauth-m2m",
            discovery_url=f"{fake.url}/oidc/.well-known/oauth-authorization-server",
            http_timeout_seconds=5,
            retry_timeout_seconds=5,
        )
        yield fake, service, WorkspaceClient(config=config)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def writes(fake: FakeDatabricks) -> list[str]:
    return [p for p in fake.paths(LT) if not p.startswith("GET ")]


def test_databricks_sink_creates_metadata_then_relationships_in_the_sdk_shapes(workspace) -> None:
    fake, service, client = workspace
    graph = derive_lineage(standard_nodes())
    result = DatabricksLineageSink(client).push(graph)

    assert len(result.created) == 6 and result.updated == result.unchanged == []
    assert writes(fake) == [f"POST {LT}/external-metadata"] * 2 + [f"POST {LT}/external-lineage"] * 4
    assert set(service.metadata) == {EMR, SAGEMAKER}
    emr = service.metadata[EMR]
    assert (emr["system_type"], emr["entity_type"]) == ("OTHER", "EMRServerlessJobRun")
    assert emr["properties"]["config_hash"] == "sha256:9b1e"
    stored = {(canonical(r["source"]), canonical(r["target"])): r for r in service.relationships}
    raw_in = stored[(canonical({"table": {"name": RAW}}), canonical({"external_metadata": {"name": EMR}}))]
    assert raw_in["properties"]["delta_version_read"] == "3"
    model_version = {"model_version": {"name": MODEL, "version": "1"}}
    model_out = stored[(canonical({"external_metadata": {"name": SAGEMAKER}}), canonical(model_version))]
    assert model_out["properties"]["model_version"] == "1"
    sent = b"".join(r.raw_body for r in fake.calls(LT))
    for secret in SECRET_VALUES:
        assert secret.encode() not in sent


def test_databricks_sink_re_push_writes_nothing_and_a_change_updates(workspace) -> None:
    fake, service, client = workspace
    sink = DatabricksLineageSink(client)
    sink.push(derive_lineage(standard_nodes()))
    fake.clear_requests()

    again = sink.push(derive_lineage(standard_nodes()))
    assert again.created == again.updated == [] and len(again.unchanged) == 6
    assert writes(fake) == []
    assert len(service.metadata) == 2 and len(service.relationships) == 4

    nodes = standard_nodes(curated_written=6, curated_read=6)
    nodes[2] = dataclasses.replace(nodes[2], job_run=NEW_TRAINING_RUN)
    fake.clear_requests()
    changed = sink.push(derive_lineage(nodes))
    assert writes(fake) == [f"PATCH {LT}/external-metadata/{SAGEMAKER}"] + [f"PATCH {LT}/external-lineage"] * 2
    assert sorted(changed.updated) == sorted(
        [
            f"external_metadata:{SAGEMAKER}",
            f"external_metadata:{EMR} -> table:{CURATED}",
            f"table:{CURATED} -> external_metadata:{SAGEMAKER}",
        ]
    )
    assert service.metadata[SAGEMAKER]["properties"]["config_hash"] == "sha256:new"
    assert len(service.metadata) == 2 and len(service.relationships) == 4
    assert fake.calls(f"{LT}/external-metadata/{SAGEMAKER}")[-1].query["update_mask"] == ["description,properties"]


def test_databricks_sink_treats_already_exists_as_update(workspace) -> None:
    fake, service, client = workspace
    sink = DatabricksLineageSink(client)
    sink.push(derive_lineage(standard_nodes()))
    missing = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "gone"}
    fake.fail_next("GET", rf"{LT}/external-metadata/{EMR}", 404, missing)
    fake.fail_next("GET", rf"{LT}/external-lineage", 200, {"external_lineage_relationships": []})
    fake.clear_requests()

    result = sink.push(derive_lineage(standard_nodes()))
    assert result.created == [] and len(result.unchanged) == 6
    assert writes(fake) == [f"POST {LT}/external-metadata", f"POST {LT}/external-lineage"]
    assert len(service.metadata) == 2 and len(service.relationships) == 4


def test_databricks_sink_follows_list_pages_to_find_existing_relationships(workspace) -> None:
    fake, service, client = workspace
    service.page_size = 1
    tables = PART_TABLES
    nodes = [AssetNode(f"part_{i}", (), CatalogObject("table", t, i)) for i, t in enumerate(tables)]
    nodes.append(
        AssetNode("merged", tuple(n.key for n in nodes), CatalogObject("table", MERGED, 1),
                  JobRun("LocalSparkJobRun", "merge-1"), {t: i for i, t in enumerate(tables)})
    )
    sink = DatabricksLineageSink(client)
    sink.push(derive_lineage(nodes))
    fake.clear_requests()

    again = sink.push(derive_lineage(nodes))
    assert again.created == [] and len(again.unchanged) == 5 and writes(fake) == []
    assert len(service.relationships) == 4
    assert any("page_token" in r.query for r in fake.calls(f"{LT}/external-lineage"))


def test_databricks_sink_refuses_a_name_taken_by_another_entity_type(workspace) -> None:
    fake, service, client = workspace
    service.metadata[EMR] = {"name": EMR, "system_type": "OTHER", "entity_type": "SomethingElse",
                             "owner": "app-registrar"}

    with pytest.raises(LineageSinkError, match="SomethingElse"):
        DatabricksLineageSink(client).push(derive_lineage(standard_nodes()))


def test_metadata_names_fit_the_catalog_identifier_shape() -> None:
    graph: LineageGraph = derive_lineage(standard_nodes())
    for record in graph.external_metadata:
        assert record.name == record.name.lower() and record.name.replace("_", "").isalnum()
    assert metadata_name("SageMakerTrainingJob", "x" * 500).__len__() <= 255
