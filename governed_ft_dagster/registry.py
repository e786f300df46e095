"""Register a trained LoRA adapter as a Unity Catalog model version through MLflow (no Dagster here).

MLflow, not the Databricks SDK, creates model versions: `databricks-uc` talks to
`/api/2.0/mlflow/unity-catalog/...` with the workspace's OAuth M2M credentials from the environment, and
`uc:http://host:port` talks to the open-source catalog with the token in `MLFLOW_UC_OSS_TOKEN`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError, CatalogUnavailableError
from governed_ft_dagster.catalog.refusals import read_refusal, refusal_error
from governed_ft_dagster.lineage.derive import redact

TAG_ARTIFACT_SHA256 = "governed_ft.artifact_sha256"
TAG_HYPERPARAMETERS_SHA256 = "governed_ft.hyperparameters_sha256"
TAG_BASE_MODEL = "governed_ft.base_model"
TAG_MLFLOW_RUN = "governed_ft.mlflow_run_id"
TAG_SOURCE_TABLES = "governed_ft.source_tables"
TAG_PREPROCESSING_JOB = "governed_ft.preprocessing_job"
TAG_TRAINING_JOB = "governed_ft.training_job"
TAG_CODE_VERSION = "governed_ft.code_version"
ATTACHMENT_TAG_PREFIX = "governed_ft.attachment."
DEFAULT_MAX_NEW_TOKENS = 128
MODEL_ARTIFACT_NAME = "model"
PROBE_TIMEOUT_S = 3.0
ANSWER_TIMEOUT_S = 10.0

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string")]),
    params=ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_MAX_NEW_TOKENS)]),
)
_REQUIREMENTS = ("mlflow", "torch", "transformers", "peft", "safetensors", "tokenizers", "pandas")
_DATABRICKS_AUTH_ENV = ("DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_USERNAME", "DATABRICKS_PASSWORD")

Step = Literal["read", "create_model", "create_version"]


class RegistryUnavailableError(CatalogUnavailableError):
    """The model registry could not be reached."""


class ModelOwnershipError(CatalogPermissionError):
    """Only a registered model's owner may create its versions."""

    def __init__(self, principal: str, model: str, detail: str = ""):
        self.principal, self.securable, self.privileges = principal, f"registered model {model}", ("OWNERSHIP",)
        message = (
            f"principal '{principal}' may not create versions of registered model {model}: only the model's owner "
            f"can (CREATE MODEL on the schema covers only new models); transfer it with "
            f"`ALTER MODEL {model} OWNER TO `{principal}`` or register as its owner"
        )
        CatalogError.__init__(self, message + (f" (registry said: {detail})" if detail else ""))


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version in the registry; created is False when an identical adapter was already registered."""

    name: str
    version: str
    run_id: str
    source: str
    created: bool
    artifact_sha256: str = ""
    experiment_id: str = ""


class AdapterModel(mlflow.pyfunc.PythonModel):
    """The base model with the LoRA adapter, answering chat prompts with generated text."""

    def load_context(self, context: Any) -> None:
        """Load the tokenizer, the base model and the adapter from the model's artifacts."""
        from peft import PeftModel

        from governed_ft_dagster.training.base_model import load_base_model, load_tokenizer

        base_ref = context.artifacts.get("base_model") or (context.model_config or {})["base_model_ref"]
        self.tokenizer = load_tokenizer(base_ref)
        self.model = PeftModel.from_pretrained(load_base_model(base_ref), context.artifacts["adapter"]).eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        """One greedy completion per prompt (a DataFrame after MLflow's schema check; lists when called directly)."""
        import torch

        max_new_tokens = int((params or {}).get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        answers: list[str] = []
        for messages in chat_messages(model_input):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                output = self.model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                             pad_token_id=self.tokenizer.pad_token_id)
            prompt_length = encoded["input_ids"].shape[1]
            answers.append(self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True))
        return answers


