"""Lineage derived from the asset graph: relationships, redaction, determinism, extension and the upstream chain."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from governed_ft_dagster.lineage.derive import (
    AssetNode,
    CatalogObject,
    JobRun,
    LineageError,
    LineageGraph,
    derive_lineage,
    metadata_name,
    redact,
    upstream_chain,
)

RAW = "main.raw.risk_factors"
CURATED = "main.curated.risk_factor_instructions"
MODEL = "main.ml.risk_factors_lora"
EVAL = "main.ml.model_evaluation"
EMR_RUN = "00fmq3a1b2c3d4e5"
TRAIN_JOB = "governed-ft-train-20250101-120000"
EMR = metadata_name("EMRServerlessJobRun", EMR_RUN)
SAGEMAKER = metadata_name("SageMakerTrainingJob", TRAIN_JOB)

PLANTED = {
    "aws_access_key_id": "AKIAPLANTEDKEY000001",
    "aws_secret_access_key": "planted-secret-access-key-7c1d",
    "session_token": "planted-session-token-55ab",
    "client_secret": "planted-client-secret-0e9f",
    "databricks_token": "dapi0123456789abcdef0123456789abcdef",
    "db_password": "planted-password-31cc",
    "sp_credentials": "planted-credentials-8d2e",
    "OAuthToken": "planted-camel-token-4b1a",
    "note": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAtdHJhaW4ifQ.c2lnbmF0dXJl",
    "vended_key": "ASIAPLANTEDSESSION01",
    "mlflow_uri": "https://planted-user:planted-pass-77@mlflow.example",
}
SECRET_VALUES = [v for v in PLANTED.values()] + ["planted-pass-77", "c2lnbmF0dXJl"]


def standard_nodes(*, curated_written: int = 5, curated_read: int = 5) -> list[AssetNode]:
    """The project's four assets with the facts of one materialization, secrets planted in both job runs."""
    return [
        AssetNode("raw_risk_factors", (), CatalogObject("table", RAW, 3)),
        AssetNode(
            "curated_training_table",
            ("raw_risk_factors",),
            CatalogObject("table", CURATED, curated_written),
            JobRun(
                "EMRServerlessJobRun",
                EMR_RUN,
                {
                    "application_arn": "arn:aws:emr-serverless:us-east-1:123456789012:/applications/00fmq3",
                    "execution_role_arn": "arn:aws:iam::123456789012:role/governed-ft-preprocess",
                    "code_version": "git:4f2a9c1",
                    "config_hash": "sha256:9b1e",
                    **PLANTED,
                },
            ),
            {RAW: 3},
        ),
        AssetNode(
            "finetuned_lora_model",
            ("curated_training_table",),
            None,
            JobRun(
                "SageMakerTrainingJob",
                TRAIN_JOB,
                {
                    "training_job_arn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{TRAIN_JOB}",
                    "code_version": "git:4f2a9c1",
                    "config_hash": "sha256:77aa",
                    "max_tokens": "1024",
                    "tokenizer": "corpus-bpe-8k",
                    **PLANTED,
                },
            ),
            {CURATED: curated_read},
        ),
        AssetNode("uc_model_version", ("finetuned_lora_model",), CatalogObject("model_version", MODEL, 1)),
    ]


def edges(graph: LineageGraph) -> set[tuple[str, str | None, str, str | None]]:
    return {(r.source.ref, r.source.version, r.target.ref, r.target.version) for r in graph.relationships}


