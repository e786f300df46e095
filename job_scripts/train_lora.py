"""LoRA fine-tuning job in SageMaker script mode: the same file runs on SageMaker and as a local process.

Under torchrun (SageMaker's torch_distributed, or the local resource with several ranks) rank 0 alone reads the
curated table with credentials vended to the job's principal and broadcasts the records; rank 0 alone writes the
adapter, reports through Pipes and logs the MLflow run. Every rank records how it ended, so a launcher can name the
rank that failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import shutil
import sys
import traceback
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "governed_ft_dagster").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from governed_ft_dagster.training.environment import activate  # noqa: E402

activate()  # on SageMaker: the staged packages ahead of the container's, before any of them is imported

from governed_ft_dagster.catalog import connect  # noqa: E402
from governed_ft_dagster.catalog.base import CatalogClient, CatalogError, VendedCredentials  # noqa: E402
from governed_ft_dagster.lineage.manifest import MANIFEST_FILE, build_manifest, dumps  # noqa: E402
from governed_ft_dagster.lineage.manifest import summary as manifest_summary  # noqa: E402
from governed_ft_dagster.storage import (  # noqa: E402
    S3Endpoint,
    commit_user_metadata,
    is_local,
    local_path,
    storage_options,
)
from governed_ft_dagster.training import distributed  # noqa: E402
from governed_ft_dagster.training.base_model import BASE_MODEL_ID  # noqa: E402
from governed_ft_dagster.training.distributed import Rank, main_first  # noqa: E402
from governed_ft_dagster.training.tracking import MLFLOW_ARTIFACT_LOCATION_ENV  # noqa: E402
from governed_ft_dagster.training.trainer import (  # noqa: E402
    SUMMARY_FILE,
    NullReporter,
    PrintReporter,
    Reporter,
    TrainConfig,
    train,
)

INTERRUPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped at a checkpoint, rerun to resume
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"
CURATED_COLUMNS = ("messages", "split", "cik", "accession_number", "source_table", "source_version", "run_id",
                   "record_id", "text_sha256", "amends_accession")
TRAIN_SPLIT, VALIDATION_SPLIT = "train", "validation"
MLFLOW_RUN_FILE = "mlflow_run_id.txt"
BASE_EVAL_FILE = "base_eval.json"
PIPES_MAX_LOSS_POINTS = 500
RANKS_FOLDER = "ranks"  # under the output data folder: each rank's last state, unless GOVERNED_FT_RANK_STATUS_DIR
_ACCESS_OPTIONS = ("catalog_kind", "catalog_url", "catalog_principal", "catalog_name")


class TrainingDataError(RuntimeError):
    """The curated training data cannot be located or read."""


@dataclass
class CuratedSnapshot:
    """The records of the curated table at one Delta version."""

    records: list[dict[str, Any]]
    version: int
    location: str
    commit_properties: dict[str, str] = dataclasses.field(default_factory=dict)


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in {"1", "true", "yes", "y", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "n", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def _optional_int(value: str | int | None) -> int | None:
    return None if value in (None, "", "None", "none") else int(value)


_NOT_HYPERPARAMETERS = {"summary_extras", "source_table", "source_version", "source_location", "use_cpu"}
_OPTIONAL_TYPES = {"base_model_revision": str, "stop_after_steps": _optional_int, "max_length": _optional_int}


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments: every TrainConfig field, the data location and SageMaker's directories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_HYPERPARAMETERS:
            continue
        default = getattr(defaults, f.name)
        kind = _OPTIONAL_TYPES.get(f.name) or (_bool if isinstance(default, bool) else type(default))
        parser.add_argument(f"--{f.name}", type=kind, default=default)
    # On SageMaker the base model is the staged `model` input channel, never a hub id.
    parser.set_defaults(base_model=os.environ.get("SM_CHANNEL_MODEL", BASE_MODEL_ID))
    parser.add_argument("--batch_size", dest="per_device_batch_size", type=int, default=argparse.SUPPRESS,
                        help="alias of --per_device_batch_size")
    parser.add_argument("--curated_location", help="Delta table location (path or s3:// URI) of the curated table")
    parser.add_argument("--curated_version", type=_optional_int, default=None, help="Delta version (default latest)")
    parser.add_argument("--source_table", help="catalog name of the curated table, for the summary and lineage")
    connect.add_arguments(parser)
    parser.add_argument("--curated_table", help="catalog name of the curated table, read through the catalog")
    parser.add_argument("--adapter_location", help="governed folder (under ml/adapters/) the adapter is copied to")
    parser.add_argument("--storage_region", help="region of the governed bucket (default: the catalog's region)")
    parser.add_argument("--s3_endpoint_url", help="S3-compatible endpoint for governed storage (tests only)")
    parser.add_argument("--model_dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--output_data_dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    parser.add_argument("--checkpoint_dir", default=os.environ.get("SM_CHECKPOINT_DIR", DEFAULT_CHECKPOINT_DIR))
    parser.add_argument("--num_gpus", type=int, default=_optional_int(os.environ.get("SM_NUM_GPUS")))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """argv over SM_HPS over the defaults; unknown names are reported, not fatal (SageMaker adds its own)."""
    parser = build_parser()
    hps = json.loads(os.environ.get("SM_HPS") or "{}")
    known = {action.dest for action in parser._actions}
    parser.set_defaults(**{key: value for key, value in hps.items() if key in known})
    args, unknown = parser.parse_known_args(argv)
    ignored = sorted({key for key in hps if key not in known} | {a.split("=")[0] for a in unknown if a[:2] == "--"})
    args.ignored_hyperparameters = ignored
    return args


def resolve_training_data(args: argparse.Namespace) -> tuple[str, dict[str, str], int | None]:
    """The curated table's location, storage options (vended READ credentials) and Delta version to read."""
    if args.curated_location:
        return args.curated_location, {}, args.curated_version
    if not args.curated_table and not any(getattr(args, name, None) for name in _ACCESS_OPTIONS):
        raise TrainingDataError("no curated table given: pass --curated_table with the catalog options "
                                f"({', '.join('--' + n for n in _ACCESS_OPTIONS)}), or --curated_location "
                                "(and --curated_version)")
    client = catalog_client(args, "curated_table")
    table = client.get_table(args.curated_table)
    credentials = client.temporary_table_credentials(table.full_name, "READ")
    args.source_table = args.source_table or table.full_name
    return table.storage_location, storage_options(credentials, s3_endpoint(args)), args.curated_version