def chat_messages(model_input: Any) -> list[list[dict[str, str]]]:
    """Conversations from a DataFrame, dict, string or list of `prompt` strings or `messages` lists."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        model_input = model_input.to_dict(orient="records")
    if isinstance(model_input, (str, dict)):
        model_input = [model_input]
    if model_input and all(isinstance(m, dict) and "role" in m for m in model_input):
        return [[_message(m) for m in model_input]]
    conversations: list[list[dict[str, str]]] = []
    for item in model_input:
        if isinstance(item, str):
            conversations.append([{"role": "user", "content": item}])
        elif isinstance(item, dict) and isinstance(item.get("messages"), (list, tuple)):
            conversations.append([_message(m) for m in item["messages"]])
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            conversations.append([{"role": "user", "content": str(item["prompt"])}])
        elif isinstance(item, (list, tuple)):
            conversations.append([_message(m) for m in item])
        else:
            raise ValueError(f"cannot read a prompt from {type(item).__name__}; send `prompt` strings or `messages`")
    return conversations


def _message(message: Any) -> dict[str, str]:
    return {"role": str(message["role"]), "content": str(message["content"])}


RUN_RECORDS = frozenset({"training_summary.json"})


def artifact_sha256(adapter_dir: Path) -> str:
    """Content hash of the adapter files (not the run's summary): relative paths and bytes, in path order."""
    files = sorted(p for p in Path(adapter_dir).rglob("*") if p.is_file() and p.name not in RUN_RECORDS)
    if not files:
        raise FileNotFoundError(f"no adapter files under {adapter_dir}")
    return digests_sha256({p.relative_to(adapter_dir).as_posix(): hashlib.sha256(p.read_bytes()).digest()
                           for p in files})


def stored_artifact_sha256(s3: Any, location: str) -> str:
    """artifact_sha256 of the adapter files under an s3:// prefix, streamed through the given S3 client."""
    bucket, _, prefix = location.removeprefix("s3://").rstrip("/").partition("/")
    digests: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) + 1:]
            if not relative or relative.endswith("/"):
                continue
            digest = hashlib.sha256()
            for chunk in s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
            digests[relative] = digest.digest()
    return digests_sha256(digests)


def digests_sha256(digests: Mapping[str, bytes]) -> str:
    """One hash over relative path → file sha256 digest pairs, in path order, run records left out."""
    kept = {path: digest for path, digest in digests.items() if path.rsplit("/", 1)[-1] not in RUN_RECORDS}
    if not kept:
        raise FileNotFoundError("no adapter files among the digests")
    combined = hashlib.sha256()
    for path in sorted(kept):
        combined.update(path.encode() + b"\0")
        combined.update(kept[path])
    return combined.hexdigest()


def hyperparameters_sha256(hyperparameters: Mapping[str, Any]) -> str:
    """Hash of the redacted hyperparameters as canonical JSON, reproducible from the logged params."""
    return hashlib.sha256(json.dumps(redact(hyperparameters), sort_keys=True).encode()).hexdigest()


def governance_tags(
    *,
    source_tables: Mapping[str, int | str],
    preprocessing_job: str,
    training_job: str,
    code_version: str,
    hyperparameters: Mapping[str, Any],
) -> dict[str, str]:
    """The standard version tags: table@delta_version list, job ids, code version and hyperparameter hash."""
    return {
        TAG_SOURCE_TABLES: ",".join(f"{name}@{version}" for name, version in sorted(source_tables.items())),
        TAG_PREPROCESSING_JOB: preprocessing_job,
        TAG_TRAINING_JOB: training_job,
        TAG_CODE_VERSION: code_version,
        TAG_HYPERPARAMETERS_SHA256: hyperparameters_sha256(hyperparameters),
    }


# ---- environment -----------------------------------------------------------------------------------------------


@contextmanager
def scoped_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the block and restore them after."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        _apply(values)
        _forget_mlflow_clients()
        yield
    finally:
        _apply(saved)
        _forget_mlflow_clients()


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _forget_mlflow_clients() -> None:
    # MLflow caches WorkspaceClients keyed by host only: without this, a later call with another principal's
    # credentials in the environment would still act as the first principal.
    from mlflow.utils.rest_utils import get_workspace_client

    get_workspace_client.cache_clear()


@contextmanager
def registry_env_for_databricks(host: str, client_id: str, client_secret: str) -> Iterator[None]:
    """OAuth M2M credentials of one service principal for the `databricks-uc` registry, for the block only."""
    env: dict[str, str | None] = {key: None for key in _DATABRICKS_AUTH_ENV}
    env.update(DATABRICKS_HOST=host, DATABRICKS_CLIENT_ID=client_id, DATABRICKS_CLIENT_SECRET=client_secret,
               DATABRICKS_AUTH_TYPE="oauth-m2m")
    with scoped_env(env):
        yield


