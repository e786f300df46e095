"""finetuned_lora_model: a LoRA adapter trained on the curated table by the training job, as the train principal."""

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

from governed_ft_dagster.defs.assets.failures import readable_failures
from governed_ft_dagster.catalog.base import Principal, Privilege, VendedCredentials
from governed_ft_dagster.governance import CURATED_TABLE
from governed_ft_dagster.job_code import TRAINING_JOB_PREFIX, training_source_dir
from governed_ft_dagster.lineage.manifest import MANIFEST_FILE, filings_by_company
from governed_ft_dagster.lineage.manifest import loads as manifest_loads
from governed_ft_dagster.defs.resources.base_model import BaseModelResource
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from governed_ft_dagster.defs.resources.training_jobs import TrainingJobResource, TrainingJobSpec
from governed_ft_dagster.storage import S3Endpoint, delta_version, is_local, join, local_path, storage_options

ADAPTERS_PREFIX = "ml/adapters"
SUMMARY_FILE = "training_summary.json"
CURATED_KEY = dg.AssetKey("curated_training_table")
LOSS_TABLE_ROWS = 40
ADAPTER_FILES = frozenset({"adapter_config.json", "adapter_model.safetensors", SUMMARY_FILE, MANIFEST_FILE})


class FinetuneConfig(dg.Config):
    """Hyperparameters of the LoRA fine-tuning job; the defaults are the production run's."""

    epochs: float = Field(default=1.0, description="Passes over the training split.")
    max_steps: Optional[int] = Field(default=None, description="Optimizer steps; overrides epochs when set.")
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    per_device_batch_size: int = Field(default=4, description="Packed 1,024-token rows per device and step.")
    gradient_accumulation_steps: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_length: Optional[int] = Field(default=None, description="Context length the records are packed into; "
                                      "default: 1,024 tokens, or the base model's limit when that is shorter.")
    packing: bool = True
    gradient_checkpointing: bool = Field(default=True,
                                         description="Recompute activations (fits 3B on one 24 GB GPU).")
    quantization: Literal["none", "4bit", "fp8"] = Field(default="none",
                                                         description="How the base is loaded (CUDA only).")
    save_steps: int = Field(default=50, description="Checkpoint interval; a rerun resumes from the last one.")
    distributed_strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp", description="With several ranks: DDP (a replica per rank), or FSDP (the base model sharded "
                                   "over the ranks, for a model that does not fit on one GPU).")
    seed: int = 42
    curated_version: Optional[int] = Field(default=None, description="Delta version to train on; default: current.")

    def hyperparameters(self, base: Mapping[str, str]) -> dict[str, Any]:
        """What shapes the adapter: the knobs above (those left at None stay out) and the base model with its
        overrides (not the data version)."""
        values = self.model_dump(exclude={"curated_version"})
        values["max_steps"] = -1 if self.max_steps is None else self.max_steps
        return {**{key: value for key, value in values.items() if value is not None}, **base}


def hyperparameters_sha256(hyperparameters: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(hyperparameters, sort_keys=True).encode()).hexdigest()


def training_job_name(source_version: int, hyperparameters_hash: str) -> str:
    """One name per curated version and hyperparameters: a rerun reuses the job folder and its checkpoints."""
    return f"{TRAINING_JOB_PREFIX}v{source_version}-{hyperparameters_hash[:12]}"


@dg.asset(
    deps=[CURATED_KEY],
    group_name="training",
    kinds={"pytorch", "sagemaker", "unitycatalog"},
    owners=["team:governed-ft"],
    tags={"principal": Principal.TRAIN.value},
    output_required=False,
)
def finetuned_lora_model(context: dg.AssetExecutionContext, config: FinetuneConfig, catalog: CatalogResource,
                         training: TrainingJobResource,
                         base_model: BaseModelResource) -> Iterator[dg.MaterializeResult]:
    """LoRA adapter over the base model, trained on the curated table at one Delta version, kept under ml/adapters/."""
    with readable_failures():
        result = _materialize(context, config, catalog, training, base_model)
    if result is not None:
        yield result


