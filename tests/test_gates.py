"""Gates that hold: blocking curated contracts, and registration only of an adapter whose own gate passed."""

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from aws_fixtures import CATALOG, application_id
from test_model_asset import (  # noqa: F401  (fixtures: adapter, world)
    BUCKET,
    MODEL,
    TRAIN_JOB,
    Pipeline,
    adapter,
    registered,
    world,
)
from governed_ft_dagster.defs.assets.model import GATE
from governed_ft_dagster.defs.assets.training import FinetuneConfig
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.defs.checks import curated_contracts
from governed_ft_dagster.governance import CURATED_TABLE, RAW_TABLE
from governed_ft_dagster.defs.resources import build_resources
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.settings import load_settings
from governed_ft_dagster.training.base_model import TINY_FINETUNE_DEFAULTS

GATE_OP = "finetuned_lora_model_adapter_beats_base_model"
UPSTREAM = dg.AssetSelection.assets("curated_training_table", "finetuned_lora_model")


def pipeline_for(world, adapter, tmp_path, **state) -> Pipeline:
    base, model_dir = adapter
    return Pipeline(world, tmp_path, str(model_dir), f"s3://{BUCKET}/ml/adapters/{TRAIN_JOB}", str(base),
                    state={"curated_version": 7, **state})


def refusal(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    (event,) = [e for e in result.all_events if e.is_step_failure]
    assert event.step_key == "uc_model_version"
    return event.step_failure_data.user_failure_data.description


def adapter_storage_id(pipeline: Pipeline) -> int:
    return pipeline.instance.fetch_materializations(dg.AssetKey("finetuned_lora_model"), limit=1).records[0].storage_id


def test_registration_alone_refuses_an_adapter_whose_gate_was_never_evaluated(world, adapter, tmp_path):
    world, registry, service = world
    pipeline = pipeline_for(world, adapter, tmp_path)
    assert pipeline.run(UPSTREAM.without_checks()).success

    message = refusal(pipeline.model_only())
    assert f"finetuned_lora_model materialization {adapter_storage_id(pipeline)}" in message
    assert "check adapter_beats_base_model was never evaluated for it" in message
    assert registry.versions == {} and service.relationships == []

    assert pipeline.run(dg.AssetSelection.checks(GATE)).success  # the check alone, as from the UI
    assert registered(pipeline.model_only())["model_version"] == 1


def test_a_gate_passed_by_an_earlier_adapter_does_not_carry_over_to_a_retrained_one(world, adapter, tmp_path):
    world, registry, service = world
    pipeline = pipeline_for(world, adapter, tmp_path)
    assert pipeline.run(UPSTREAM).success
    evaluated = adapter_storage_id(pipeline)
    assert pipeline.run(dg.AssetSelection.assets("finetuned_lora_model").without_checks()).success
    retrained = adapter_storage_id(pipeline)
    assert retrained > evaluated

    message = refusal(pipeline.model_only())
    assert f"finetuned_lora_model materialization {retrained}" in message and "never evaluated" in message
    assert registry.versions == {}


def test_a_failed_gate_stops_the_run_and_registration_alone_refuses_naming_the_check(world, adapter, tmp_path):
    world, registry, service = world
    pipeline = pipeline_for(world, adapter, tmp_path, eval_loss=3.04)  # 0.33% below the base's 3.05

    blocked = pipeline.all()
    assert not blocked.success
    (evaluation,) = blocked.get_asset_check_evaluations()
    assert not evaluation.passed and "minimum 1.00%" in evaluation.description
    assert evaluation.metadata["min_relative_improvement"].value == 0.01
    assert blocked.asset_materializations_for_node("uc_model_version") == []

    message = refusal(pipeline.model_only())
    assert f"finetuned_lora_model materialization {adapter_storage_id(pipeline)}" in message
    assert "check adapter_beats_base_model failed for it" in message and "3.0400" in message
    assert registry.versions == {}


def test_the_gate_threshold_is_a_setting_recorded_on_the_model_version(world, adapter, tmp_path):
    world, registry, service = world
    pipeline = pipeline_for(world, adapter, tmp_path)  # 2.31 against 3.05: 24.3% better
    strict = {"ops": {GATE_OP: {"config": {"min_relative_improvement": 0.3}}}}
    assert not pipeline.run(UPSTREAM, run_config=strict).success
    assert "failed for it" in refusal(pipeline.model_only())

    assert pipeline.run(UPSTREAM, run_config={"ops": {GATE_OP: {"config": {"min_relative_improvement": 0.2}}}}).success
    registered(pipeline.model_only())
    tags = registry.versions[MODEL]["1"]["tags"]
    assert tags["governed_ft.gate"] == "adapter_beats_base_model:passed"
    assert tags["governed_ft.gate_min_relative_improvement"] == "0.2"
    assert float(tags["governed_ft.gate_relative_improvement"]) == pytest.approx((3.05 - 2.31) / 3.05, abs=1e-5)


# ---- blocking curated contracts -------------------------------------------------------------------------------


def storage(world) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}


