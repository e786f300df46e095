"""MLflow's Unity Catalog model registry (`databricks-uc`) served by a running FakeDatabricks.

Usage::

    registry = install(fake, storage_root="s3://governed-lake/ml/models", moto_url=moto_url)
    ...  # mlflow with registry URI "databricks-uc" and DATABRICKS_HOST=fake.url
    registry.versions["cat.ml.model"]["1"]["status"] == "READY"

Paths and shapes follow `mlflow/protos/databricks_uc_registry_service.proto` (`/api/2.0/mlflow/unity-catalog/...`).
Registered models live in `fake.models`, shared with the SDK's `/api/2.1/unity-catalog/models` routes, so grants
and ownership are the fake's own: creating a model needs USE CATALOG, USE SCHEMA and CREATE MODEL; creating,
uploading, finalizing or tagging a version needs ownership of the model; reading needs ownership or EXECUTE.
Write credentials are vended only for a version still PENDING_REGISTRATION, scoped to its storage location; with
a moto URL they come from moto's STS and finalize checks that the model's MLmodel file was uploaded there.

`is-databricks-sdk-models-artifact-repository-enabled` answers `sdk_models_repo`: False makes MLflow upload a
version's files with those credentials straight to S3; True makes it use the Files API under
`/Models/<catalog>/<schema>/<model>/<version>` (`mlflow/store/artifact/databricks_sdk_models_artifact_repo.py`),
which a FilesApi serves through `model_files`: the same storage location, ownership and status rules.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3

from fake_databricks import ApiError, FakeDatabricks, RecordedRequest, _now_ms, _split3

PREFIX = "/api/2.0/mlflow/unity-catalog"
_NAME_FILTER = re.compile(r"\s*name\s*=\s*'(?P<name>[^']+)'\s*")
_RUN_FILTER = re.compile(r"\s*run_id\s*=\s*'(?P<run_id>[^']+)'\s*")
_READ_WRITE = "MODEL_VERSION_OPERATION_READ_WRITE"
_READ = "MODEL_VERSION_OPERATION_READ"


@dataclass
class FakeMlflowUc:
    """In-memory model versions and registered-model tags of the fake workspace's MLflow registry."""

    fake: FakeDatabricks
    storage_root: str
    moto_url: str | None = None
    region: str = "us-east-1"
    admin_keys: dict[str, str] = field(default_factory=lambda: {"aws_access_key_id": "testing",
                                                                "aws_secret_access_key": "testing"})
    versions: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    model_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    sdk_models_repo: bool = False

    def storage_location(self, full_name: str, version: str | None = None) -> str:
        base = f"{self.storage_root.rstrip('/')}/{full_name}"
        return base if version is None else f"{base}/{version}"

    def boto(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.moto_url, **self.admin_keys)

    def vend(self, location: str, operation: str, principal: str) -> dict[str, Any]:
        """Temporary AWS credentials for one storage location, from moto's STS when it runs."""
        if self.moto_url is None or self.fake.vendor is not None:
            creds = self.fake.mint_storage_credentials(location, operation, principal)
        else:
            issued = self.boto("sts").assume_role(
                RoleArn="arn:aws:iam::123456789012:role/unity-catalog-model-storage",
                RoleSessionName=re.sub(r"[^\w+=,.@-]", "-", principal)[:64] or "uc",
            )["Credentials"]
            creds = {"access_key_id": issued["AccessKeyId"], "secret_access_key": issued["SecretAccessKey"],
                     "session_token": issued["SessionToken"]}
            with self.fake._lock:
                self.fake.vended.append({"location": location, "operation": operation, "principal": principal,
                                         **creds})
        return {"aws_temp_credentials": creds, "expiration_time": _now_ms() + self.fake.credential_ttl_s * 1000,
                "storage_mode": "CUSTOMER_HOSTED"}

    def model_files(self, principal: str, rest: str, write: bool) -> str:
        """S3 URL of a path under /Models/<catalog>/<schema>/<model>/<version>: the owner writes a version still
        PENDING_REGISTRATION, the owner or a holder of EXECUTE reads."""
        parts = rest.split("/", 4)
        if len(parts) < 4:
            raise ApiError(404, "NOT_FOUND", f"/Models/{rest} is not a model version path.")
        full_name, version = ".".join(parts[:3]), parts[3]
        _model(self, principal, full_name, "owner" if write else "read")
        found = _version(self, full_name, version)
        if write and found["status"] != "PENDING_REGISTRATION":
            raise ApiError(400, "INVALID_STATE",
                           f"Model version {full_name}/{version} is {found['status']}; its files are read-only.")
        return f"{found['storage_location'].rstrip('/')}/{parts[4] if len(parts) > 4 else ''}".rstrip("/")

    def uploaded(self, location: str) -> list[str]:
        """Object keys under a storage location in moto's S3."""
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        paginator = self.boto("s3").get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def install(
    fake: FakeDatabricks, *, storage_root: str = "s3://governed-lake/ml/models", moto_url: str | None = None,
    region: str = "us-east-1",
) -> FakeMlflowUc:
    """Serve the MLflow Unity Catalog registry routes from fake; returns the registry's state, whose model versions
    are the workspace's (`fake.model_versions`). Mount `model_files` on a FilesApi before setting sdk_models_repo."""
    registry = FakeMlflowUc(fake, storage_root, moto_url, region, versions=fake.model_versions)

    def bind(handler: Any) -> Any:
        return lambda f, request, **groups: handler(registry, request, **groups)

    for method, path, handler in [
        ("POST", "registered-models/create", _create_model),
        ("GET", "registered-models/get", _get_model),
        ("GET", "registered-models/search", _search_models),
        ("PATCH", "registered-models/update", _update_model),
        ("POST", "registered-models/set-tag", _set_model_tag),
        ("GET", "registered-models:is-databricks-sdk-models-artifact-repository-enabled", _sdk_repo_enabled),
        ("POST", "model-versions/create", _create_version),
        ("GET", "model-versions/get", _get_version),
        ("GET", "model-versions/search", _search_versions),
        ("POST", "model-versions/finalize", _finalize_version),
        ("POST", "model-versions/set-tag", _set_version_tag),
        ("PATCH", "model-versions/update", _update_version),
        ("POST", "model-versions/generate-temporary-credentials", _version_credentials),
        ("GET", "model-versions/get-download-uri", _download_uri),
    ]:
        fake.add_route(method, re.escape(f"{PREFIX}/{path}"), bind(handler))
    return registry


