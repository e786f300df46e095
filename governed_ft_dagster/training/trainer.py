"""LoRA fine-tuning of the base model on packed chat records with the transformers Trainer (no Dagster)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from governed_ft_dagster.training.base_model import (
    BASE_MODEL_ID,
    context_length,
    load_base_model,
    load_tokenizer,
    staged_identity,
    text_config,
    tiny_identity,
)
from governed_ft_dagster.training.distributed import Rank, all_reduce_sum, init_process_group, main_first
from governed_ft_dagster.training.packing import (
    NUM_TOKENS_KEY,
    PackedCollator,
    PaddingCollator,
    one_per_row,
    pack_examples,
    tokenize_records,
    verify_attention_isolation,
)

SUMMARY_FILE = "training_summary.json"
Quantization = Literal["none", "4bit", "fp8"]
Strategy = Literal["ddp", "fsdp"]


class Reporter(Protocol):
    """Where training reports to (the job script maps it to Dagster Pipes, MLflow or stdout)."""

    def log(self, msg: str) -> None: ...

    def metric(self, step: int, name: str, value: float) -> None: ...

    def summary(self, summary: dict[str, Any]) -> None: ...


class NullReporter:
    """Reports nothing: the ranks other than 0 of a distributed job."""

    def log(self, msg: str) -> None:
        pass

    def metric(self, step: int, name: str, value: float) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass


class PrintReporter:
    """A reporter that prints to stdout."""

    def log(self, msg: str) -> None:
        print(msg, flush=True)

    def metric(self, step: int, name: str, value: float) -> None:
        print(f"step {step} {name}={value:.6g}", flush=True)

    def summary(self, summary: dict[str, Any]) -> None:
        print(json.dumps(summary, default=str), flush=True)


@dataclass
class TrainConfig:
    """Everything a training run depends on; the source fields only travel into the summary."""

    base_model: str = BASE_MODEL_ID
    base_model_revision: str | None = None
    source_table: str | None = None
    source_version: int | None = None
    source_location: str | None = None
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_length: int | None = None  # None: CONTEXT_LENGTH, or the model's limit when that is shorter
    overlong: Literal["refuse", "truncate"] = "refuse"
    packing: bool = True
    gradient_checkpointing: bool = False
    quantization: Quantization = "none"
    lora_target_modules: str = ""  # comma-separated; empty: every linear projection of the decoder blocks
    chat_template: str = ""  # empty: the tokenizer's own; or a built-in name, or a template file
    attention: str = "auto"  # auto: FlashAttention-2 varlen on CUDA when flash-attn is installed, else SDPA
    liger: bool = True  # Liger kernels on CUDA when liger-kernel is installed and has them for the model type
    distributed_strategy: Strategy = "ddp"  # with several ranks: DDP replicas, or FSDP shards the base model
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 42
    use_cpu: bool = False
    jit_checkpoint: bool = True
    stop_after_steps: int | None = None
    summary_extras: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, Any]:
        """The knobs that shape the model, for the summary and the tracking server."""
        skip = {"base_model", "base_model_revision", "source_table", "source_version", "source_location",
                "summary_extras", "stop_after_steps", "use_cpu", "jit_checkpoint", "attention", "liger"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


@dataclass
class TrainSummary:
    """The outcome of train(); `summary` is what training_summary.json holds."""

    status: Literal["completed", "interrupted"]
    global_step: int
    resumed: bool
    summary: dict[str, Any]
    output_dir: Path | None


def select_precision(use_cpu: bool) -> tuple[str, torch.dtype]:
    """bf16 on a CUDA device that supports it, fp32 otherwise."""
    if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16", torch.bfloat16
    return "fp32", torch.float32


def quantization_config(mode: Quantization, model_ref: str, compute_dtype: torch.dtype) -> Any:
    """The transformers quantisation config for the requested loading mode (4-bit and FP8 need CUDA)."""
    if mode == "4bit":
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if mode == "fp8":
        from transformers import FineGrainedFP8Config

        return FineGrainedFP8Config()
    if mode != "none":
        raise ValueError(f"unknown quantization {mode!r}: use none, 4bit or fp8")
    from transformers import AutoConfig

    stored = getattr(AutoConfig.from_pretrained(model_ref), "quantization_config", None) or {}
    method = stored.get("quant_method") if isinstance(stored, Mapping) else getattr(stored, "quant_method", None)
    if str(method).lower().endswith("fp8"):
        from transformers import FineGrainedFP8Config

        return FineGrainedFP8Config(dequantize=True)  # the published FP8 weights, trained over in bf16
    return None


def resolve_base_model(ref: str, revision: str | None,
                       rank: Rank | None = None) -> tuple[str, str, dict[str, Any]]:
    """A local directory for the base model, the revision it stands for, and the tiny-base marker if any.

    A hub id is downloaded (at the pinned revision) by each host's local rank 0 first, the other ranks then find it
    in the cache.
    """
    path = Path(ref)
    if path.is_dir():
        info = tiny_identity(path)
        revision = revision or staged_identity(path).get("revision")
        if revision:
            return str(path), revision, info
        digest = hashlib.sha256()
        for item in sorted(path.iterdir()):
            if item.is_file():
                digest.update(item.name.encode())
                digest.update(item.read_bytes() if item.suffix == ".json" else str(item.stat().st_size).encode())
        return str(path), f"local-sha256:{digest.hexdigest()[:16]}", info
    from huggingface_hub import snapshot_download

    rank = rank or Rank()
    if rank.distributed and rank.local_rank != 0:
        _barrier()
    local = snapshot_download(ref, revision=revision)
    if rank.distributed and rank.local_rank == 0:
        _barrier()
    return local, Path(local).name, {}


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def lora_target_modules(model: torch.nn.Module, override: str = "") -> list[str] | str:
    """The LoRA targets: the override, else every linear projection inside the decoder blocks; only the language
    model's when there is a vision tower (then as a pattern), never the output head."""
    names = [name for name, _ in model.named_modules()]
    multimodal = any(".language_model." in f".{name}." for name in names)
    wanted = [name.strip() for name in override.split(",") if name.strip()] or decoder_projections(model, multimodal)
    if multimodal:
        return rf".*language_model.*\.({'|'.join(wanted)})$"
    return wanted