def test_standard_graph_yields_exact_relationships_with_versions_read() -> None:
    graph = derive_lineage(standard_nodes())

    assert edges(graph) == {
        (f"table:{RAW}", "3", f"external_metadata:{EMR}", None),
        (f"external_metadata:{EMR}", None, f"table:{CURATED}", "5"),
        (f"table:{CURATED}", "5", f"external_metadata:{SAGEMAKER}", None),
        (f"external_metadata:{SAGEMAKER}", None, f"model_version:{MODEL}@1", "1"),
    }
    for r in graph.relationships:
        assert "external_metadata" in (r.source.kind, r.target.kind)
    props = {r.key: r.properties for r in graph.relationships}
    assert props[f"table:{RAW} -> external_metadata:{EMR}"]["delta_version_read"] == "3"
    assert props[f"table:{CURATED} -> external_metadata:{SAGEMAKER}"]["delta_version_read"] == "5"
    assert props[f"external_metadata:{EMR} -> table:{CURATED}"]["delta_version_written"] == "5"
    assert props[f"external_metadata:{SAGEMAKER} -> model_version:{MODEL}@1"]["model_version"] == "1"

    assert [(m.name, m.system_type, m.entity_type, m.run_id, m.asset_key) for m in graph.external_metadata] == [
        (EMR, "OTHER", "EMRServerlessJobRun", EMR_RUN, "curated_training_table"),
        (SAGEMAKER, "OTHER", "SageMakerTrainingJob", TRAIN_JOB, "finetuned_lora_model"),
    ]
    emr = graph.metadata(EMR)
    assert emr is not None
    assert emr.properties["execution_role_arn"] == "arn:aws:iam::123456789012:role/governed-ft-preprocess"
    assert emr.properties["code_version"] == "git:4f2a9c1"
    assert emr.properties["config_hash"] == "sha256:9b1e"
    assert emr.properties["run_id"] == EMR_RUN
    sagemaker = graph.metadata(SAGEMAKER)
    assert sagemaker is not None
    assert sagemaker.properties["max_tokens"] == "1024" and sagemaker.properties["tokenizer"] == "corpus-bpe-8k"


def test_planted_secrets_are_absent_from_every_output() -> None:
    graph = derive_lineage(standard_nodes())
    dumped = json.dumps(graph.to_dict()) + json.dumps(upstream_chain(graph, MODEL, 1))

    for secret in SECRET_VALUES:
        assert secret not in dumped
    for key in PLANTED:
        assert f'"{key}"' not in dumped


def test_an_extra_asset_gains_exactly_its_edges() -> None:
    base = derive_lineage(standard_nodes())
    evaluation = AssetNode(
        "model_evaluation_table",
        ("uc_model_version",),
        CatalogObject("table", EVAL, 0),
        JobRun("LocalEvaluationRun", "eval-0001", {"config_hash": "sha256:e1"}),
    )
    extended = derive_lineage([*standard_nodes(), evaluation])
    evaluator = metadata_name("LocalEvaluationRun", "eval-0001")

    assert edges(extended) - edges(base) == {
        (f"model_version:{MODEL}@1", "1", f"external_metadata:{evaluator}", None),
        (f"external_metadata:{evaluator}", None, f"table:{EVAL}", "0"),
    }
    assert edges(base) <= edges(extended)
    assert [m.name for m in extended.external_metadata if m not in base.external_metadata] == [evaluator]


def test_a_pass_through_asset_and_a_job_fed_by_a_job_are_walked_generically() -> None:
    nodes = [
        AssetNode("source", (), CatalogObject("table", "main.raw.a", 7)),
        AssetNode("in_memory_view", ("source",)),
        AssetNode("stage_one", ("in_memory_view",), None, JobRun("LocalSparkJobRun", "s1"), {"main.raw.a": 6}),
        AssetNode(
            "stage_two", ("stage_one",), CatalogObject("table", "main.curated.b", 2), JobRun("LocalSparkJobRun", "s2")
        ),
    ]
    graph = derive_lineage(nodes)
    one, two = metadata_name("LocalSparkJobRun", "s1"), metadata_name("LocalSparkJobRun", "s2")

    assert edges(graph) == {
        ("table:main.raw.a", "6", f"external_metadata:{one}", None),
        (f"external_metadata:{one}", None, f"external_metadata:{two}", None),
        (f"external_metadata:{two}", None, "table:main.curated.b", "2"),
    }


def test_a_raw_table_nobody_reads_contributes_nothing() -> None:
    graph = derive_lineage([AssetNode("raw_risk_factors", (), CatalogObject("table", RAW, 3))])

    assert graph.external_metadata == [] and graph.relationships == []