# ---- request helpers -------------------------------------------------------------------------------------------


def _args(request: RecordedRequest) -> dict[str, Any]:
    """Body fields of a POST/PATCH, query parameters of a GET."""
    if request.method == "GET":
        return {k: v[-1] for k, v in request.query.items()}
    return request.body if isinstance(request.body, dict) else {}


def _required(args: dict[str, Any], *keys: str) -> list[Any]:
    missing = [k for k in keys if not args.get(k)]
    if missing:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field(s): {', '.join(missing)}.")
    return [args[k] for k in keys]


def _use_parents(fake: FakeDatabricks, principal: str | None, full_name: str) -> None:
    catalog, schema, _ = _split3(full_name)
    fake.require(principal, "catalog", catalog, "USE_CATALOG")
    fake.require(principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")


def _model(reg: FakeMlflowUc, principal: str | None, full_name: str, access: str) -> dict[str, Any]:
    """The registered model after the parent checks, then ownership ("owner") or EXECUTE ("read")."""
    _use_parents(reg.fake, principal, full_name)
    info = reg.fake.models.get(full_name)
    if info is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Registered model '{full_name}' does not exist.")
    owner = principal in reg.fake.admins or info.get("owner") == principal
    if access == "owner" and not owner:
        raise ApiError(403, "PERMISSION_DENIED", f"User is not an owner of Registered Model '{full_name}'.")
    if access == "read" and not owner:
        reg.fake.require(principal, "function", full_name, "EXECUTE")
    return info


def _version(reg: FakeMlflowUc, full_name: str, version: Any) -> dict[str, Any]:
    found = reg.versions.get(full_name, {}).get(str(version))
    if found is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Model version {full_name}/{version} does not exist.")
    return found


def _model_json(reg: FakeMlflowUc, info: dict[str, Any]) -> dict[str, Any]:
    full_name = info["full_name"]
    out = {
        "name": full_name,
        "creation_timestamp": info["created_at"],
        "last_updated_timestamp": info["updated_at"],
        "user_id": info["owner"],
        "tags": [{"key": k, "value": v} for k, v in sorted(reg.model_tags.get(full_name, {}).items())],
        "aliases": [],
    }
    if info.get("comment"):
        out["description"] = info["comment"]
    return out


def _version_json(found: dict[str, Any], *, with_tags: bool = True) -> dict[str, Any]:
    out = {k: v for k, v in found.items() if k != "tags" and v not in (None, "")}
    if with_tags:
        out["tags"] = [{"key": k, "value": v} for k, v in sorted(found["tags"].items())]
        out["aliases"] = []
    return out


# ---- registered models -----------------------------------------------------------------------------------------


def _create_model(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    (full_name,) = _required(args, "name")
    catalog, schema, name = _split3(full_name)
    reg.fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    reg.fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA", "CREATE_MODEL")
    with reg.fake._lock:
        if full_name in reg.fake.models:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Registered model '{full_name}' already exists.")
        now = _now_ms()
        info = {
            "name": name, "catalog_name": catalog, "schema_name": schema, "full_name": full_name,
            "comment": args.get("description"), "owner": request.principal, "metastore_id": reg.fake.metastore_id,
            "storage_location": reg.storage_location(full_name), "created_at": now, "created_by": request.principal,
            "updated_at": now, "updated_by": request.principal,
        }
        reg.fake.models[full_name] = info
        reg.model_tags[full_name] = {t["key"]: t.get("value", "") for t in args.get("tags") or []}
        reg.versions[full_name] = {}
    return 200, {"registered_model": _model_json(reg, info)}


def _get_model(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    (full_name,) = _required(_args(request), "name")
    return 200, {"registered_model": _model_json(reg, _model(reg, request.principal, full_name, "read"))}


def _search_models(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    visible = []
    for full_name in sorted(reg.fake.models):
        try:
            visible.append(_model_json(reg, _model(reg, request.principal, full_name, "read")))
        except ApiError:
            continue
    return 200, {"registered_models": visible}


def _update_model(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    (full_name,) = _required(args, "name")
    if args.get("new_name"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "Renaming a registered model is not supported here.")
    with reg.fake._lock:
        info = _model(reg, request.principal, full_name, "owner")
        if "description" in args:
            info["comment"] = args["description"]
        info["updated_at"], info["updated_by"] = _now_ms(), request.principal
    return 200, {"registered_model": _model_json(reg, info)}


def _set_model_tag(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    full_name, key = _required(args, "name", "key")
    with reg.fake._lock:
        _model(reg, request.principal, full_name, "owner")
        reg.model_tags.setdefault(full_name, {})[key] = str(args.get("value", ""))
    return 200, {}


def _sdk_repo_enabled(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    return 200, {"is_databricks_sdk_models_artifact_repository_enabled": reg.sdk_models_repo}


# ---- model versions --------------------------------------------------------------------------------------------


def _create_version(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    full_name, source = _required(args, "name", "source")
    with reg.fake._lock:
        _model(reg, request.principal, full_name, "owner")
        versions = reg.versions.setdefault(full_name, {})
        version = str(max((int(v) for v in versions), default=0) + 1)
        now = _now_ms()
        found = {
            "name": full_name, "version": version, "creation_timestamp": now, "last_updated_timestamp": now,
            "user_id": request.principal, "description": args.get("description"), "source": source,
            "run_id": args.get("run_id"), "run_tracking_server_id": args.get("run_tracking_server_id"),
            "model_id": args.get("model_id"), "status": "PENDING_REGISTRATION",
            "storage_location": reg.storage_location(full_name, version),
            "tags": {t["key"]: t.get("value", "") for t in args.get("tags") or []},
        }
        versions[version] = found
    return 200, {"model_version": _version_json(found)}


def _get_version(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    full_name, version = _required(_args(request), "name", "version")
    _model(reg, request.principal, full_name, "read")
    return 200, {"model_version": _version_json(_version(reg, full_name, version))}


def _search_versions(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    text = str(args.get("filter") or "")
    by_name, by_run = _NAME_FILTER.fullmatch(text), _RUN_FILTER.fullmatch(text)
    if by_name is None and by_run is None:
        raise ApiError(400, "INVALID_PARAMETER_VALUE",
                       "Unsupported filter: search model versions by name='<model>' or run_id='<run>'.")
    names = [by_name["name"]] if by_name else sorted(reg.versions)
    found: list[dict[str, Any]] = []
    for full_name in names:
        try:
            _model(reg, request.principal, full_name, "read")
        except ApiError:
            if by_name:
                raise
            continue
        for version in sorted(reg.versions.get(full_name, {}).values(), key=lambda v: -int(v["version"])):
            if by_run is None or version.get("run_id") == by_run["run_id"]:
                found.append(_version_json(version, with_tags=False))
    start = int(args.get("page_token") or 0)
    size = int(args.get("max_results") or 1000)
    page = found[start:start + size]
    body: dict[str, Any] = {"model_versions": page}
    if start + size < len(found):
        body["next_page_token"] = str(start + size)
    return 200, body


def _finalize_version(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    full_name, version = _required(_args(request), "name", "version")
    with reg.fake._lock:
        _model(reg, request.principal, full_name, "owner")
        found = _version(reg, full_name, version)
        if found["status"] != "PENDING_REGISTRATION":
            raise ApiError(400, "INVALID_STATE", f"Model version {full_name}/{version} is {found['status']}.")
        if reg.moto_url is not None:
            keys = reg.uploaded(found["storage_location"])
            if not any(k.endswith("/MLmodel") for k in keys):
                raise ApiError(400, "INVALID_STATE",
                               f"No MLmodel file under {found['storage_location']}; upload the model first.")
        found["status"] = "READY"
        found["last_updated_timestamp"] = _now_ms()
    return 200, {"model_version": _version_json(found)}


def _set_version_tag(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    full_name, version, key = _required(args, "name", "version", "key")
    with reg.fake._lock:
        _model(reg, request.principal, full_name, "owner")
        found = _version(reg, full_name, version)
        found["tags"][key] = str(args.get("value", ""))
        found["last_updated_timestamp"] = _now_ms()
    return 200, {}


def _update_version(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    full_name, version = _required(args, "name", "version")
    with reg.fake._lock:
        _model(reg, request.principal, full_name, "owner")
        found = _version(reg, full_name, version)
        if "description" in args:
            found["description"] = args["description"]
        found["last_updated_timestamp"] = _now_ms()
    return 200, {"model_version": _version_json(found)}


def _version_credentials(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    args = _args(request)
    full_name, version, operation = _required(args, "name", "version", "operation")
    if operation not in (_READ, _READ_WRITE):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid operation: {operation!r}.")
    _model(reg, request.principal, full_name, "owner" if operation == _READ_WRITE else "read")
    found = _version(reg, full_name, version)
    if operation == _READ_WRITE and found["status"] != "PENDING_REGISTRATION":
        raise ApiError(400, "INVALID_STATE",
                       f"Model version {full_name}/{version} is {found['status']}; its files are read-only.")
    return 200, {"credentials": reg.vend(found["storage_location"], operation, request.principal or "")}


def _download_uri(reg: FakeMlflowUc, request: RecordedRequest) -> tuple[int, Any]:
    full_name, version = _required(_args(request), "name", "version")
    _model(reg, request.principal, full_name, "read")
    return 200, {"artifact_uri": _version(reg, full_name, version)["storage_location"]}


__all__ = ["FakeMlflowUc", "PREFIX", "install"]