@contextmanager
def registry_env_for_oss(url: str, token: str) -> Iterator[None]:
    """The open-source catalog's token for the `uc:` registry, for the block only."""
    with scoped_env({"MLFLOW_UC_OSS_TOKEN": token}):
        yield


@contextmanager
def _mlflow_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at these stores for the block and restore the previous setting."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    with scoped_env({"MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}):
        try:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri)
            yield
        finally:
            tracking_utils._tracking_uri, registry_utils._registry_uri = saved


# ---- registration ----------------------------------------------------------------------------------------------


def register_adapter(
    *,
    registry_uri: str,
    tracking_uri: str,
    model_full_name: str,
    adapter_dir: Path,
    base_model_ref: str,
    description: str,
    tags: Mapping[str, str],
    experiment: str,
    env: Mapping[str, str | None] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
    attachments: Mapping[str, Path] | None = None,
) -> RegisteredVersion:
    """Log the adapter as a pyfunc model in an MLflow run and register it, unless this adapter already is.

    Each attachment (name → file) becomes an artifact of the model version; the tag `governed_ft.attachment.<name>`
    names its path inside the version's files."""
    adapter_dir = Path(adapter_dir)
    sha = artifact_sha256(adapter_dir)
    version_tags = redact(tags)
    if hyperparameters is not None:
        version_tags.setdefault(TAG_HYPERPARAMETERS_SHA256, hyperparameters_sha256(hyperparameters))
    version_tags.update({TAG_ARTIFACT_SHA256: sha, TAG_BASE_MODEL: base_model_ref})
    oss = registry_uri.startswith("uc:")
    with scoped_env(env or {}), _mlflow_uris(tracking_uri, registry_uri):
        _probe(registry_uri)
        principal = _principal(registry_uri)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        with _translated(registry_uri, model_full_name, principal, "read"):
            exists = _model_exists(client, model_full_name)
            existing = _find_version(client, model_full_name, sha, oss) if exists else None
        if existing is not None:
            return RegisteredVersion(existing.name, str(existing.version), existing.run_id or "", existing.source or "",
                                     False, sha, _experiment_id(client, existing.run_id))
        if not exists:
            with _translated(registry_uri, model_full_name, principal, "create_model"):
                try:
                    client.create_registered_model(model_full_name)
                except RestException as exc:  # a concurrent registration created it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
        with _logged_model(adapter_dir, base_model_ref, experiment, version_tags, redact(hyperparameters or {}),
                           artifact_location, attachments or {}) as (run_id, source, model_id, attached):
            version_tags[TAG_MLFLOW_RUN] = run_id
            version_tags.update({f"{ATTACHMENT_TAG_PREFIX}{name}": path for name, path in attached.items()})
            if oss:  # the open-source catalog keeps no version tags: the facts travel in the comment
                description = f"{description}\n\n" + "\n".join(f"{k}={v}" for k, v in sorted(version_tags.items()))
            with _translated(registry_uri, model_full_name, principal, "create_version"):
                version = client.create_model_version(model_full_name, source, run_id=run_id, tags=version_tags,
                                                      description=description, model_id=model_id)
        return RegisteredVersion(version.name, str(version.version), run_id, version.source or source, True, sha,
                                 _experiment_id(client, run_id))


def version_facts(registry_uri: str, tracking_uri: str, model_full_name: str,
                  version: str | None = None) -> dict[str, dict[str, str]]:
    """Version → governance tags of the model's READY versions (or of one version); the open-source catalog keeps
    them as `key=value` lines of the version's comment."""
    oss = registry_uri.startswith("uc:")
    with _mlflow_uris(tracking_uri, registry_uri):
        principal = _principal(registry_uri)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        with _translated(registry_uri, model_full_name, principal, "read"):
            if version is not None:
                found = [client.get_model_version(model_full_name, str(version))]
            else:
                found = _all_versions(client, model_full_name)
                if not oss:  # search results carry no tags
                    found = [client.get_model_version(model_full_name, v.version) for v in found]
    facts = {}
    for item in found:
        if item.status not in (None, "READY"):
            continue
        if oss:
            lines = (item.description or "").splitlines()
            facts[str(item.version)] = dict(line.split("=", 1) for line in lines if "=" in line
                                            and line.split("=", 1)[0].startswith("governed_ft."))
        else:
            facts[str(item.version)] = dict(item.tags or {})
    return dict(sorted(facts.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1))


