"""The whole graph on the aws path with local Spark and local training: raw to registered model version and lineage."""

from pathlib import Path

import dagster as dg

from aws_fixtures import CATALOG, secret_value
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.assets.curated import curated_training_table
from governed_ft_dagster.assets.model import uc_model_version
from governed_ft_dagster.assets.raw import raw_risk_factors
from governed_ft_dagster.assets.training import finetuned_lora_model
from governed_ft_dagster.checks import all_checks
from governed_ft_dagster.cli_lineage import graph_from_databricks
from governed_ft_dagster.governance import CURATED_TABLE, MODEL_NAME, RAW_TABLE
from governed_ft_dagster.lineage import upstream_chain
from governed_ft_dagster.resources.base_model import BaseModelResource
from governed_ft_dagster.resources.registry import DatabricksLineageResource, DatabricksRegistryResource
from governed_ft_dagster.resources.spark_jobs import LocalSparkResource
from governed_ft_dagster.resources.training_jobs import LocalTrainingResource
from test_curated_asset import tiny_base  # noqa: F401  (fixture)
from test_model_asset import world  # noqa: F401  (fixture: fake workspace with MLflow UC and lineage routes)
from test_training_asset import TINY_RUN

ASSETS = [raw_risk_factors, curated_training_table, finetuned_lora_model, uc_model_version, *all_checks]
DOWNSTREAM = [curated_training_table.key, finetuned_lora_model.key, uc_model_version.key]


def assert_no_secret_leaked(aws, instance, folders) -> None:
    """The principals' OAuth secrets, the OAuth access tokens the workspace issued and every vended credential are
    absent from everything the run left behind."""
    planted = {secret_value(p) for p in Principal} | set(aws.databricks.tokens)
    planted |= {c[k] for c in aws.databricks.vended for k in ("secret_access_key", "session_token") if c.get(k)}
    haystacks = {}
    for run in instance.get_runs():
        haystacks[f"event log of run {run.run_id}"] = "\n".join(
            f"{entry.user_message}\n{entry.dagster_event!r}" for entry in instance.all_logs(run.run_id))
    for request in aws.databricks.calls():
        if request.path != "/oidc/v1/token":
            haystacks[f"request {request.method} {request.path}"] = f"{request.body!r} {request.query!r}"
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                haystacks[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [(where, secret[:12]) for where, text in haystacks.items() for secret in planted if secret in text]
    assert len(planted) > len(Principal) and len(haystacks) > 50
    assert not leaks, leaks[:10]


def run_pipeline(instance, resources):
    for partition in ("2023|10-K", "2023|10-Q", "2024|10-K", "2024|10-Q"):
        assert dg.materialize([raw_risk_factors], partition_key=partition, instance=instance, resources=resources).success
    result = dg.materialize(ASSETS, selection=dg.AssetSelection.keys(*DOWNSTREAM), instance=instance,
                            resources=resources, raise_on_error=False,
                            run_config={"ops": {"finetuned_lora_model": {"config": TINY_RUN}}})
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    return result


def test_raw_to_model_version_with_lineage_and_an_idempotent_rerun(world, edgar, spark_home, tiny_base, tmp_path):
    aws, registry, lineage_service = world
    resources = {
        "catalog": aws.catalog_resource(), "edgar": edgar, "spark": LocalSparkResource(home=str(spark_home)),
        "training": LocalTrainingResource(work_dir=str(tmp_path / "work"), num_gpus=0),
        "base_model": BaseModelResource(model_ref=str(tiny_base)),
        "registry": DatabricksRegistryResource(host=aws.databricks.url, region="us-east-1",
                                               aws_endpoint_url=aws.moto_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                               artifact_location=(tmp_path / "mlartifacts").as_uri()),
        "lineage": DatabricksLineageResource(host=aws.databricks.url, region="us-east-1", aws_endpoint_url=aws.moto_url),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_pipeline(instance, resources)
        model = first.asset_materializations_for_node("uc_model_version")[0].metadata
        curated = first.asset_materializations_for_node("curated_training_table")[0].metadata
        training = first.asset_materializations_for_node("finetuned_lora_model")[0].metadata
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert all(checks.values()), checks
        assert_no_secret_leaked(aws, instance, [tmp_path, spark_home])
        full_name, version = f"{CATALOG}.{MODEL_NAME}", str(model["model_version"].value)
        assert model["created"].value is True
        assert model["catalog_ui"].value == f"{aws.databricks.url}/explore/data/models/{CATALOG}/ml/{MODEL_NAME.split('.')[-1]}/version/{version}"
        assert curated["catalog_ui"].value.endswith(f"/explore/data/{CATALOG}/curated/risk_factor_instructions")
        chain = upstream_chain(graph_from_databricks(resources["lineage"].workspace_client(), full_name, version),
                               full_name, version)
        assert chain["curated_table"]["full_name"] == f"{CATALOG}.{CURATED_TABLE}"
        assert int(chain["curated_table"]["version_read"]) == training["source_version"].value == curated["delta_version"].value
        assert chain["raw_table"]["full_name"] == f"{CATALOG}.{RAW_TABLE}"
        assert int(chain["raw_table"]["version_read"]) == curated["source_version"].value
        assert chain["training_run"] and chain["preprocessing_run"]
        versions_before = {name: sorted(v) for name, v in registry.versions.items()}
        lineage_before = (len(lineage_service.metadata), len(lineage_service.relationships))
        aws.databricks.clear_requests()

        again = run_pipeline(instance, resources)
        model_again = again.asset_materializations_for_node("uc_model_version")[0].metadata
        assert model_again["created"].value is False and str(model_again["model_version"].value) == version
        assert again.asset_materializations_for_node("curated_training_table")[0].metadata["up_to_date"].value is True
        assert {name: sorted(v) for name, v in registry.versions.items()} == versions_before
        assert (len(lineage_service.metadata), len(lineage_service.relationships)) == lineage_before
        assert not [c for c in aws.databricks.calls("/api/2.0/lineage-tracking") if c.method == "POST"]
        assert not aws.databricks.calls("/api/2.0/mlflow/unity-catalog/model-versions/create")