def catalog_client(args: argparse.Namespace, *needed: str) -> CatalogClient:
    """The job principal's catalog client, made once per job from the catalog options."""
    missing = [f"--{name}" for name in (*needed, *_ACCESS_OPTIONS) if not getattr(args, name, None)]
    if missing:
        raise TrainingDataError(f"the catalog path is not wired for this job: it was started without "
                                f"{', '.join(missing)}")
    if getattr(args, "catalog_connection", None) is None:
        args.catalog_connection = connect.connect(connect.from_args(args))
    return args.catalog_connection


def s3_endpoint(args: argparse.Namespace) -> S3Endpoint:
    region = (args.storage_region or args.catalog_region or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    return S3Endpoint(region=region, endpoint_url=args.s3_endpoint_url)


def adapter_credentials(args: argparse.Namespace) -> VendedCredentials:
    """PATH_READ_WRITE credentials on the adapter location, vended to the job's principal."""
    client = catalog_client(args, "adapter_location")
    return client.temporary_path_credentials(args.adapter_location.rstrip("/"), "PATH_READ_WRITE")


def publish_adapter(model_dir: Path, location: str, credentials: VendedCredentials,
                    endpoint: S3Endpoint) -> list[str]:
    """Copy every file of the model dir under location, the summary last (its presence marks a whole copy)."""
    files = sorted((p for p in model_dir.rglob("*") if p.is_file()), key=lambda p: (p.name == SUMMARY_FILE, str(p)))
    names = [p.relative_to(model_dir).as_posix() for p in files]
    if is_local(location):
        target = local_path(location)
        for path, name in zip(files, names):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
        return names
    import boto3
    from urllib.parse import urlparse

    parsed = urlparse(location.rstrip("/"))
    s3 = boto3.session.Session(
        aws_access_key_id=credentials.aws_access_key_id, aws_secret_access_key=credentials.aws_secret_access_key,
        aws_session_token=credentials.aws_session_token, region_name=endpoint.region,
    ).client("s3", endpoint_url=endpoint.endpoint_url)
    prefix = parsed.path.strip("/")
    for path, name in zip(files, names):
        s3.upload_file(str(path), parsed.netloc, f"{prefix}/{name}" if prefix else name)
    return names


def load_curated_records(location: str, storage_options: dict[str, str] | None = None,
                         version: int | None = None) -> CuratedSnapshot:
    """Read the curated Delta table at a version: records with `messages` (list of role/content) and `split`."""
    from deltalake import DeltaTable

    try:
        table = DeltaTable(location, version=version, storage_options=storage_options or None)
    except Exception as exc:  # deltalake raises several types; keep the message, never the storage options
        raise TrainingDataError(f"cannot open the curated table at {location} (version {version}): "
                                f"{type(exc).__name__}: {exc}") from None
    names = {f.name for f in table.schema().fields}
    missing = {"messages", "split"} - names
    if missing:
        raise TrainingDataError(f"the curated table at {location} has no column(s) {sorted(missing)}")
    records = table.to_pyarrow_table(columns=[c for c in CURATED_COLUMNS if c in names]).to_pylist()
    for record in records:
        if isinstance(record["messages"], str):
            record["messages"] = json.loads(record["messages"])
    return CuratedSnapshot(records, table.version(), location,
                           commit_user_metadata(location, storage_options or {}, table.version()))


def split_records(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The train and validation records; other splits stay out of training."""
    return ([r for r in records if r.get("split") == TRAIN_SPLIT],
            [r for r in records if r.get("split") == VALIDATION_SPLIT])


def write_training_manifest(args: argparse.Namespace, snapshot: CuratedSnapshot, records_train: list[dict[str, Any]],
                            records_val: list[dict[str, Any]], model_dir: Path) -> dict[str, Any]:
    """Write the manifest of exactly the records read into the model dir (it travels with the adapter); its summary."""
    versions = {r.get("source_version") for r in snapshot.records if r.get("source_version") is not None}
    tables = {r.get("source_table") for r in snapshot.records if r.get("source_table")}
    manifest = build_manifest(
        records_train, records_val, table=args.source_table, delta_version=snapshot.version,
        location=snapshot.location, source_table=tables.pop() if len(tables) == 1 else None,
        source_version=int(versions.pop()) if len(versions) == 1 else None,
        source_fingerprint=snapshot.commit_properties.get("governed_ft.source_fingerprint"))
    data = dumps(manifest)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MANIFEST_FILE).write_bytes(data)
    return manifest_summary(manifest, data)


def train_config(args: argparse.Namespace, snapshot: CuratedSnapshot) -> TrainConfig:
    """The TrainConfig for these arguments and the snapshot that was read."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name not in _NOT_HYPERPARAMETERS}
    return TrainConfig(**values, source_table=args.source_table, source_version=snapshot.version,
                       source_location=snapshot.location, use_cpu=args.num_gpus == 0)


def base_eval_loss(config: TrainConfig, records_val: list[dict[str, Any]], checkpoint_dir: Path,
                   world_size: int = 1) -> float | None:
    """The base model's loss on the validation rows, batched and weighted as the Trainer's eval loss is (one batch:
    the rows every rank evaluates together)."""
    import torch
    from transformers import AutoConfig
    from transformers.utils.quantization_config import QuantizationMethod

    from governed_ft_dagster.training.base_model import context_length, load_base_model, load_tokenizer
    from governed_ft_dagster.training.packing import (
        IGNORE_INDEX,
        PackedCollator,
        PaddingCollator,
        model_inputs,
        one_per_row,
        pack_examples,
        tokenize_records,
    )
    from governed_ft_dagster.training.trainer import (
        eval_batch_rows,
        quantization_config,
        resolve_base_model,
        select_precision,
    )

    model_path, revision, _ = resolve_base_model(config.base_model, config.base_model_revision)
    tokenizer = load_tokenizer(model_path, config.chat_template or None)
    max_length = context_length(AutoConfig.from_pretrained(model_path), tokenizer, config.max_length)
    examples, _ = tokenize_records(tokenizer, records_val, max_length, config.overlong)
    if not examples:
        return None
    size = eval_batch_rows(config, world_size)
    sequences = pack_examples(examples, max_length, size) if config.packing else one_per_row(examples)
    rows = [sequence.as_features() for sequence in sequences]
    precision, dtype = select_precision(config.use_cpu)
    on_cuda = not config.use_cpu and torch.cuda.is_available()
    quantization = config.quantization if on_cuda else "none"
    key = hashlib.sha256(json.dumps([revision, rows, size, precision, quantization])
                         .encode()).hexdigest()
    cache = checkpoint_dir / BASE_EVAL_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["base_eval_loss"]
    quant = quantization_config(quantization, model_path, dtype)
    model = load_base_model(model_path, dtype=dtype, quantization_config=quant)
    model.config.use_cache = False
    device = torch.device("cuda" if on_cuda else "cpu")
    if getattr(model, "quantization_method", None) != QuantizationMethod.BITS_AND_BYTES:
        model.to(device)  # as the Trainer places it; bitsandbytes models are placed at load time
    model.eval()
    collator = (PackedCollator if config.packing else PaddingCollator)(
        tokenizer.pad_token_id, pad_to_multiple_of=8 if on_cuda else None)
    total, count = 0.0, 0
    autocast = torch.autocast("cuda", dtype=dtype) if precision == "bf16" else nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            weighted, targets = 0.0, 0  # the batch's token-weighted loss, one rank's share at a time
            for first in range(0, len(chunk), config.per_device_batch_size):
                batch = collator(chunk[first:first + config.per_device_batch_size])
                inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                weighted += float(model(**inputs, use_cache=False).loss) * n
                targets += n
            total += weighted / targets * len(chunk)
            count += len(chunk)
    del model
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    loss = total / count
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "base_eval_loss": loss}))
    return loss