def test_derivation_is_deterministic_and_independent_of_node_order() -> None:
    first, second = derive_lineage(standard_nodes()), derive_lineage(standard_nodes())
    shuffled = standard_nodes()
    random.Random(7).shuffle(shuffled)

    assert first == second == derive_lineage(shuffled)
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(derive_lineage(shuffled).to_dict(), sort_keys=True)
    assert EMR.startswith("emr_serverless_job_run__00fmq3a1b2c3d4e5__")
    assert SAGEMAKER.startswith("sage_maker_training_job__governed_ft_train_20250101_120000__")
    assert metadata_name("LocalSparkJobRun", "a-b") != metadata_name("LocalSparkJobRun", "a_b")


def test_upstream_chain_walks_back_to_the_raw_table_with_versions_read() -> None:
    chain = upstream_chain(derive_lineage(standard_nodes()), MODEL, 1)
    json.dumps(chain)

    assert chain["model_version"]["full_name"] == MODEL and chain["model_version"]["version"] == "1"
    assert chain["training_run"]["kind"] == "SageMakerTrainingJob"
    assert chain["training_run"]["run_id"] == TRAIN_JOB
    assert chain["training_run"]["properties"]["config_hash"] == "sha256:77aa"
    assert chain["curated_table"]["full_name"] == CURATED and chain["curated_table"]["version_read"] == "5"
    assert chain["curated_table"]["asset_key"] == "curated_training_table"
    assert chain["preprocessing_run"]["kind"] == "EMRServerlessJobRun"
    assert chain["preprocessing_run"]["run_id"] == EMR_RUN
    assert chain["raw_table"]["full_name"] == RAW and chain["raw_table"]["version_read"] == "3"
    assert [(e["type"], e["depth"]) for e in chain["chain"]] == [
        ("model_version", 0),
        ("job_run", 1),
        ("table", 2),
        ("job_run", 3),
        ("table", 4),
    ]
    assert chain["chain"][-1]["upstream"] == []


def test_upstream_chain_records_the_version_read_not_the_latest_written() -> None:
    graph = derive_lineage(standard_nodes(curated_written=6, curated_read=5))
    chain = upstream_chain(graph, MODEL, "1")

    assert chain["curated_table"]["version_read"] == "5"
    assert chain["curated_table"]["versions_written"] == ["6"]
    assert chain["preprocessing_run"] is None  # the recorded run wrote v6, so it did not produce what was read
    assert len(chain["chain"]) == 3


def test_upstream_chain_of_an_unknown_model_version_fails() -> None:
    with pytest.raises(LineageError, match="no lineage recorded"):
        upstream_chain(derive_lineage(standard_nodes()), MODEL, 2)


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([AssetNode("a", ("missing",))], "not in the graph"),
        ([AssetNode("a", ("b",)), AssetNode("b", ("a",))], "cycle"),
        ([AssetNode("a"), AssetNode("a")], "twice"),
    ],
)
def test_malformed_graphs_are_refused(nodes: list[AssetNode], message: str) -> None:
    with pytest.raises(LineageError, match=message):
        derive_lineage(nodes)


def test_redact_drops_secret_keys_and_values_and_keeps_look_alikes() -> None:
    kept = {
        "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/abcd",
        "max_tokens": 1024,
        "num_tokens_seen": "5000",
        "tokenizer_path": "/opt/ml/input/tokenizer",
        "dagster_asset_key": "curated_training_table",
        "role_arn": "arn:aws:iam::123456789012:role/governed-ft-train",
    }
    out = redact({**PLANTED, **kept, "empty": None, "access_token": "x", "refresh-token": "y", "apiKey": "z"})

    assert out == {k: str(v) for k, v in sorted(kept.items())}


