"""Reading and writing governed storage with vended credentials only (no Dagster imports)."""

from __future__ import annotations

import functools
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from governed_ft_dagster.atomic import atomic_write
from governed_ft_dagster.catalog.base import VendedCredentials


@dataclass(frozen=True)
class S3Endpoint:
    """Where S3 is reached; an endpoint URL only for S3-compatible test servers."""

    region: str = "us-east-1"
    endpoint_url: str | None = None


def storage_options(creds: VendedCredentials, endpoint: S3Endpoint = S3Endpoint()) -> dict[str, str]:
    """delta-rs storage options carrying exactly the vended credentials; empty for local paths."""
    if is_local(creds.location):
        return {}
    if not creds.aws_access_key_id:
        raise ValueError(f"the catalog vended no AWS credentials for {creds.location}")
    options = {
        "AWS_ACCESS_KEY_ID": creds.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.aws_secret_access_key or "",
        "AWS_REGION": endpoint.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "conditional_put": "etag",
    }
    if creds.aws_session_token:
        options["AWS_SESSION_TOKEN"] = creds.aws_session_token
    if endpoint.endpoint_url:
        options["AWS_ENDPOINT_URL"] = endpoint.endpoint_url
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def is_local(uri: str) -> bool:
    return uri.startswith("file:") or uri.startswith("/")


def local_path(uri: str) -> Path:
    return Path(urlparse(uri).path) if uri.startswith("file:") else Path(uri)


def join(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative.lstrip('/')}"


def put_json(uri: str, document: Any, creds: VendedCredentials, endpoint: S3Endpoint = S3Endpoint()) -> None:
    """Write one JSON document atomically (local) or as one object (S3) with vended credentials."""
    body = json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")
    if is_local(uri):
        atomic_write(local_path(uri), body)
        return
    parsed = urlparse(uri)
    _s3(creds, endpoint).put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body,
                                    ContentType="application/json")


@functools.lru_cache(maxsize=8)
def _s3(creds: VendedCredentials, endpoint: S3Endpoint):
    """One S3 client per set of vended credentials (clients are costly to build)."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=creds.aws_access_key_id, aws_secret_access_key=creds.aws_secret_access_key,
        aws_session_token=creds.aws_session_token, region_name=endpoint.region,
    ).client("s3", endpoint_url=endpoint.endpoint_url)


@dataclass(frozen=True)
class MergeResult:
    """Outcome of merging rows into a Delta table."""

    version: int
    inserted: int
    updated: int
    created: bool


def delta_version(location: str, options: dict[str, str]) -> int | None:
    """The table's current Delta version, or None when no table is there yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(location, storage_options=options).version()
    except TableNotFoundError:
        return None


def merge_rows(location: str, rows: pa.Table, key: str, options: dict[str, str],
               changed_when: str | None = None) -> MergeResult:
    """Insert rows whose key is new and update those whose `changed_when` holds; create the table if absent."""
    from deltalake import DeltaTable, write_deltalake

    if delta_version(location, options) is None:
        write_deltalake(location, rows, mode="append", storage_options=options)
        return MergeResult(DeltaTable(location, storage_options=options).version(), rows.num_rows, 0, True)
    table = DeltaTable(location, storage_options=options)
    merger = table.merge(rows, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t")
    if changed_when:
        merger = merger.when_matched_update_all(predicate=changed_when)
    metrics = merger.when_not_matched_insert_all().execute()
    version = DeltaTable(location, storage_options=options).version()
    return MergeResult(version, int(metrics.get("num_target_rows_inserted", 0)),
                       int(metrics.get("num_target_rows_updated", 0)), False)


def read_delta(location: str, options: dict[str, str], columns: list[str] | None = None,
               version: int | None = None, where: dict[str, object] | None = None) -> tuple[pa.Table, int]:
    """The table's rows (optionally some columns, at a version, where columns equal values) and the version read."""
    from deltalake import DeltaTable

    table = DeltaTable(location, version=version, storage_options=options)
    filters = [(column, "=", value) for column, value in (where or {}).items()] or None
    return table.to_pyarrow_table(columns=columns, filters=filters), table.version()


def extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files and folders under dest; refuse links, devices and paths that leave dest."""
    root = Path(dest).resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or (target != root and root not in target.parents):
            raise ValueError(f"the archive member {member.name!r} is not a plain file or folder inside the "
                             "archive's own tree; refusing to extract it")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 also strips unsafe modes
        tar.extractall(root, filter="data")
    else:
        tar.extractall(root)  # noqa: S202 - every member was checked above
