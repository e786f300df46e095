"""The catalog resource: one interface, a Databricks and a local open-source implementation."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dagster as dg
from pydantic import Field, PrivateAttr

from governed_ft_dagster.catalog.base import CatalogClient, Principal, Privilege, SecurableType
from governed_ft_dagster.catalog.connect import CatalogAccess, connect
from governed_ft_dagster.retention import DEFAULT_RETENTION_DAYS, table_properties
from governed_ft_dagster.storage import S3Endpoint

if TYPE_CHECKING:
    from governed_ft_dagster.settings import Settings


class CatalogResource(dg.ConfigurableResource, abc.ABC):
    """Hands out catalog clients that act as one of the pipeline's principals."""

    catalog: str = Field(description="Catalog that holds the raw, curated and ml schemas.")
    storage_root: str = Field(description="Root of the governed storage: s3://bucket or file:///path.")
    storage_region: str = Field(default="us-east-1", description="Region of the governed bucket.")
    s3_endpoint_url: Optional[str] = Field(default=None, description="S3-compatible endpoint (tests only).")
    retry_timeout_s: float = Field(default=60, description="Seconds a request keeps retrying a catalog that does "
                                                          "not answer before the asset fails.")
    table_retention_days: int = Field(default=DEFAULT_RETENTION_DAYS,
                                      description="Days every version of a governed table stays readable (its log "
                                                  "entry and its data files), so each model's data can be re-read.")
    _clients: dict = PrivateAttr(default_factory=dict)

    def client(self, principal: Principal) -> CatalogClient:
        """A client acting as the principal, made once per resource instance."""
        if principal not in self._clients:
            self._clients[principal] = connect(self.job_access(principal), retry_timeout_s=self.retry_timeout_s)
        return self._clients[principal]

    @abc.abstractmethod
    def principal_name(self, principal: Principal) -> str:
        """How the catalog names the principal in grants."""

    @abc.abstractmethod
    def job_access(self, principal: Principal) -> CatalogAccess:
        """What a job needs to reach the catalog as the principal, without any secret value."""

    def ui_url(self, full_name: str, version: Optional[int] = None) -> Optional[str]:
        """Where the deployment's catalog UI shows a table or model version; None without a UI."""
        return None

    def table_properties(self) -> dict[str, str]:
        """The Delta properties governed tables are created with: the retention of their old versions."""
        return table_properties(self.table_retention_days)

    def table_name(self, relative: str) -> str:
        return f"{self.catalog}.{relative}"

    def location(self, relative: str) -> str:
        return f"{self.storage_root.rstrip('/')}/{relative.lstrip('/')}"

    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(region=self.storage_region, endpoint_url=self.s3_endpoint_url)

    def read_table(self, principal: Principal, relative_table: str, columns: Optional[list[str]] = None,
                   where: Optional[dict[str, object]] = None):
        """Rows of a governed table read with READ credentials vended to the principal, and the version read."""
        from governed_ft_dagster.storage import read_delta, storage_options

        creds = self.client(principal).temporary_table_credentials(self.table_name(relative_table), "READ")
        return read_delta(creds.location, storage_options(creds, self.endpoint()), columns, where=where)

    def grant_table_readers(self, owner: Principal, relative_table: str) -> list[str]:
        """As the table's owner, grant the design's table-level privileges on it; return what was granted."""
        from governed_ft_dagster.governance import GRANTS

        client = self.client(owner)
        granted = []
        for grant in GRANTS:
            if grant.securable_type == "table" and grant.name == relative_table:
                grantee = self.principal_name(grant.principal)
                full_name = self.table_name(relative_table)
                if grant.privilege not in client.effective_privileges("table", full_name, grantee):
                    client.update_grants("table", full_name, grantee, add=[grant.privilege])
                    granted.append(f"{grant.privilege.value} on {full_name} to {grant.principal.value}")
        return granted

    def preflight(self, principal: Principal, requirements: list[tuple[SecurableType, str, Privilege]]) -> None:
        """Fail before any job starts when the principal lacks a privilege it needs."""
        name = self.principal_name(principal)
        display = principal.value if name == principal.value else f"{principal.value} ({name})"
        self.client(principal).require(name, requirements, display=display)


class LocalCatalogResource(CatalogResource):
    """The open-source catalog server of the local stack; tokens come from the state folder."""

    url: str = Field(description="Base URL of the local catalog server.")
    home: str = Field(description="State folder holding the principals' tokens.")

    def principal_name(self, principal: Principal) -> str:
        from governed_ft_dagster.governance import principal_email

        return principal_email(principal)

    def job_access(self, principal: Principal) -> CatalogAccess:
        from governed_ft_dagster.stack.bootstrap import token_path

        return CatalogAccess("oss", self.url, principal.value, self.catalog,
                             token_file=str(token_path(Path(self.home), principal)))


def local_catalog_resource(settings: "Settings") -> LocalCatalogResource:
    """The local stack's catalog resource for these settings."""
    return LocalCatalogResource(catalog=settings.catalog_name, url=settings.uc_url, home=str(settings.home),
                                storage_root=(settings.home / "warehouse").as_uri(),
                                table_retention_days=settings.table_retention_days)


class DatabricksCatalogResource(CatalogResource):
    """Unity Catalog on Databricks; each principal's OAuth client lives in AWS Secrets Manager."""

    host: str = Field(description="Workspace URL, e.g. https://dbc-1234.cloud.databricks.com.")
    region: str = Field(description="AWS region of the principals' secrets.")
    secret_prefix: str = Field(default="governed-ft/", description="Secrets Manager id prefix; the id is prefix + principal.")
    application_ids: dict[str, str] = Field(default_factory=dict, description="Service principal application id per principal role.")
    aws_endpoint_url: Optional[str] = Field(default=None, description="AWS endpoint for Secrets Manager (tests only).")

    def ui_url(self, full_name: str, version: Optional[int] = None) -> Optional[str]:
        path = full_name.replace(".", "/")
        if version is not None:
            return f"{self.host.rstrip('/')}/explore/data/models/{path}/version/{version}"
        return f"{self.host.rstrip('/')}/explore/data/{path}"

    def job_access(self, principal: Principal) -> CatalogAccess:
        return CatalogAccess("databricks", self.host, principal.value, self.catalog,
                             secret_id=f"{self.secret_prefix}{principal.value}", region=self.region,
                             aws_endpoint_url=self.aws_endpoint_url)

    def preflight(self, principal: Principal, requirements: list[tuple[SecurableType, str, Privilege]]) -> None:
        """Also EXTERNAL USE SCHEMA wherever table data is read or written: vending to the jobs needs it here."""
        super().preflight(principal, [*requirements, *external_use_requirements(requirements)])

    def principal_name(self, principal: Principal) -> str:
        if principal.value in self.application_ids:
            return self.application_ids[principal.value]
        return self.client(principal).client_id  # type: ignore[attr-defined]


def external_use_requirements(
        requirements: list[tuple[SecurableType, str, Privilege]]) -> list[tuple[SecurableType, str, Privilege]]:
    """EXTERNAL USE SCHEMA on the schema of every table read or written, and of every schema written."""
    schemas: dict[str, None] = {}
    for securable_type, full_name, privilege in requirements:
        if securable_type == "table" and privilege in (Privilege.SELECT, Privilege.MODIFY):
            schemas[full_name.rsplit(".", 1)[0]] = None
        elif securable_type == "schema" and privilege == Privilege.MODIFY:
            schemas[full_name] = None
    return [("schema", schema, Privilege.EXTERNAL_USE_SCHEMA) for schema in schemas]