class PipesReporter:
    """Reports to the Dagster run that launched this process through Pipes."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def log(self, msg: str) -> None:
        self.context.log.info(msg)

    def metric(self, step: int, name: str, value: float) -> None:
        self.context.report_custom_message({"kind": "metric", "step": step, "name": name, "value": value})

    def summary(self, summary: dict[str, Any]) -> None:
        self.context.report_asset_materialization(metadata=pipes_metadata(summary))


def pipes_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """Materialization metadata from the training summary (loss curve thinned to a few hundred points)."""
    losses = summary["metrics"]["loss_by_step"]
    stride = max(1, -(-len(losses) // PIPES_MAX_LOSS_POINTS))
    values: dict[str, Any] = {
        "status": summary["status"],
        "training_job_name": summary.get("training_job_name"),
        "source_table": summary["source"]["table"],
        "source_delta_version": summary["source"]["delta_version"],
        "base_model": summary["base_model"]["id"],
        "base_model_revision": summary["base_model"]["revision"],
        "global_step": summary["global_step"],
        "resumed": summary["resumed"],
        "trainable_params": summary["trainable_params"],
        "total_params": summary["total_params"],
        "trainable_fraction": summary["trainable_fraction"],
        "tokens_seen": summary["tokens_seen"],
        "tokens_per_s": summary["tokens_per_s"],
        "padding_share": summary["padding_share"],
        "final_eval_loss": summary["metrics"]["final_eval_loss"],
        "device": summary["device"],
        "precision": summary["precision"],
        "train_loss": summary["metrics"]["train_loss"],
        "mlflow_run_id": summary.get("mlflow_run_id"),
        "mlflow_experiment_id": summary.get("mlflow_experiment_id"),
        "base_eval_loss": summary.get("base_eval_loss"),
        "adapter_location": summary.get("adapter_location"),
    }
    metadata: dict[str, Any] = {key: value for key, value in values.items() if value is not None}
    metadata["loss_by_step"] = {"raw_value": losses[::stride], "type": "json"}
    metadata["eval_loss_by_epoch"] = {"raw_value": summary["metrics"]["eval_loss_by_epoch"], "type": "json"}
    metadata["hyperparameters"] = {"raw_value": summary["hyperparameters"], "type": "json"}
    if summary.get("training_data"):
        metadata["training_data"] = {"raw_value": summary["training_data"], "type": "json"}
    return metadata


class MlflowReporter:
    """Logs params, step metrics and the summary JSON to one MLflow run (reused when a job resumes)."""

    def __init__(self, checkpoint_dir: Path, run_name: str | None = None) -> None:
        import mlflow

        self.mlflow = mlflow
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "governed-ft-training")
        artifacts = os.environ.get(MLFLOW_ARTIFACT_LOCATION_ENV)
        if artifacts and mlflow.get_experiment_by_name(name) is None:
            try:
                mlflow.create_experiment(name, artifact_location=artifacts)
            except mlflow.exceptions.MlflowException:
                pass  # a concurrent job created it first
        mlflow.set_experiment(name)
        run_file = checkpoint_dir / MLFLOW_RUN_FILE
        previous = run_file.read_text().strip() if run_file.exists() else None
        self.run = None
        if previous:
            try:
                self.run = mlflow.start_run(run_id=previous)
            except mlflow.exceptions.MlflowException:
                self.run = None  # the checkpoints outlived their tracking server's run
        self.run = self.run or mlflow.start_run(run_name=run_name)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(self.run.info.run_id)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_config(self, config: TrainConfig) -> None:
        params = {**config.hyperparameters(), "base_model": config.base_model,
                  "base_model_revision": config.base_model_revision, "source_table": config.source_table,
                  "source_delta_version": config.source_version}
        self.mlflow.log_params({k: v for k, v in params.items() if v is not None})
        self.mlflow.set_tags({"source_location": config.source_location or ""})

    def log(self, msg: str) -> None:
        pass

    def metric(self, step: int, name: str, value: float) -> None:
        self.mlflow.log_metric(name, value, step=step)

    def summary(self, summary: dict[str, Any]) -> None:
        for name in ("tokens_per_s", "padding_share", "trainable_fraction", "tokens_seen", "base_eval_loss"):
            if summary.get(name) is not None:
                self.mlflow.log_metric(name, float(summary[name]))
        self.mlflow.log_dict(summary, SUMMARY_FILE)

    def close(self, status: str) -> None:
        self.mlflow.end_run(status=status)


class FanoutReporter:
    """Sends every report to several reporters."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def log(self, msg: str) -> None:
        for reporter in self.reporters:
            reporter.log(msg)

    def metric(self, step: int, name: str, value: float) -> None:
        for reporter in self.reporters:
            reporter.metric(step, name, value)

    def summary(self, summary: dict[str, Any]) -> None:
        for reporter in self.reporters:
            reporter.summary(summary)