def test_the_lineage_module_imports_no_dagster() -> None:
    code = "import sys, governed_ft_dagster.lineage; print(sorted(m for m in sys.modules if m.startswith('dagster')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def partitioned_nodes(writers: list[tuple[str, str, int]], raw_read: int, curated: int, emr_run: str,
                      model_version: int) -> list[AssetNode]:
    """One registration's nodes: the raw table written by one ingest run per partition (run, partition, version
    written) from an EDGAR source, curation reading raw_read, training and the model version."""
    from governed_ft_dagster.lineage.facts import lineage_nodes_from_graph

    edgar = {"name": "sec_edgar", "entity_type": "FilingArchive", "properties": {"url": "https://www.sec.gov"}}
    description = {"raw_risk_factors": [], "curated_training_table": ["raw_risk_factors"],
                   "finetuned_lora_model": ["curated_training_table"], "uc_model_version": ["finetuned_lora_model"]}
    facts = {
        "raw_risk_factors": [
            {"catalog_table": RAW, "delta_version": written, "delta_version_written": written,
             "job_run_kind": "EdgarIngestRun", "job_run_id": f"{run}:{partition}", "partition": partition,
             "job_properties": {"filings_fetched": 7}, "external_source": edgar} for run, partition, written in writers],
        "curated_training_table": {"catalog_table": CURATED, "delta_version": curated, "source_table": RAW,
                                   "source_version": raw_read, "job_run_kind": "EMRServerlessJobRun",
                                   "job_run_id": emr_run},
        "finetuned_lora_model": {"source_table": CURATED, "source_version": curated,
                                 "job_run_kind": "SageMakerTrainingJob", "job_run_id": f"train-{model_version}"},
        "uc_model_version": {"model_name": MODEL, "model_version": model_version},
    }
    return lineage_nodes_from_graph(description, facts)


def test_each_partition_run_is_a_job_run_fed_by_its_source() -> None:
    graph = derive_lineage(partitioned_nodes([("r1", "2023", 1), ("r2", "2024", 2)], 2, 5, EMR_RUN, 1))
    runs = {m.properties["partition"]: m for m in graph.external_metadata if m.entity_type == "EdgarIngestRun"}
    assert {p: m.run_id for p, m in runs.items()} == {"2023": "r1:2023", "2024": "r2:2024"}
    source = graph.metadata("sec_edgar")
    assert source is not None and source.role == "source" and source.properties["url"] == "https://www.sec.gov"
    assert {(r.source.ref, r.target.ref, r.properties["partition"]) for r in graph.relationships
            if r.source.ref == "external_metadata:sec_edgar"} == {
        ("external_metadata:sec_edgar", f"external_metadata:{m.name}", p) for p, m in runs.items()}
    assert {r.source.name: r.target.version for r in graph.relationships if r.target.ref == f"table:{RAW}"} == {
        runs["2023"].name: "1", runs["2024"].name: "2"}
    chain = upstream_chain(graph, MODEL, 1)
    assert sorted(r["run_id"] for r in chain["ingest_runs"]) == ["r1:2023", "r2:2024"]
    assert [(s["type"], s["name"]) for s in chain["sources"]] == [("source", "sec_edgar")]


def test_a_raw_version_read_names_the_latest_writer_of_each_partition_up_to_it(tmp_path) -> None:
    """Two registrations pushed to one OpenLineage file: version 1 read raw@2 (2023 by r1, 2024 by r2); 2023 was
    ingested again (r3 wrote 3) and version 2 read raw@3, which holds r3's 2023 rows and still r2's 2024 rows."""
    from governed_ft_dagster.cli.lineage import graph_from_openlineage
    from governed_ft_dagster.lineage.sinks import OpenLineageFileSink

    sink = OpenLineageFileSink(tmp_path / "openlineage.jsonl")
    sink.push(derive_lineage(partitioned_nodes([("r1", "2023", 1), ("r2", "2024", 2)], 2, 5, EMR_RUN, 1)))
    sink.push(derive_lineage(partitioned_nodes([("r3", "2023", 3), ("r2", "2024", 2)], 3, 6, "emr-2", 2)))
    graph = graph_from_openlineage(sink.read())
    first, second = upstream_chain(graph, MODEL, 1), upstream_chain(graph, MODEL, 2)
    assert sorted(r["run_id"] for r in first["ingest_runs"]) == ["r1:2023", "r2:2024"]
    assert sorted(r["run_id"] for r in second["ingest_runs"]) == ["r2:2024", "r3:2023"]
    assert (first["raw_table"]["version_read"], second["raw_table"]["version_read"]) == ("2", "3")
    assert [(s["name"], s["properties"]["url"]) for s in second["sources"]] == [("sec_edgar", "https://www.sec.gov")]