def _materialize(context: dg.AssetExecutionContext, config: FinetuneConfig, catalog: CatalogResource,
                 training: TrainingJobResource, base_model: BaseModelResource) -> Optional[dg.MaterializeResult]:
    """The job's materialization, or None (no job, no event) when this very job already produced the adapter."""
    config = base_model.finetune_config(config)
    table = catalog.table_name(CURATED_TABLE)
    catalog.preflight(Principal.TRAIN, [
        ("catalog", catalog.catalog, Privilege.USE_CATALOG),
        ("schema", catalog.table_name("curated"), Privilege.USE_SCHEMA),
        ("table", table, Privilege.SELECT),
    ])
    version = _source_version(catalog, table, config.curated_version)
    base = base_model.job_hyperparameters()
    base_ref = base["base_model"]
    hyperparameters = config.hyperparameters(base)
    digest = hyperparameters_sha256(hyperparameters)
    job_name = training_job_name(version, digest)
    adapter_location = catalog.location(f"{ADAPTERS_PREFIX}/{job_name}")
    job_arguments = {
        **{key: _argument(value) for key, value in hyperparameters.items()},
        **catalog.job_access(Principal.TRAIN).as_dict(),
        "curated_table": table,
        "curated_version": str(version),
        "adapter_location": adapter_location,
        "storage_region": catalog.storage_region,
    }
    if catalog.s3_endpoint_url:
        job_arguments["s3_endpoint_url"] = catalog.s3_endpoint_url
    if _already_trained(context, catalog, job_name, adapter_location):
        return None
    context.log.info(f"training job {job_name}: {table} at Delta version {version}, base {base_ref}, "
                     f"adapter to {adapter_location}")
    with tempfile.TemporaryDirectory(prefix="governed-ft-train-code-") as tmp:
        script, source_dir = training_source_dir(Path(tmp))
        spec = TrainingJobSpec(script=str(script), source_dir=str(source_dir), hyperparameters=job_arguments,
                               job_name=job_name)
        result = training.run(context, spec)
    reported = _reported(result.materialize_result, result.run_id)
    _verify(reported, table, version, result.run_id, adapter_location)
    adapter_sha256 = _adapter_sha256(catalog, adapter_location)
    manifest = _training_manifest(catalog, adapter_location, reported, result.run_id)
    metrics = {"loss_by_step": reported.get("loss_by_step") or [],
               "eval_loss_by_epoch": reported.get("eval_loss_by_epoch") or []}
    metadata: dict[str, Any] = {
        "source_table": dg.MetadataValue.text(table),
        "source_version": dg.MetadataValue.int(version),
        "job_run_kind": dg.MetadataValue.text(result.kind),
        "job_run_id": dg.MetadataValue.text(result.run_id),
        "job_properties": dg.MetadataValue.json(dict(result.properties)),
        "adapter_location": dg.MetadataValue.text(adapter_location),
        "adapter_sha256": dg.MetadataValue.text(adapter_sha256),
        "model_dir": dg.MetadataValue.text(result.properties.get("model_dir", "")),
        "model_artifacts": dg.MetadataValue.text(result.model_artifacts),
        "hyperparameters": dg.MetadataValue.json(hyperparameters),
        "hyperparameters_sha256": dg.MetadataValue.text(digest),
        "base_model": dg.MetadataValue.text(base_ref),
        "base_model_id": dg.MetadataValue.text(str(reported.get("base_model") or base_ref)),
        "base_model_revision": dg.MetadataValue.text(str(reported.get("base_model_revision") or "")),
        "eval_loss": _float(reported.get("final_eval_loss")),
        "base_eval_loss": _float(reported.get("base_eval_loss")),
        "train_loss": _float(reported.get("train_loss")),
        "trainable_parameters": dg.MetadataValue.int(int(reported["trainable_params"])),
        "trainable_fraction": _float(reported.get("trainable_fraction")),
        "tokens_per_second": _float(reported.get("tokens_per_s")),
        "padding_share": _float(reported.get("padding_share")),
        "tokens_seen": dg.MetadataValue.int(int(reported.get("tokens_seen") or 0)),
        "global_step": dg.MetadataValue.int(int(reported["global_step"])),
        "resumed": dg.MetadataValue.bool(bool(reported.get("resumed"))),
        "loss_curve": dg.MetadataValue.md(loss_table(metrics)),
        "job_hyperparameters": dg.MetadataValue.json(reported.get("hyperparameters") or {}),
        "device": dg.MetadataValue.text(str(reported.get("device") or "")),
        **training_data_metadata(manifest, join(adapter_location, MANIFEST_FILE), reported["training_data"]),
    }
    if reported.get("mlflow_run_id"):
        metadata["mlflow_run_id"] = dg.MetadataValue.text(str(reported["mlflow_run_id"]))
    metadata.update({label: dg.MetadataValue.url(url) for label, url in training.links(result, reported).items()})
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(adapter_sha256))