def curated_rows(split_of_second_company: str) -> pa.Table:
    messages = [{"role": role, "content": f"{role} text"} for role in ("system", "user", "assistant")]
    rows = [{"record_id": f"r{i}", "cik": cik, "ticker": cik.upper(), "accession_number": f"a{i}", "form_type": "10-K",
             "fiscal_year": 2024, "risk_factor_heading": "Risks", "messages": messages, "n_tokens": 300,
             "split": split, "source_table": f"{CATALOG}.{RAW_TABLE}", "source_version": 0, "run_id": "r"}
            for i, (cik, split) in enumerate([("c1", "train"), ("c1", "train"), ("c2", "validation"),
                                              ("c2", split_of_second_company)])]
    return pa.Table.from_pylist(rows)


def test_a_failed_curated_contract_stops_training_in_the_same_run(world):
    world, registry, service = world
    raw_location, curated_location = f"s3://{BUCKET}/raw/tables/risk_factors", f"s3://{BUCKET}/curated/tables/x"
    write_deltalake(raw_location, pa.table({"status": ["extracted"] * 2}), storage_options=storage(world))
    world.databricks.add_table(f"{CATALOG}.{RAW_TABLE}", raw_location, owner=application_id(Principal.INGEST))
    world.databricks.add_table(f"{CATALOG}.{CURATED_TABLE}", curated_location,
                               owner=application_id(Principal.PREPROCESS))
    layout = {"second": "validation"}
    trained = []

    @dg.asset(name="curated_training_table")
    def curated() -> dg.MaterializeResult:
        write_deltalake(curated_location, curated_rows(layout["second"]), mode="overwrite",
                        storage_options=storage(world))
        return dg.MaterializeResult()

    @dg.asset(name="finetuned_lora_model", deps=[curated])
    def finetuned() -> None:
        trained.append(True)

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize([curated, finetuned, curated_contracts], raise_on_error=False,
                              resources={"catalog": world.catalog_resource()})

    assert run().success and trained == [True]
    layout["second"] = "train"  # company c2 now in both splits
    blocked = run()
    assert not blocked.success and trained == [True]
    failed = {e.check_name for e in blocked.get_asset_check_evaluations() if not e.passed}
    assert failed == {"curated_split_by_company"}
    assert all(spec.blocking for spec in curated_contracts.check_specs)


# ---- the local demo's training defaults -------------------------------------------------------------------------


def test_the_tiny_base_brings_its_own_training_defaults_and_production_keeps_its_own():
    tiny = BaseModelResource(model_ref="tiny", finetune_defaults=TINY_FINETUNE_DEFAULTS)
    assert tiny.finetune_config(FinetuneConfig()).learning_rate == TINY_FINETUNE_DEFAULTS["learning_rate"]
    chosen = tiny.finetune_config(FinetuneConfig(learning_rate=5e-4, lora_r=8))
    assert (chosen.learning_rate, chosen.lora_r, chosen.epochs) == (5e-4, 8, TINY_FINETUNE_DEFAULTS["epochs"])

    local = build_resources(load_settings({"GOVERNED_FT_DEPLOYMENT": "local"}))["base_model"]
    aws = build_resources(load_settings({"GOVERNED_FT_DEPLOYMENT": "aws"}))["base_model"]
    assert local.finetune_defaults == TINY_FINETUNE_DEFAULTS and aws.finetune_defaults == {}
    production = aws.finetune_config(FinetuneConfig())
    assert (production.learning_rate, production.epochs, production.gradient_checkpointing) == (2e-4, 1.0, True)