def read_version_file(registry_uri: str, tracking_uri: str, model_full_name: str, version: str, path: str) -> bytes:
    """One file of a model version's artifacts, through the registry's own access (temporary credentials)."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    with _mlflow_uris(tracking_uri, registry_uri), tempfile.TemporaryDirectory(prefix="governed-ft-read-") as tmp:
        principal = _principal(registry_uri)
        with _translated(registry_uri, model_full_name, principal, "read"):
            repository = ModelsArtifactRepository(f"models:/{model_full_name}/{version}")
            local = repository.download_artifacts(path, dst_path=tmp)
        return Path(local).read_bytes()


def _experiment_id(client: mlflow.MlflowClient, run_id: str | None) -> str:
    """The experiment of a registration run, for a link to it; empty when the tracking store no longer has it."""
    if not run_id:
        return ""
    try:
        return client.get_run(run_id).info.experiment_id
    except MlflowException:
        return ""


def _model_exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
    return True


def _all_versions(client: mlflow.MlflowClient, name: str) -> list[Any]:
    """Every version of the registered model, page by page."""
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name='{name}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _find_version(client: mlflow.MlflowClient, name: str, sha: str, oss: bool) -> Any:
    """The newest READY version carrying this artifact hash (tag, or comment line in the open-source catalog)."""
    versions = _all_versions(client, name)
    marker = f"{TAG_ARTIFACT_SHA256}={sha}"
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if found.status != "READY":
            continue
        if oss:
            if marker in (found.description or "").splitlines():
                return found
            continue
        full = client.get_model_version(name, found.version)  # search results carry no tags
        if full.tags.get(TAG_ARTIFACT_SHA256) == sha:
            return full
    return None


@contextmanager
def _logged_model(
    adapter_dir: Path, base_model_ref: str, experiment: str, tags: Mapping[str, str], params: Mapping[str, str],
    artifact_location: str | None = None, attachments: Mapping[str, Path] | None = None,
) -> Iterator[tuple[str, str, str | None, dict[str, str]]]:
    """Log the pyfunc model in a run kept open (FAILED if the block fails): run id, artifact location, model id and
    each attachment's path inside the model."""
    artifacts = {"adapter": str(adapter_dir), **{name: str(path) for name, path in (attachments or {}).items()}}
    if Path(base_model_ref).is_dir():
        artifacts["base_model"] = str(base_model_ref)
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment, artifact_location=artifact_location)
    with tempfile.TemporaryDirectory(prefix="governed-ft-code-") as code_root:
        package = Path(__file__).resolve().parent
        code = Path(code_root) / package.name
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run_name = f"register-{tags[TAG_ARTIFACT_SHA256][:12]}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            run_id = run.info.run_id
            mlflow.set_tags({**tags, TAG_MLFLOW_RUN: run_id})
            if params:
                mlflow.log_params(params)
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=AdapterModel(),
                artifacts=artifacts,
                model_config={"base_model_ref": base_model_ref},
                signature=SIGNATURE,
                pip_requirements=_requirements(),
                code_paths=[str(code)],
            )
            source = mlflow.get_logged_model(info.model_id).artifact_location if info.model_id else info.model_uri
            saved = (info.flavors.get("python_function") or {}).get("artifacts") or {}
            attached = {name: str(saved[name]["path"]) for name in attachments or {} if name in saved}
            yield run_id, source, info.model_id, attached


def _requirements() -> list[str]:
    out = []
    for dist in _REQUIREMENTS:
        try:
            out.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


# ---- errors ----------------------------------------------------------------------------------------------------


def _registry_endpoint(registry_uri: str) -> tuple[str, str]:
    """The URL the registry lives at and where that URL comes from."""
    if registry_uri.startswith("uc:"):
        return registry_uri[3:], f"the registry URI {registry_uri}"
    return os.environ.get("DATABRICKS_HOST", ""), "DATABRICKS_HOST"


def _unavailable(registry_uri: str, detail: str) -> RegistryUnavailableError:
    url, origin = _registry_endpoint(registry_uri)
    return RegistryUnavailableError(
        f"The model registry {registry_uri} at {url or '(no host set)'} cannot be reached ({detail}); "
        f"start it or set {origin} to a running workspace or catalog and retry."
    )


