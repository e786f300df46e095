"""How a job script reaches the catalog as its own principal, from arguments that carry no secret."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from governed_ft_dagster.catalog.base import CatalogClient, CatalogError


@dataclass(frozen=True)
class CatalogAccess:
    """Where the catalog is and where the principal's credential lives (a file or a secret id, never the value)."""

    kind: str
    url: str
    principal: str
    catalog: str
    token_file: str | None = None
    secret_id: str | None = None
    region: str | None = None
    aws_endpoint_url: str | None = None

    def as_args(self) -> list[str]:
        """Command-line arguments that reproduce this access in a job."""
        args = ["--catalog-kind", self.kind, "--catalog-url", self.url, "--catalog-principal", self.principal,
                "--catalog-name", self.catalog]
        for flag, value in (("--catalog-token-file", self.token_file), ("--catalog-secret-id", self.secret_id),
                            ("--catalog-region", self.region), ("--aws-endpoint-url", self.aws_endpoint_url)):
            if value:
                args += [flag, value]
        return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments `CatalogAccess.as_args` writes."""
    parser.add_argument("--catalog-kind", choices=("oss", "databricks"), required=True)
    parser.add_argument("--catalog-url", required=True)
    parser.add_argument("--catalog-principal", required=True)
    parser.add_argument("--catalog-name", required=True)
    parser.add_argument("--catalog-token-file")
    parser.add_argument("--catalog-secret-id")
    parser.add_argument("--catalog-region")
    parser.add_argument("--aws-endpoint-url")


def from_args(args: argparse.Namespace) -> CatalogAccess:
    return CatalogAccess(args.catalog_kind, args.catalog_url, args.catalog_principal, args.catalog_name,
                         args.catalog_token_file, args.catalog_secret_id, args.catalog_region, args.aws_endpoint_url)


def connect(access: CatalogAccess) -> CatalogClient:
    """A client acting as the job's principal: a local token file (oss) or an OAuth secret in Secrets Manager."""
    if access.kind == "oss":
        if not access.token_file:
            raise CatalogError(f"no token file given for principal '{access.principal}'; pass --catalog-token-file")
        from governed_ft_dagster.catalog.oss import OssCatalogClient

        try:
            token = Path(access.token_file).read_text().strip()
        except FileNotFoundError:
            raise CatalogError(f"the token file of principal '{access.principal}' is missing; run `governed-ft bootstrap`") from None
        return OssCatalogClient(access.url, token, access.principal)
    if not access.secret_id or not access.region:
        raise CatalogError(f"principal '{access.principal}' needs --catalog-secret-id and --catalog-region to reach Databricks")
    from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient

    return DatabricksCatalogClient.from_aws_secret(access.url, access.principal, access.secret_id, access.region,
                                                   catalog=access.catalog, endpoint_url=access.aws_endpoint_url)