def training_data_metadata(manifest: dict[str, Any], location: str, stored: dict[str, Any]) -> dict[str, Any]:
    """What the adapter was trained on: fingerprint, counts, the filings by split and company, and the manifest."""
    return {
        "training_data_fingerprint": dg.MetadataValue.text(manifest["fingerprint"]),
        "training_data_counts": dg.MetadataValue.json(manifest["counts"]),
        "training_data_filings": dg.MetadataValue.json(filings_by_company(manifest)),
        "training_data_manifest": dg.MetadataValue.json({**{k: stored[k] for k in ("file", "bytes", "sha256")},
                                                         "location": location, "table": manifest["table"],
                                                         "source": manifest["source"]}),
    }


def _training_manifest(catalog: CatalogResource, adapter_location: str, reported: dict[str, Any],
                       run_id: str) -> dict[str, Any]:
    """The manifest the job wrote beside the adapter, read as train, and checked against the hash it reported."""
    stored = reported.get("training_data") or {}
    if not stored.get("sha256"):
        raise dg.Failure(description=f"training job {run_id} reported no training-data manifest", allow_retries=False)
    creds = catalog.client(Principal.TRAIN).temporary_path_credentials(adapter_location, "PATH_READ")
    uri = join(adapter_location, MANIFEST_FILE)
    try:
        data = _read_bytes(uri, creds, catalog.endpoint())
    except FileNotFoundError:
        raise dg.Failure(description=f"training job {run_id} left no {MANIFEST_FILE} under {adapter_location}",
                         allow_retries=False) from None
    if hashlib.sha256(data).hexdigest() != stored["sha256"]:
        raise dg.Failure(description=f"{uri} does not hash to the {stored['sha256'][:12]} training job {run_id} "
                                     "reported; re-materialize finetuned_lora_model", allow_retries=False)
    return manifest_loads(data, uri)


def _already_trained(context: dg.AssetExecutionContext, catalog: CatalogResource, job_name: str,
                     adapter_location: str) -> bool:
    """Whether the last materialization trained this very job (same data version, hyperparameters, base) and its
    completed adapter is still where it was written; retraining is then a choice, not an accident."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    last = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if "job_run_id" not in last or _text(last.get("adapter_location")) != adapter_location:
        return False
    if not _text(last["job_run_id"]).startswith(job_name):
        return False
    try:
        summary = _read_summary(catalog, adapter_location)
    except Exception:  # the adapter is gone or unreadable: train again
        return False
    if summary.get("status") != "completed":
        return False
    context.log.info(f"training job {job_name} already produced the adapter at {adapter_location}; no job started, "
                     "nothing materialized")
    return True


def _text(entry: Any) -> str:
    return str(entry.value if isinstance(entry, dg.MetadataValue) else entry or "")


def _source_version(catalog: CatalogResource, table: str, pinned: Optional[int]) -> int:
    """The curated table's current Delta version (read with READ credentials vended to train), or the pinned one."""
    creds = catalog.client(Principal.TRAIN).temporary_table_credentials(table, "READ")
    current = delta_version(creds.location, storage_options(creds, catalog.endpoint()))
    if current is None:
        raise dg.Failure(description=f"{table} has no Delta table at {creds.location}; materialize "
                                     f"{CURATED_KEY.to_user_string()} first", allow_retries=False)
    if pinned is not None and not 0 <= pinned <= current:
        raise dg.Failure(description=f"curated_version {pinned} does not exist: {table} is at version {current}",
                         allow_retries=False)
    return current if pinned is None else pinned


