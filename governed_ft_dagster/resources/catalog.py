"""The catalog resource: one interface, a Databricks and a local open-source implementation."""

from __future__ import annotations

import abc
from pathlib import Path

import dagster as dg
from pydantic import Field

from governed_ft_dagster.catalog.base import CatalogClient, Principal, Privilege, SecurableType


class CatalogResource(dg.ConfigurableResource, abc.ABC):
    """Hands out catalog clients that act as one of the pipeline's principals."""

    catalog: str = Field(description="Catalog that holds the raw, curated and ml schemas.")

    @abc.abstractmethod
    def client(self, principal: Principal) -> CatalogClient:
        """A client acting as the principal."""

    @abc.abstractmethod
    def principal_name(self, principal: Principal) -> str:
        """How the catalog names the principal in grants."""

    def table_name(self, relative: str) -> str:
        return f"{self.catalog}.{relative}"

    def preflight(self, principal: Principal, requirements: list[tuple[SecurableType, str, Privilege]]) -> None:
        """Fail before any job starts when the principal lacks a privilege it needs."""
        client = self.client(principal)
        client.require(self.principal_name(principal), requirements)


class LocalCatalogResource(CatalogResource):
    """The open-source catalog server of the local stack; tokens come from the state folder."""

    url: str = Field(description="Base URL of the local catalog server.")
    home: str = Field(description="State folder holding the principals' tokens.")

    def client(self, principal: Principal) -> CatalogClient:
        from governed_ft_dagster.catalog.oss import OssCatalogClient
        from governed_ft_dagster.stack.bootstrap import read_token

        return OssCatalogClient(self.url, read_token(Path(self.home), principal), principal.value)

    def principal_name(self, principal: Principal) -> str:
        from governed_ft_dagster.governance import principal_email

        return principal_email(principal)


class DatabricksCatalogResource(CatalogResource):
    """Unity Catalog on Databricks; each principal's OAuth client lives in AWS Secrets Manager."""

    host: str = Field(description="Workspace URL, e.g. https://dbc-1234.cloud.databricks.com.")
    region: str = Field(description="AWS region of the principals' secrets.")
    secret_prefix: str = Field(default="governed-ft/", description="Secrets Manager id prefix; the id is prefix + principal.")
    application_ids: dict[str, str] = Field(default_factory=dict, description="Service principal application id per principal role.")
    timeout_s: float = 30.0

    def client(self, principal: Principal) -> CatalogClient:
        from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient, secret_from_aws

        client_id, client_secret = secret_from_aws(f"{self.secret_prefix}{principal.value}", self.region)
        return DatabricksCatalogClient(self.host, principal.value, client_id, client_secret,
                                       catalog=self.catalog, timeout_s=self.timeout_s)

    def principal_name(self, principal: Principal) -> str:
        return self.application_ids.get(principal.value, principal.value)