def _open_pipes(stack: ExitStack) -> Any | None:
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        return None
    return stack.enter_context(open_dagster_pipes())


def _write_failure(reason: BaseException | str) -> None:
    """SageMaker shows /opt/ml/output/failure as the job's failure reason."""
    output_dir = os.environ.get("SM_OUTPUT_DIR")
    if output_dir and Path(output_dir).is_dir():
        text = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        (Path(output_dir) / "failure").write_text(text[:1024])


def read_training_data(args: argparse.Namespace, reporter: Reporter) -> tuple[CuratedSnapshot, str | None]:
    """The curated snapshot read with credentials vended to the job's principal, and the table's catalog name.

    Only rank 0 calls this: no other rank holds a credential or talks to the catalog.
    """
    location, storage_options, version = resolve_training_data(args)
    snapshot = load_curated_records(location, storage_options, version)
    records_train, records_val = split_records(snapshot.records)
    if not records_val:
        raise TrainingDataError(f"{args.source_table or location} has no '{VALIDATION_SPLIT}' records at Delta "
                                f"version {snapshot.version}: the adapter could not be compared with the base")
    reporter.log(f"read {len(snapshot.records)} records from {args.source_table or location} at Delta "
                 f"version {snapshot.version}: {len(records_train)} train, {len(records_val)} validation")
    if args.adapter_location:
        adapter_credentials(args)  # a refusal now costs no training time
        reporter.log(f"principal '{args.catalog_principal}' may write the adapter to {args.adapter_location}")
    return snapshot, args.source_table