def decoder_projections(model: torch.nn.Module, language_model_only: bool = False) -> list[str]:
    """Names of the linear layers repeated in every block (q_proj, ..., down_proj for Ministral 3), in model order."""
    from transformers.pytorch_utils import Conv1D

    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found: dict[str, None] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is output_head:
            continue
        if language_model_only and ".language_model." not in f".{name}.":
            continue
        if re.search(r"\.\d+\.", f".{name}"):  # inside a numbered block: layers.N., h.N.
            found[name.rsplit(".", 1)[-1]] = None
    if not found:
        raise ValueError(f"{type(model).__name__} has no linear projections in numbered blocks; set "
                         "lora_target_modules to the module names LoRA should adapt")
    return list(found)


def attention_implementation(requested: str, on_cuda: bool) -> str:
    """auto: FlashAttention-2 (varlen over packed rows) on CUDA when flash-attn is installed, else SDPA with
    position-id boundaries; anything else as asked."""
    if requested != "auto":
        return requested
    return "flash_attention_2" if on_cuda and importlib.util.find_spec("flash_attn") is not None else "sdpa"


def liger_plan(enabled: bool, on_cuda: bool, model_type: str) -> tuple[bool, str]:
    """Whether to apply Liger's kernels (through the Trainer's use_liger_kernel), and why or why not."""
    if not enabled:
        return False, "off"
    if not on_cuda:
        return False, "not applied: Liger's Triton kernels need CUDA"
    if importlib.util.find_spec("liger_kernel") is None:
        return False, "not applied: liger-kernel is not installed"
    from liger_kernel.transformers import monkey_patch

    if model_type not in getattr(monkey_patch, "MODEL_TYPE_TO_APPLY_LIGER_FN", {}):
        return False, f"not applied: liger-kernel has no kernels for model type {model_type}"
    return True, f"applied for model type {model_type}"


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint in checkpoint_dir that was written completely: its trainer state, written last, reads
    whole (a job killed while writing it leaves an empty or cut file)."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for item in checkpoint_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", item.name)
        if match and not (item / "checkpoint-is-incomplete.txt").exists() and _readable_state(item):
            found.append((int(match.group(1)), item))
    return max(found)[1] if found else None


