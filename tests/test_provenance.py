"""Registration follows Dagster's recorded provenance from the adapter it registers, not each ancestor's latest event."""

import dagster as dg

from test_model_asset import (  # noqa: F401  (fixtures: adapter, world)
    BUCKET,
    CURATED,
    EMR_RUN,
    MODEL,
    RAW,
    TRAIN_JOB,
    Pipeline,
    adapter,
    assert_standard_chain,
    registered,
    world,
)
from governed_ft_dagster.cli.lineage import graph_from_databricks
from governed_ft_dagster.lineage.derive import upstream_chain
from governed_ft_dagster.defs.provenance import DATA_VERSION_TAG

REBUILT_RUN = "00fmq3rebuilt0001"


def latest(instance: dg.DagsterInstance, key: str) -> dg.EventLogRecord:
    return instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0]


def test_a_curated_rebuild_between_training_and_registration_does_not_change_the_lineage(world, adapter, tmp_path):
    world, registry, service = world
    base, model_dir = adapter
    pipeline = Pipeline(world, tmp_path, str(model_dir), f"s3://{BUCKET}/ml/adapters/{TRAIN_JOB}", str(base),
                        state={"curated_version": 7, "emr_run": EMR_RUN})
    assert pipeline.run(["curated_training_table", "finetuned_lora_model"]).success
    trained_on = latest(pipeline.instance, "curated_training_table")
    adapter_record = latest(pipeline.instance, "finetuned_lora_model")
    assert adapter_record.asset_materialization.tags[
        "dagster/input_event_pointer/curated_training_table"] == str(trained_on.storage_id)

    pipeline.state.update({"curated_version": 8, "emr_run": REBUILT_RUN})  # a rebuild: new Delta version, new job
    assert pipeline.run(["curated_training_table"]).success
    rebuilt = latest(pipeline.instance, "curated_training_table")
    assert rebuilt.asset_materialization.tags[DATA_VERSION_TAG] == "8" and rebuilt.storage_id > trained_on.storage_id

    first = registered(pipeline.model_only())
    version = registry.versions[MODEL]["1"]
    tags = version["tags"]
    assert tags["governed_ft.source_tables"] == f"{CURATED}@7,{RAW}@3"
    assert tags["governed_ft.preprocessing_job"] == f"EMRServerlessJobRun:{EMR_RUN}"
    assert REBUILT_RUN not in str(version) and "@8" not in tags["governed_ft.source_tables"]
    assert f"{CURATED} at Delta version 7" in version["description"]
    assert first["provenance"]["curated_training_table"] == {
        "storage_id": trained_on.storage_id, "run_id": trained_on.run_id, "data_version": "7"}
    assert first["provenance"]["finetuned_lora_model"]["storage_id"] == adapter_record.storage_id
    assert first["adapter_materialization"] == adapter_record.storage_id

    lineage = pipeline.resources["lineage"]
    chain = upstream_chain(graph_from_databricks(lineage.workspace_client(), MODEL, "1"), MODEL, "1")
    assert_standard_chain(chain, raw_version="3", curated_version="7")
    assert not any(REBUILT_RUN in str(m) for m in service.metadata.values())


def test_an_adapter_trained_on_a_pinned_older_version_names_the_run_that_wrote_that_version(world, adapter,
                                                                                            tmp_path):
    world, registry, service = world
    base, model_dir = adapter
    pipeline = Pipeline(world, tmp_path, str(model_dir), f"s3://{BUCKET}/ml/adapters/{TRAIN_JOB}", str(base),
                        state={"curated_version": 7, "emr_run": EMR_RUN})
    assert pipeline.run(["curated_training_table"]).success
    wrote_7 = latest(pipeline.instance, "curated_training_table")
    pipeline.state.update({"curated_version": 8, "emr_run": REBUILT_RUN})
    assert pipeline.run(["curated_training_table"]).success
    pipeline.state["curated_version"] = 7  # the training job is pinned to version 7 while 8 is current
    assert pipeline.run(["finetuned_lora_model"]).success
    pointer = latest(pipeline.instance, "finetuned_lora_model").asset_materialization.tags[
        "dagster/input_event_pointer/curated_training_table"]
    assert int(pointer) > wrote_7.storage_id  # Dagster points at the current curated materialization (version 8)

    first = registered(pipeline.model_only())
    tags = registry.versions[MODEL]["1"]["tags"]
    assert tags["governed_ft.source_tables"] == f"{CURATED}@7,{RAW}@3"
    assert tags["governed_ft.preprocessing_job"] == f"EMRServerlessJobRun:{EMR_RUN}"
    assert first["provenance"]["curated_training_table"]["storage_id"] == wrote_7.storage_id


def test_a_training_materialization_without_recorded_inputs_is_not_registered(world, adapter, tmp_path):
    world, registry, service = world
    base, model_dir = adapter
    pipeline = Pipeline(world, tmp_path, str(model_dir), f"s3://{BUCKET}/ml/adapters/{TRAIN_JOB}", str(base),
                        state={"curated_version": 7, "emr_run": EMR_RUN})
    assert pipeline.run(["finetuned_lora_model"]).success  # curated was never materialized in Dagster

    result = pipeline.model_only()
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "recorded no materialization of its input curated_training_table" in message
    assert "finetuned_lora_model materialization" in message
    assert registry.versions == {}
