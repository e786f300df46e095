"""Reading and writing governed storage with vended credentials only (no Dagster imports)."""

from __future__ import annotations

import functools
import json
import re
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
               changed_when: str | None = None, properties: dict[str, str] | None = None) -> MergeResult:
    """Insert rows whose key is new and update those whose `changed_when` holds; create the table if absent, with
    the given table properties (set on an existing table where they differ)."""
    from deltalake import DeltaTable, write_deltalake

    if delta_version(location, options) is None:
        write_deltalake(location, rows, mode="append", storage_options=options, configuration=properties or None)
        return MergeResult(DeltaTable(location, storage_options=options).version(), rows.num_rows, 0, True)
    table = DeltaTable(location, storage_options=options)
    configured = table.metadata().configuration or {}
    if properties and any(configured.get(k) != v for k, v in properties.items()):
        table.alter.set_table_properties(dict(properties))
        table = DeltaTable(location, storage_options=options)
    merger = table.merge(rows, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t")
    if changed_when:
        merger = merger.when_matched_update_all(predicate=changed_when)
    metrics = merger.when_not_matched_insert_all().execute()
    version = DeltaTable(location, storage_options=options).version()
    return MergeResult(version, int(metrics.get("num_target_rows_inserted", 0)),
                       int(metrics.get("num_target_rows_updated", 0)), False)


def add_missing_columns(location: str, options: dict[str, str], schema: pa.Schema) -> list[str]:
    """Add the schema's nullable columns that the Delta table lacks (a table written by an earlier release)."""
    from deltalake import DeltaTable
    from deltalake.schema import Field

    table = DeltaTable(location, storage_options=options)
    present = {f.name for f in table.schema().fields}
    missing = [f for f in schema if f.name not in present and f.nullable]
    if missing:
        table.alter.add_columns([Field.from_arrow(f) for f in missing])
    return [f.name for f in missing]


def read_delta(location: str, options: dict[str, str], columns: list[str] | None = None,
               version: int | None = None, where: dict[str, object] | None = None,
               filters: list[tuple[str, str, object]] | None = None) -> tuple[pa.Table, int]:
    """The table's rows (optionally some columns, at a version, where columns equal values or pass the
    (column, op, value) filters) and the version read."""
    from deltalake import DeltaTable

    table = DeltaTable(location, version=version, storage_options=options)
    filters = [(column, "=", value) for column, value in (where or {}).items()] + list(filters or []) or None
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


class TableVersionGone(LookupError):
    """A Delta version can no longer be read: its log entry or its data files were removed."""

    def __init__(self, location: str, version: int, why: str):
        self.location, self.version, self.why = location, version, why
        super().__init__(f"version {version} of the Delta table at {location} is gone: {why}")


_MISSING_FILE = ("not found", "no such file", "nosuchkey", "404", "does not exist")


def read_version(location: str, options: dict[str, str], version: int,
                 columns: list[str] | None = None) -> pa.Table:
    """The rows of exactly one Delta version; TableVersionGone when log cleanup or VACUUM removed it."""
    from deltalake import DeltaTable

    latest = DeltaTable(location, storage_options=options)
    if version > latest.version():
        raise TableVersionGone(location, version, f"the table there was created anew: its latest version is "
                                                  f"{latest.version()}")
    try:
        table = DeltaTable(location, version=version, storage_options=options)
    except Exception as exc:
        first = min(commit_times(location, options), default=latest.version())
        raise TableVersionGone(location, version, f"its log entry was removed by log cleanup (the log now starts "
                                                  f"at version {first}; {type(exc).__name__})") from None
    names = {f.name for f in table.schema().fields}
    try:
        return table.to_pyarrow_table(columns=[c for c in columns if c in names] if columns else None)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".lower()
        if isinstance(exc, FileNotFoundError) or any(marker in text for marker in _MISSING_FILE):
            missing = next((uri.rsplit("/", 1)[-1] for uri in table.file_uris() if uri.rsplit("/", 1)[-1] in str(exc)),
                           "a data file")
            raise TableVersionGone(location, version, f"{missing} was deleted by VACUUM") from None
        raise


def commit_times(location: str, options: dict[str, str]) -> dict[int, "dt.datetime"]:
    """Version → when its commit file was written, for every version still in the table's log: the time log
    cleanup goes by. Read by listing `_delta_log/` (delta-rs' history() holds the GIL while it waits on the store)."""
    import datetime as dt

    pattern = re.compile(r"(\d{20})\.json")
    if is_local(location):
        log = local_path(location) / "_delta_log"
        return {int(m.group(1)): dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc)
                for p in log.glob("*.json") if (m := pattern.fullmatch(p.name))}
    client, bucket, prefix = _log_client(location, options)
    times = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if m := pattern.fullmatch(item["Key"].rsplit("/", 1)[-1]):
                times[int(m.group(1))] = item["LastModified"]
    return times


def _log_client(location: str, options: dict[str, str]) -> tuple[Any, str, str]:
    """An S3 client with exactly the storage options' credentials, and the bucket and prefix of the table's log."""
    import boto3

    parsed = urlparse(location)
    client = boto3.session.Session(
        aws_access_key_id=options.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=options.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=options.get("AWS_SESSION_TOKEN"), region_name=options.get("AWS_REGION"),
    ).client("s3", endpoint_url=options.get("AWS_ENDPOINT_URL"))
    return client, parsed.netloc, f"{parsed.path.strip('/')}/_delta_log/"


def table_configuration(location: str, options: dict[str, str]) -> dict[str, str]:
    """The Delta table's properties (its configuration)."""
    from deltalake import DeltaTable

    return dict(DeltaTable(location, storage_options=options).metadata().configuration or {})


def commit_user_metadata(location: str, options: dict[str, str], version: int) -> dict[str, str]:
    """The JSON properties a writer put in the commit of one version (Spark's commitInfo.userMetadata), or {}."""
    name = f"{version:020d}.json"
    try:
        if is_local(location):
            text = (local_path(location) / "_delta_log" / name).read_text(encoding="utf-8")
        else:
            client, bucket, prefix = _log_client(location, options)
            text = client.get_object(Bucket=bucket, Key=prefix + name)["Body"].read().decode("utf-8")
    except Exception:  # the commit file is gone (log cleanup) or unreadable: no properties to carry
        return {}
    for line in text.splitlines():
        info = json.loads(line).get("commitInfo") if line.strip() else None
        if info and info.get("userMetadata"):
            try:
                found = json.loads(info["userMetadata"])
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}