def run(args: argparse.Namespace, rank: Rank | None = None) -> int:
    """Read the curated snapshot, train, write the outputs (and the governed adapter copy) and report."""
    import torch

    rank = rank or Rank.from_env()
    model_dir, checkpoint_dir = Path(args.model_dir), Path(args.checkpoint_dir)
    distributed.init_process_group(rank, use_cuda=args.num_gpus != 0 and torch.cuda.is_available())
    with ExitStack() as stack:
        pipes = _open_pipes(stack) if rank.is_main else None
        lead: Reporter = PipesReporter(pipes) if pipes else PrintReporter() if rank.is_main else NullReporter()
        reporters: list[Reporter] = [lead]
        if args.ignored_hyperparameters:
            lead.log(f"ignoring unknown hyperparameters: {', '.join(args.ignored_hyperparameters)}")
        if rank.distributed:
            lead.log(f"{rank.world_size} ranks: rank 0 reads the curated table and shares its records")
        snapshot, args.source_table = main_first(rank, lambda: read_training_data(args, lead),
                                                 "reading the curated table")
        records_train, records_val = split_records(snapshot.records)
        config = train_config(args, snapshot)
        config.summary_extras["training_job_name"] = os.environ.get("TRAINING_JOB_NAME")
        config.summary_extras["adapter_location"] = args.adapter_location
        if rank.is_main:
            manifest = write_training_manifest(args, snapshot, records_train, records_val, model_dir)
            config.summary_extras["training_data"] = manifest
            lead.log(f"training data manifest: {manifest['fingerprint']}, {manifest['counts']['filings']} filings")
        if pipes:
            config.summary_extras["dagster_run_id"] = pipes.run_id
        base_loss = main_first(rank, lambda: base_eval_loss(config, records_val, checkpoint_dir, rank.world_size),
                               "evaluating the base model")
        config.summary_extras["base_eval_loss"] = base_loss
        if base_loss is not None:
            lead.log(f"base model eval loss on the validation set: {base_loss:.4f}")
        tracking = None
        if rank.is_main and os.environ.get("MLFLOW_TRACKING_URI"):
            tracking = MlflowReporter(checkpoint_dir, run_name=os.environ.get("TRAINING_JOB_NAME"))
            tracking.log_config(config)
            config.summary_extras["mlflow_run_id"] = tracking.run_id
            config.summary_extras["mlflow_experiment_id"] = tracking.run.info.experiment_id
            reporters.append(tracking)
        reporter = FanoutReporter(reporters)
        try:
            result = train(config, records_train, records_val, model_dir, checkpoint_dir, reporter, rank)
        except BaseException:
            if tracking:
                tracking.close("FAILED")
            raise
        if result.status != "completed":
            if tracking:
                tracking.close("KILLED")
            message = f"interrupted at step {result.global_step}; rerun with the same checkpoint dir to resume"
            reporter.log(message)
            if rank.is_main:
                _write_failure(message)
            return INTERRUPTED_EXIT_CODE
        if tracking:
            tracking.close("FINISHED")
        if not rank.is_main:
            return 0
        output_data = Path(args.output_data_dir)
        output_data.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_dir / SUMMARY_FILE, output_data / SUMMARY_FILE)
        reporter.log(f"adapter, tokenizer and {SUMMARY_FILE} written to {model_dir}")
        if args.adapter_location:
            names = publish_adapter(model_dir, args.adapter_location, adapter_credentials(args), s3_endpoint(args))
            reporter.log(f"{len(names)} files copied to {args.adapter_location} with credentials vended to "
                         f"principal '{args.catalog_principal}'")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; a catalog refusal is one line on stderr and in the failure file, without a traceback.

    Each rank records how it ended; a rank that only lost its peers says so and leaves the failure file to the
    rank that caused it.
    """
    args = parse_args(argv)
    rank = Rank.from_env()
    statuses = distributed.status_dir(Path(args.output_data_dir) / RANKS_FOLDER)
    distributed.write_status(statuses, rank, distributed.RUNNING)
    try:
        code = run(args, rank)
    except CatalogError as exc:
        return _failed(rank, statuses, " ".join(str(exc).split()))
    except Exception as exc:
        if rank.distributed and distributed.is_peer_failure(exc):
            line = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
            distributed.write_status(statuses, rank, distributed.PEER_LOST, line)
            print(f"{rank.label()} stopped because another rank failed or went away ({line})", file=sys.stderr,
                  flush=True)
            return 1
        traceback.print_exc()
        return _failed(rank, statuses, f"{type(exc).__name__}: {exc}")
    distributed.write_status(statuses, rank, distributed.COMPLETED if code == 0 else distributed.INTERRUPTED)
    distributed.destroy_process_group()
    return code


def _failed(rank: Rank, statuses: Path, line: str) -> int:
    """This rank's own failure: its status, the failure file SageMaker shows, and a last stderr line naming it."""
    distributed.write_status(statuses, rank, distributed.FAILED, line)
    named = f"{rank.label()}: {line}" if rank.distributed else line
    _write_failure(named)
    print(named, file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
