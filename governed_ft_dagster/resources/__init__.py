"""Resource maps per deployment, chosen in one place."""

from __future__ import annotations

import dagster as dg

from governed_ft_dagster.resources.catalog import DatabricksCatalogResource, LocalCatalogResource
from governed_ft_dagster.settings import Settings


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The embedded stack: OSS catalog, local Spark and a local training process."""
    return {
        "catalog": LocalCatalogResource(catalog=settings.catalog_name, url=settings.uc_url, home=str(settings.home)),
    }


def aws_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Databricks Unity Catalog, EMR Serverless and SageMaker."""
    return {
        "catalog": DatabricksCatalogResource(
            catalog=settings.catalog_name,
            host=dg.EnvVar("DATABRICKS_HOST"),
            region=dg.EnvVar("AWS_REGION"),
        ),
    }


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The one place where the deployment picks the resources."""
    return {"local": local_resources, "aws": aws_resources}[settings.deployment](settings)
