"""Catalog clients (Unity Catalog on Databricks and the open-source server); no Dagster imports."""

from governed_ft_dagster.catalog.base import (
    CatalogClient,
    CatalogError,
    CatalogPermissionError,
    CatalogUnavailableError,
    ColumnInfo,
    Principal,
    Privilege,
    StorageRefusedError,
    TableInfo,
    VendedCredentials,
)

__all__ = [
    "CatalogClient",
    "CatalogError",
    "CatalogPermissionError",
    "CatalogUnavailableError",
    "ColumnInfo",
    "Principal",
    "Privilege",
    "StorageRefusedError",
    "TableInfo",
    "VendedCredentials",
]