def _readable_state(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def _trainer_classes():
    """Trainer subclasses, defined lazily so importing this module stays cheap."""
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState

    class StepSync(TrainerCallback, ExportableState):
        """Counts the tokens and slots every rank trained on, times the steps, and stops every rank at the same step
        after a SIGTERM reached any of them (checkpointing first): one small all-reduce per optimizer step."""

        def __init__(self, stop_on_sigterm: bool) -> None:
            self.tokens = 0
            self.slots = 0
            self.session_tokens = 0
            self.session_seconds = 0.0
            self.stop_requested = False
            self.stopped_by_signal = False
            self._pending = [0, 0]
            self._started: float | None = None
            self._previous_handler: Any = None
            if stop_on_sigterm and threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

        def _on_sigterm(self, signum, frame) -> None:
            self.stop_requested = True

        def add(self, tokens: int, slots: int) -> None:
            self._pending[0] += tokens
            self._pending[1] += slots

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            tokens, slots, stop = all_reduce_sum([*self._pending, float(self.stop_requested)])
            self._pending = [0, 0]
            self.tokens += int(tokens)
            self.slots += int(slots)
            self.session_tokens += int(tokens)
            if self._started is not None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.session_seconds += time.perf_counter() - self._started
                self._started = None
            if stop and state.global_step < state.max_steps:
                self.stopped_by_signal = True
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if self._previous_handler is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_handler)

        def state(self) -> dict:
            return {"args": {"stop_on_sigterm": False}, "attributes": {"tokens": self.tokens, "slots": self.slots}}

    class ReportingCallback(TrainerCallback):
        """Forwards the Trainer's log entries to the reporter as metrics."""

        names = {"loss": "train_loss", "eval_loss": "eval_loss", "grad_norm": "grad_norm",
                 "learning_rate": "learning_rate"}

        def __init__(self, reporter: Reporter) -> None:
            self.reporter = reporter

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, name in self.names.items():
                value = (logs or {}).get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.reporter.metric(state.global_step, name, float(value))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            if loss is not None:
                self.reporter.log(f"epoch {state.epoch:.2f} step {state.global_step}: eval loss {loss:.4f}")

    class StopAfterSteps(TrainerCallback):
        """Checkpoints and stops at a given step (simulates a spot interruption)."""

        def __init__(self, step: int) -> None:
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= self.step:
                control.should_save = True
                control.should_training_stop = True

    class PackedTrainer(Trainer):
        """A Trainer that takes the collators' token counts out of the batch and tallies them."""

        counter: StepSync

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens = inputs.pop(NUM_TOKENS_KEY, None)
            if model.training and tokens is not None:
                self.counter.add(int(tokens), inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return StepSync, ReportingCallback, StopAfterSteps, PackedTrainer


def eval_batch_rows(config: TrainConfig, world_size: int) -> int:
    """Rows of one evaluation batch over all ranks."""
    return config.per_device_batch_size * world_size


def _rows(examples, packing: bool, max_length: int, row_multiple: int = 1) -> list[dict[str, list[int]]]:
    sequences = pack_examples(examples, max_length, row_multiple) if packing else one_per_row(examples)
    return [sequence.as_features() for sequence in sequences]


def _fsdp_arguments(strategy: Strategy, rank: Rank, model: torch.nn.Module, gradient_checkpointing: bool,
                    on_cuda: bool) -> dict[str, Any]:
    """TrainingArguments for the strategy: FSDP2 sharding each decoder block, or nothing (DDP, one process)."""
    if strategy == "ddp" or not rank.distributed:
        return {}
    if strategy != "fsdp":
        raise ValueError(f"unknown distributed_strategy {strategy!r}: use ddp or fsdp")
    if not on_cuda:
        raise ValueError("distributed_strategy fsdp shards the base model over GPUs and needs CUDA (accelerate "
                         "runs FSDP on GPUs only); on CPU ranks use ddp")
    blocks = sorted({type(module).__name__ for name, module in model.named_modules()
                     if re.fullmatch(r".*\.(layers|h|blocks)\.\d+", name)})
    return {"fsdp": True,
            "fsdp_config": {"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                            "transformer_layer_cls_to_wrap": blocks,
                            "activation_checkpointing": gradient_checkpointing, "reshard_after_forward": True,
                            "state_dict_type": "SHARDED_STATE_DICT", "cpu_ram_efficient_loading": False}}


def train(config: TrainConfig, records_train: Sequence[Mapping[str, Any]],
          records_val: Sequence[Mapping[str, Any]], output_dir: Path, checkpoint_dir: Path,
          reporter: Reporter | None = None, rank: Rank | None = None) -> TrainSummary:
    """Train a LoRA adapter, resuming from checkpoint_dir; write adapter, tokenizer and summary to output_dir.

    Under torchrun every rank calls this with the same records: the rows are packed alike on each, the Trainer
    gives each rank its share of every global batch, and rank 0 alone writes the adapter and the summary.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, PrinterCallback, TrainingArguments, set_seed

    rank = rank or Rank.from_env()
    reporter = reporter or (PrintReporter() if rank.is_main else NullReporter())
    output_dir, checkpoint_dir = Path(output_dir), Path(checkpoint_dir)
    set_seed(config.seed)
    precision, dtype = select_precision(config.use_cpu)
    on_cuda = not config.use_cpu and torch.cuda.is_available()
    init_process_group(rank, on_cuda)

    model_path, revision, tiny = resolve_base_model(config.base_model, config.base_model_revision, rank)
    tokenizer = load_tokenizer(model_path, config.chat_template or None)
    model_config = AutoConfig.from_pretrained(model_path)
    max_length = context_length(model_config, tokenizer, config.max_length)
    train_examples, train_report = tokenize_records(tokenizer, records_train, max_length, config.overlong)
    val_examples, val_report = tokenize_records(tokenizer, records_val, max_length, config.overlong)
    for split, report in (("train", train_report), ("validation", val_report)):
        reporter.log(f"{split}: {report.kept}/{report.records} records kept, {report.truncated} truncated, "
                     f"{report.refused_too_long} refused as longer than {max_length} tokens, "
                     f"{report.refused_no_assistant_tokens} without assistant tokens")
    if not train_examples:
        raise ValueError("no training records left after tokenisation")
    # Row counts that fill every global batch: the ranks then train and evaluate exactly the batches one process
    # would, and no rank pads a last batch with repeated rows (which would also skew the eval loss).
    global_rows = config.per_device_batch_size * config.gradient_accumulation_steps * rank.world_size
    train_rows = _rows(train_examples, config.packing, max_length, global_rows)
    val_rows = _rows(val_examples, config.packing, max_length, eval_batch_rows(config, rank.world_size))
    attention = attention_implementation(config.attention, on_cuda)
    flatten = config.packing and attention.startswith("flash")
    pad_to = 8 if on_cuda and not flatten else None  # a flattened batch is one row: nothing to pad
    collator = (PackedCollator(tokenizer.pad_token_id, pad_to, flatten=flatten) if config.packing
                else PaddingCollator(tokenizer.pad_token_id, 8 if on_cuda else None))

    quantization = config.quantization
    if quantization != "none" and not on_cuda:
        reporter.log(f"quantization {quantization} needs CUDA; loading the base model unquantised on CPU")
        quantization = "none"
    quant = quantization_config(quantization, model_path, dtype)
    model = load_base_model(model_path, dtype=dtype, quantization_config=quant, attn_implementation=attention)
    model.config.use_cache = False  # a cache turns off transformers' packed-sequence masking
    if quant is not None and quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    targets = lora_target_modules(model, config.lora_target_modules)
    use_liger, liger_note = liger_plan(config.liger, on_cuda, text_config(model.config).model_type)
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    trainable, total = model.get_nb_trainable_parameters()
    reporter.log(f"LoRA r={config.lora_r} on {targets}: {trainable:,} of {total:,} parameters trainable "
                 f"({trainable / total:.4%}); attention {attention}, Liger {liger_note}"
                 + (f"; {rank.world_size} ranks, {config.distributed_strategy}" if rank.distributed else ""))

    StepSync, ReportingCallback, StopAfterSteps, PackedTrainer = _trainer_classes()
    counter = StepSync(stop_on_sigterm=config.jit_checkpoint)
    callbacks = [counter, ReportingCallback(reporter)]
    if config.stop_after_steps:
        callbacks.append(StopAfterSteps(config.stop_after_steps))
    fsdp = _fsdp_arguments(config.distributed_strategy, rank, model, config.gradient_checkpointing, on_cuda)
    checkpointing = config.gradient_checkpointing and not fsdp  # FSDP checkpoints activations itself
    args = TrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        bf16=precision == "bf16", use_cpu=not on_cuda, seed=config.seed, data_seed=config.seed,
        eval_strategy="epoch" if val_rows else "no", save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, logging_strategy="steps", logging_steps=config.logging_steps,
        report_to="none", disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
        prediction_loss_only=True, use_cache=False, dataloader_num_workers=0,
        ddp_find_unused_parameters=False if rank.distributed else None, use_liger_kernel=use_liger,
        **fsdp,
    )
    trainer = PackedTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=val_rows or None,
                            data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    if config.distributed_strategy == "fsdp" and rank.distributed and not trainer.is_fsdp_enabled:
        raise ValueError("distributed_strategy fsdp was asked for but accelerate did not enable FSDP")
    trainer.counter = counter
    trainer.remove_callback(PrinterCallback)  # the reporter prints; the Trainer's own printer would repeat it
    isolation = verify_attention_isolation(trainer.model, len(tokenizer)) if config.packing else None

    # Rank 0's view of the checkpoints decides for all: on several hosts each holds its own synced copy.
    resume_from = main_first(rank, lambda: last_checkpoint(checkpoint_dir), "looking for a checkpoint")
    resumed_step = None
    if resume_from is not None:
        state = json.loads((resume_from / "trainer_state.json").read_text())
        resumed_step = state["global_step"]
        counted = state.get("stateful_callbacks", {}).get("StepSync", {}).get("attributes", {})
        counter.tokens, counter.slots = counted.get("tokens", 0), counted.get("slots", 0)
        reporter.log(f"resuming from {resume_from.name} (step {resumed_step})")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - started
    state = trainer.state
    completed = state.global_step >= state.max_steps
    history = list(state.log_history)
    evals = [h for h in history if "eval_loss" in h]
    if evals and evals[-1]["step"] == state.global_step:
        final_eval = evals[-1]
    else:
        final_eval = trainer.evaluate() if completed and val_rows else {}
    summary: dict[str, Any] = {
        "status": "completed" if completed else "interrupted",
        "base_model": {"id": tiny.get("production_base", config.base_model) if tiny else
                       staged_identity(model_path).get("id", config.base_model),
                       "ref": config.base_model, "revision": revision, "model_type": model_config.model_type,
                       "tiny_stand_in": bool(tiny), "tiny_marker": tiny or None},
        "source": {"table": config.source_table, "delta_version": config.source_version,
                   "location": config.source_location},
        "hyperparameters": config.hyperparameters(),
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": targets},
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "data": {"train": train_report.as_dict(), "validation": val_report.as_dict(),
                 "train_rows": len(train_rows), "validation_rows": len(val_rows), "packing": config.packing,
                 "context_length": max_length, "chat_template": config.chat_template or "the tokenizer's own"},
        "metrics": {
            "loss_by_step": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
            "eval_loss_by_epoch": [{"epoch": h["epoch"], "step": h["step"], "eval_loss": h["eval_loss"]}
                                   for h in evals],
            "final_eval_loss": final_eval.get("eval_loss"),
            "train_loss": result.training_loss,
        },
        "tokens_seen": counter.tokens, "token_slots_seen": counter.slots,
        "padding_share": 1 - counter.tokens / counter.slots if counter.slots else None,
        "tokens_per_s": counter.session_tokens / counter.session_seconds if counter.session_seconds else None,
        "train_step_seconds": counter.session_seconds, "train_wall_seconds": wall,
        "global_step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
        "resumed": resume_from is not None, "resumed_from_step": resumed_step,
        "resumed_from_checkpoint": resume_from.name if resume_from else None,
        "device": "cuda" if on_cuda else "cpu", "precision": precision, "quantization": quantization,
        "gradient_checkpointing": config.gradient_checkpointing, "attention": attention, "liger": liger_note,
        "distributed": {"world_size": rank.world_size, "global_batch_rows": global_rows,
                        "strategy": "fsdp" if trainer.is_fsdp_enabled else "ddp" if rank.distributed else "none"},
        "attention_isolation": dataclasses.asdict(isolation) if isolation else None,
        "seed": config.seed,
        "versions": _versions(),
        **config.summary_extras,
    }
    if not completed:
        reporter.log(f"stopped at step {state.global_step} of {state.max_steps}; checkpoint in {checkpoint_dir}")
        return TrainSummary("interrupted", state.global_step, resume_from is not None, summary, None)
    if trainer.is_fsdp_enabled:
        trainer.save_model(str(output_dir))  # every rank takes part in gathering the shards; rank 0 writes
    elif rank.is_main:
        trainer.model.save_pretrained(output_dir)
    if not rank.is_main:
        return TrainSummary("completed", state.global_step, resume_from is not None, summary, None)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    reporter.summary(summary)
    return TrainSummary("completed", state.global_step, resume_from is not None, summary, output_dir)


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