def _probe(registry_uri: str) -> None:
    """Fail in seconds, not after the SDK's retry budget, when nothing answers at the registry's address."""
    url, _ = _registry_endpoint(registry_uri)
    if not url and registry_uri.startswith("databricks-uc://"):
        return  # the host lives in a ~/.databrickscfg profile; the SDK resolves it
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise _unavailable(registry_uri, "no host configured")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise _unavailable(registry_uri, exc.strerror or type(exc).__name__) from None
    try:  # any HTTP answer will do; a host that accepts and stays silent would hold MLflow for minutes
        requests.get(f"{parts.scheme}://{parts.netloc}/", timeout=(PROBE_TIMEOUT_S, ANSWER_TIMEOUT_S),
                     allow_redirects=False).close()
    except requests.Timeout:
        raise _unavailable(registry_uri, f"it accepts connections but sent no answer within "
                                         f"{ANSWER_TIMEOUT_S:g} s") from None
    except requests.RequestException as exc:
        raise _unavailable(registry_uri, type(exc).__name__) from None


def _principal(registry_uri: str) -> str:
    """Who the registry sees: the OAuth client id, or the subject of the open-source catalog's token."""
    if not registry_uri.startswith("uc:"):
        return os.environ.get("DATABRICKS_CLIENT_ID") or "the workspace's configured principal"
    token = os.environ.get("MLFLOW_UC_OSS_TOKEN", "")
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("sub") or claims.get("email") or "the principal of MLFLOW_UC_OSS_TOKEN")
    except (IndexError, ValueError, AttributeError):
        return "the principal of MLFLOW_UC_OSS_TOKEN"


@contextmanager
def _translated(registry_uri: str, model: str, principal: str, step: Step) -> Iterator[None]:
    """Registry refusals as CatalogPermissionError, connection failures as RegistryUnavailableError."""
    try:
        yield
    except RestException as exc:
        detail = str(exc.json.get("message") or exc.message).split(" Config: ")[0]
        refusal = read_refusal(detail, exc.error_code, exc.json.get("details"))
        if refusal.cause == "privilege":
            raise CatalogPermissionError(principal, refusal.target, refusal.privilege,
                                         f"registering model {model}: {detail}") from None
        if refusal.cause != "unknown":
            url, _ = _registry_endpoint(registry_uri)
            raise refusal_error(refusal, principal=principal, grantee=principal, operation=f"registering model {model}",
                                host=url or registry_uri) from None
        if exc.error_code != "PERMISSION_DENIED":
            raise CatalogError(f"the model registry {registry_uri} failed on model {model}: {detail}") from None
        if step == "create_version":
            raise ModelOwnershipError(principal, model, detail) from None
        schema = model.rsplit(".", 1)[0]
        privileges = ("USE SCHEMA", "CREATE MODEL") if step == "create_model" else ("USE SCHEMA",)
        raise CatalogPermissionError(principal, f"schema {schema}", privileges,
                                     f"registering model {model}: {detail}") from None
    except MlflowException as exc:
        if re.search(r"Connection|Max retries|timed out|unreachable", str(exc), re.IGNORECASE):
            raise _unavailable(registry_uri, "connection failed") from None
        raise
    except ValueError as exc:
        # The SDK raises a bare ValueError when the OAuth token endpoint refuses the client.
        if "invalid_client" not in str(exc) and "oauth" not in str(exc).lower():
            raise
        url, origin = _registry_endpoint(registry_uri)
        raise CatalogError(
            f"OAuth M2M sign-in of principal '{principal}' at {url} for the model registry {registry_uri} failed "
            f"({str(exc).splitlines()[0][:200]}); check the client secret and that the service principal is in the "
            f"workspace ({origin})"
        ) from None


__all__ = [
    "AdapterModel",
    "ModelOwnershipError",
    "RegisteredVersion",
    "RegistryUnavailableError",
    "SIGNATURE",
    "artifact_sha256",
    "chat_messages",
    "digests_sha256",
    "governance_tags",
    "hyperparameters_sha256",
    "read_version_file",
    "register_adapter",
    "registry_env_for_databricks",
    "registry_env_for_oss",
    "scoped_env",
    "stored_artifact_sha256",
    "version_facts",
]
