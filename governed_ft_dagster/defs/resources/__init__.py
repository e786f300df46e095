"""Resource maps per deployment, chosen in one place."""

from __future__ import annotations

import dagster as dg

from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.catalog import DatabricksCatalogResource, local_catalog_resource
from governed_ft_dagster.defs.resources.edgar import EdgarResource
from governed_ft_dagster.defs.resources.registry import (
    DatabricksLineageResource,
    DatabricksRegistryResource,
    OpenLineageFileLineageResource,
    local_registry_resource,
    openlineage_path,
)
from governed_ft_dagster.defs.resources.spark_jobs import EmrServerlessResource, LocalSparkResource
from governed_ft_dagster.defs.resources.training_jobs import LocalTrainingResource, SageMakerTrainingResource
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.provision.policies import StackConfig
from governed_ft_dagster.settings import Settings
from governed_ft_dagster.training.base_model import TINY_FINETUNE_DEFAULTS


def _edgar(settings: Settings) -> EdgarResource:
    return EdgarResource(
        source=settings.edgar_source,
        user_agent=dg.EnvVar("GOVERNED_FT_EDGAR_USER_AGENT") if settings.edgar_source == "live" else None,
        cache_dir=str(settings.home / "edgar_cache"),
        local_root=str(settings.home / "edgar_sample"),
        sample_fiscal_years=list(settings.fiscal_years),
    )


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The embedded stack: OSS catalog, local Spark and a local training process."""
    return {
        "catalog": local_catalog_resource(settings),
        "edgar": _edgar(settings),
        "spark": LocalSparkResource(home=str(settings.home), jar_groups=["spark", "uc-spark"]),
        "training": LocalTrainingResource(work_dir=str(settings.home), mlflow_tracking_uri=settings.mlflow_tracking_uri,
                                          mlflow_artifact_location=settings.mlflow_artifact_location,
                                          mlflow_ui_url=settings.mlflow_ui_url),
        "base_model": _local_base_model(settings),
        "registry": local_registry_resource(settings),
        "lineage": OpenLineageFileLineageResource(path=str(openlineage_path(settings.home))),
    }


def _local_base_model(settings: Settings) -> BaseModelResource:
    """The tiny stand-in built in the state folder, or the base GOVERNED_FT_BASE_MODEL names (a folder, or a hub id
    at a pinned revision, trained on a local GPU when there is one)."""
    if settings.tiny_base:
        return BaseModelResource(model_ref=settings.base_model_ref, build_tiny_if_missing=True,
                                 tiny_corpus_dir=str(settings.home / "edgar_sample" / "Archives"),
                                 finetune_defaults=TINY_FINETUNE_DEFAULTS)
    return BaseModelResource(model_ref=settings.base_model_ref, revision=settings.base_model_revision or None)


def aws_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Databricks Unity Catalog, EMR Serverless and SageMaker; names and ARNs come from the environment."""
    region = dg.EnvVar("AWS_REGION")
    names = StackConfig(name=settings.stack_name)
    return {
        "catalog": DatabricksCatalogResource(
            catalog=settings.catalog_name,
            host=dg.EnvVar("DATABRICKS_HOST"),
            region=region,
            storage_region=region,
            storage_root=dg.EnvVar("GOVERNED_FT_STORAGE_ROOT"),
            secret_prefix=names.secret_prefix,
            table_retention_days=settings.table_retention_days,
        ),
        "edgar": _edgar(settings),
        "spark": EmrServerlessResource(
            region=region,
            application_name=names.emr_application_name,
            execution_role_arn=dg.EnvVar("GOVERNED_FT_EMR_ROLE_ARN"),
            code_prefix=dg.EnvVar("GOVERNED_FT_CODE_PREFIX"),
            log_group=dg.EnvVar("GOVERNED_FT_EMR_LOG_GROUP"),
        ),
        "training": SageMakerTrainingResource(
            region=region,
            role_arn=dg.EnvVar("GOVERNED_FT_SAGEMAKER_ROLE_ARN"),
            checkpoint_s3_uri=dg.EnvVar("GOVERNED_FT_CHECKPOINT_URI"),
            output_s3_uri=dg.EnvVar("GOVERNED_FT_TRAINING_OUTPUT_URI"),
            code_s3_prefix=dg.EnvVar("GOVERNED_FT_CODE_PREFIX"),
            base_model_id=settings.base_model_ref,
            base_model_revision=dg.EnvVar("GOVERNED_FT_MODEL_REVISION"),
        ),
        "base_model": BaseModelResource(model_ref=settings.base_model_ref,
                                        tokenizer_dir=dg.EnvVar("GOVERNED_FT_TOKENIZER_DIR")),
        "registry": DatabricksRegistryResource(host=dg.EnvVar("DATABRICKS_HOST"), region=region,
                                               secret_id=names.secret_name(Principal.REGISTRAR),
                                               model_name=settings.model_name),
        "lineage": DatabricksLineageResource(host=dg.EnvVar("DATABRICKS_HOST"), region=region,
                                             secret_id=names.secret_name(Principal.REGISTRAR)),
    }


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The one place where the deployment picks the resources."""
    return {"local": local_resources, "aws": aws_resources}[settings.deployment](settings)