def _adapter_sha256(catalog: CatalogResource, adapter_location: str) -> str:
    """Content hash of the adapter files where the job left them (each one required), read as train with PATH_READ."""
    from governed_ft_dagster.registry import artifact_sha256, stored_artifact_sha256

    if is_local(adapter_location):
        names = {p.relative_to(local_path(adapter_location)).as_posix()
                 for p in local_path(adapter_location).rglob("*") if p.is_file()}
        digest = artifact_sha256(local_path(adapter_location)) if ADAPTER_FILES <= names else ""
    else:
        creds = catalog.client(Principal.TRAIN).temporary_path_credentials(adapter_location, "PATH_READ")
        s3 = _s3(creds, catalog.endpoint())
        bucket, _, prefix = adapter_location.removeprefix("s3://").rstrip("/").partition("/")
        names = {item["Key"][len(prefix) + 1:] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/") for item in page.get("Contents", [])}
        digest = stored_artifact_sha256(s3, adapter_location) if ADAPTER_FILES <= names else ""
    if not digest:
        raise dg.Failure(description=(
            f"the training job reported success but {adapter_location} lacks "
            f"{', '.join(sorted(ADAPTER_FILES - names))}"), allow_retries=False)
    return digest


def _argument(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _read_summary(catalog: CatalogResource, adapter_location: str) -> dict[str, Any]:
    """The training summary the job copied next to the adapter, read with PATH_READ credentials vended to train."""
    creds = catalog.client(Principal.TRAIN).temporary_path_credentials(adapter_location, "PATH_READ")
    uri = join(adapter_location, SUMMARY_FILE)
    try:
        return json.loads(_read_bytes(uri, creds, catalog.endpoint()))
    except FileNotFoundError:
        raise dg.Failure(description=f"the training job finished but left no {SUMMARY_FILE} under "
                                     f"{adapter_location}", allow_retries=False) from None


def _read_bytes(uri: str, creds: VendedCredentials, endpoint: S3Endpoint) -> bytes:
    if is_local(uri):
        return local_path(uri).read_bytes()
    import boto3
    from botocore.exceptions import ClientError

    parsed = urlparse(uri)
    s3 = boto3.session.Session(
        aws_access_key_id=creds.aws_access_key_id, aws_secret_access_key=creds.aws_secret_access_key,
        aws_session_token=creds.aws_session_token, region_name=endpoint.region,
    ).client("s3", endpoint_url=endpoint.endpoint_url)
    try:
        return s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from None
        raise


def _s3(creds: VendedCredentials, endpoint: S3Endpoint) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=creds.aws_access_key_id, aws_secret_access_key=creds.aws_secret_access_key,
        aws_session_token=creds.aws_session_token, region_name=endpoint.region,
    ).client("s3", endpoint_url=endpoint.endpoint_url)


def _reported(reported: Optional[dg.MaterializeResult], run_id: str) -> dict[str, Any]:
    """The values of the materialization the job reported through Pipes; a Failure when it reported none."""
    if reported is None or not reported.metadata:
        raise dg.Failure(description=f"training job {run_id} ended without reporting a materialization through "
                                     "Dagster Pipes", allow_retries=False)
    return {key: value.value if isinstance(value, dg.MetadataValue) else value
            for key, value in reported.metadata.items()}


def _verify(reported: dict[str, Any], table: str, version: int, run_id: str, adapter_location: str) -> None:
    """What the job reported belongs to this run: same job, table, Delta version and adapter location, completed."""
    found = (reported.get("status"), reported.get("training_job_name"), reported.get("source_table"),
             reported.get("source_delta_version"), reported.get("adapter_location"))
    if found != ("completed", run_id, table, version, adapter_location):
        raise dg.Failure(description=(
            f"training job {run_id} reported a materialization that does not match this run: expected a completed "
            f"job {run_id} on {table} at version {version} with the adapter at {adapter_location}, found status "
            f"{found[0]}, job {found[1]}, {found[2]} at version {found[3]}, adapter at {found[4]}"),
            allow_retries=False)


def _float(value: Any) -> dg.MetadataValue:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(float(value))


def loss_table(metrics: dict[str, Any], max_rows: int = LOSS_TABLE_ROWS) -> str:
    """The training loss by step (thinned to about max_rows) and the eval loss by epoch, as markdown tables."""
    losses = metrics.get("loss_by_step") or []
    stride = max(1, -(-len(losses) // max_rows))
    shown = losses[::stride]
    if losses and shown[-1] is not losses[-1]:
        shown.append(losses[-1])
    lines = ["| step | train loss |", "| ---: | ---: |", *(f"| {p['step']} | {p['loss']:.4f} |" for p in shown)]
    evals = metrics.get("eval_loss_by_epoch") or []
    if evals:
        lines += ["", "| epoch | step | eval loss |", "| ---: | ---: | ---: |",
                  *(f"| {e['epoch']:.2f} | {e['step']} | {e['eval_loss']:.4f} |" for e in evals)]
    return "\n".join(lines)
