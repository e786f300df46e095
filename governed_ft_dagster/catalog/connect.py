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

    def as_dict(self) -> dict[str, str]:
        """The access as option names (underscored, as SageMaker hyperparameters) and values."""
        values = {"catalog_kind": self.kind, "catalog_url": self.url, "catalog_principal": self.principal,
                  "catalog_name": self.catalog, "catalog_token_file": self.token_file,
                  "catalog_secret_id": self.secret_id, "catalog_region": self.region,
                  "aws_endpoint_url": self.aws_endpoint_url}
        return {k: v for k, v in values.items() if v}

    def as_args(self) -> list[str]:
        """Command-line arguments that reproduce this access in a job."""
        return [part for key, value in self.as_dict().items() for part in ("--" + key.replace("_", "-"), value)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments `CatalogAccess.as_args` writes."""
    for name in ("catalog_kind", "catalog_url", "catalog_principal", "catalog_name", "catalog_token_file",
                 "catalog_secret_id", "catalog_region", "aws_endpoint_url"):
        parser.add_argument("--" + name.replace("_", "-"), "--" + name, dest=name)


def from_args(args: argparse.Namespace) -> CatalogAccess:
    """The access the arguments describe; a CatalogError names what is missing."""
    missing = [n for n in ("catalog_kind", "catalog_url", "catalog_principal", "catalog_name") if not getattr(args, n, None)]
    if missing:
        raise CatalogError(f"the job was started without {', '.join('--' + n for n in missing)}")
    if args.catalog_kind not in ("oss", "databricks"):
        raise CatalogError(f"--catalog-kind must be 'oss' or 'databricks', not {args.catalog_kind!r}")
    return CatalogAccess(args.catalog_kind, args.catalog_url, args.catalog_principal, args.catalog_name,
                         args.catalog_token_file, args.catalog_secret_id, args.catalog_region, args.aws_endpoint_url)


def connect(access: CatalogAccess, *, retry_timeout_s: float = 60) -> CatalogClient:
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
                                                   catalog=access.catalog, endpoint_url=access.aws_endpoint_url,
                                                   retry_timeout_s=retry_timeout_s)
