"""Resource maps per deployment, chosen in one place."""

from __future__ import annotations

import dagster as dg

from governed_ft_dagster.resources.catalog import DatabricksCatalogResource, LocalCatalogResource
from governed_ft_dagster.resources.edgar import EdgarResource
from governed_ft_dagster.settings import Settings


def _edgar(settings: Settings) -> EdgarResource:
    return EdgarResource(
        source=settings.edgar_source,
        user_agent=dg.EnvVar("GOVERNED_FT_EDGAR_USER_AGENT") if settings.edgar_source == "live" else None,
        cache_dir=str(settings.home / "edgar_cache"),
        local_root=str(settings.home / "edgar_sample"),
    )


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The embedded stack: OSS catalog, local Spark and a local training process."""
    return {
        "catalog": LocalCatalogResource(catalog=settings.catalog_name, url=settings.uc_url, home=str(settings.home),
                                        storage_root=(settings.home / "warehouse").as_uri()),
        "edgar": _edgar(settings),
    }


def aws_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Databricks Unity Catalog, EMR Serverless and SageMaker."""
    return {
        "catalog": DatabricksCatalogResource(
            catalog=settings.catalog_name,
            host=dg.EnvVar("DATABRICKS_HOST"),
            region=dg.EnvVar("AWS_REGION"),
            storage_region=dg.EnvVar("AWS_REGION"),
            storage_root=dg.EnvVar("GOVERNED_FT_STORAGE_ROOT"),
        ),
        "edgar": _edgar(settings),
    }


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The one place where the deployment picks the resources."""
    return {"local": local_resources, "aws": aws_resources}[settings.deployment](settings)
