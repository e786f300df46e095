"""LoRA fine-tuning of the base model on packed chat records with the transformers Trainer (no Dagster)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from governed_ft_dagster.training.base_model import (
    BASE_MODEL_ID,
    CONTEXT_LENGTH,
    LORA_TARGET_MODULES,
    TINY_MARKER,
    load_base_model,
    load_tokenizer,
    staged_identity,
)
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


class Reporter(Protocol):
    """Where training reports to (the job script maps it to Dagster Pipes, MLflow or stdout)."""

    def log(self, msg: str) -> None: ...

    def metric(self, step: int, name: str, value: float) -> None: ...

    def summary(self, summary: dict[str, Any]) -> None: ...


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
    max_length: int = CONTEXT_LENGTH
    overlong: Literal["refuse", "truncate"] = "refuse"
    packing: bool = True
    gradient_checkpointing: bool = False
    quantization: Quantization = "none"
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
                "summary_extras", "stop_after_steps", "use_cpu", "jit_checkpoint"}
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


def resolve_base_model(ref: str, revision: str | None) -> tuple[str, str, dict[str, Any]]:
    """A local directory for the base model, the revision it stands for, and the tiny-base marker if any."""
    path = Path(ref)
    if path.is_dir():
        marker = path / TINY_MARKER
        info = json.loads(marker.read_text()) if marker.exists() else {}
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

    local = snapshot_download(ref, revision=revision)
    return local, Path(local).name, {}


def lora_target_modules(model: torch.nn.Module) -> list[str] | str:
    """The LoRA targets: the seven projections, only inside the language model when there is a vision tower."""
    names = [name for name, _ in model.named_modules()]
    if any(".language_model." in f".{name}." for name in names):
        return rf".*language_model.*\.({'|'.join(LORA_TARGET_MODULES)})$"
    return list(LORA_TARGET_MODULES)


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint in checkpoint_dir that was written completely."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for item in checkpoint_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", item.name)
        if match and (item / "trainer_state.json").exists() and not (item / "checkpoint-is-incomplete.txt").exists():
            found.append((int(match.group(1)), item))
    return max(found)[1] if found else None


def _trainer_classes():
    """Trainer subclasses, defined lazily so importing this module stays cheap."""
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_callback import ExportableState

    class TokenCounter(TrainerCallback, ExportableState):
        """Counts real tokens and token slots trained on, and the seconds spent in training steps."""

        def __init__(self) -> None:
            self.tokens = 0
            self.slots = 0
            self.session_tokens = 0
            self.session_seconds = 0.0
            self._started: float | None = None

        def add(self, tokens: int, slots: int) -> None:
            self.tokens += tokens
            self.slots += slots
            self.session_tokens += tokens

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._started is not None:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.session_seconds += time.perf_counter() - self._started
                self._started = None

        def state(self) -> dict:
            return {"args": {}, "attributes": {"tokens": self.tokens, "slots": self.slots}}

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

        counter: TokenCounter

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens = inputs.pop(NUM_TOKENS_KEY, None)
            if model.training and tokens is not None:
                self.counter.add(int(tokens), inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return TokenCounter, ReportingCallback, StopAfterSteps, PackedTrainer


def _rows(examples, packing: bool, max_length: int) -> list[dict[str, list[int]]]:
    sequences = pack_examples(examples, max_length) if packing else one_per_row(examples)
    return [sequence.as_features() for sequence in sequences]


def train(config: TrainConfig, records_train: Sequence[Mapping[str, Any]],
          records_val: Sequence[Mapping[str, Any]], output_dir: Path, checkpoint_dir: Path,
          reporter: Reporter | None = None) -> TrainSummary:
    """Train a LoRA adapter, resuming from checkpoint_dir; write adapter, tokenizer and summary to output_dir."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import PrinterCallback, TrainingArguments, set_seed

    reporter = reporter or PrintReporter()
    output_dir, checkpoint_dir = Path(output_dir), Path(checkpoint_dir)
    set_seed(config.seed)
    precision, dtype = select_precision(config.use_cpu)
    on_cuda = not config.use_cpu and torch.cuda.is_available()

    model_path, revision, tiny = resolve_base_model(config.base_model, config.base_model_revision)
    tokenizer = load_tokenizer(model_path)
    train_examples, train_report = tokenize_records(tokenizer, records_train, config.max_length, config.overlong)
    val_examples, val_report = tokenize_records(tokenizer, records_val, config.max_length, config.overlong)
    for split, report in (("train", train_report), ("validation", val_report)):
        reporter.log(f"{split}: {report.kept}/{report.records} records kept, {report.truncated} truncated, "
                     f"{report.refused_too_long} refused as longer than {config.max_length} tokens, "
                     f"{report.refused_no_assistant_tokens} without assistant tokens")
    if not train_examples:
        raise ValueError("no training records left after tokenisation")
    train_rows = _rows(train_examples, config.packing, config.max_length)
    val_rows = _rows(val_examples, config.packing, config.max_length)
    collator_cls = PackedCollator if config.packing else PaddingCollator
    collator = collator_cls(tokenizer.pad_token_id, pad_to_multiple_of=8 if on_cuda else None)

    quantization = config.quantization
    if quantization != "none" and not on_cuda:
        reporter.log(f"quantization {quantization} needs CUDA; loading the base model unquantised on CPU")
        quantization = "none"
    quant = quantization_config(quantization, model_path, dtype)
    model = load_base_model(model_path, dtype=dtype, quantization_config=quant)
    model.config.use_cache = False  # a cache turns off transformers' packed-sequence masking
    if quant is not None and quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    targets = lora_target_modules(model)
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    trainable, total = model.get_nb_trainable_parameters()
    reporter.log(f"LoRA r={config.lora_r} on {targets}: {trainable:,} of {total:,} parameters trainable "
                 f"({trainable / total:.4%})")

    TokenCounter, ReportingCallback, StopAfterSteps, PackedTrainer = _trainer_classes()
    counter = TokenCounter()
    callbacks = [counter, ReportingCallback(reporter)]
    if config.stop_after_steps:
        callbacks.append(StopAfterSteps(config.stop_after_steps))
    args = TrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        bf16=precision == "bf16", use_cpu=not on_cuda, seed=config.seed, data_seed=config.seed,
        eval_strategy="epoch" if val_rows else "no", save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, logging_strategy="steps", logging_steps=config.logging_steps,
        report_to="none", disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
        prediction_loss_only=True, use_cache=False, enable_jit_checkpoint=config.jit_checkpoint,
        dataloader_num_workers=0,
    )
    trainer = PackedTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=val_rows or None,
                            data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    trainer.counter = counter
    trainer.remove_callback(PrinterCallback)  # the reporter prints; the Trainer's own printer would repeat it
    isolation = verify_attention_isolation(trainer.model, len(tokenizer)) if config.packing else None

    resume_from = last_checkpoint(checkpoint_dir)
    resumed_step = None
    if resume_from is not None:
        state = json.loads((resume_from / "trainer_state.json").read_text())
        resumed_step = state["global_step"]
        counted = state.get("stateful_callbacks", {}).get("TokenCounter", {}).get("attributes", {})
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
                       "ref": config.base_model, "revision": revision,
                       "tiny_stand_in": bool(tiny), "tiny_marker": tiny or None},
        "source": {"table": config.source_table, "delta_version": config.source_version,
                   "location": config.source_location},
        "hyperparameters": config.hyperparameters(),
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": targets},
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "data": {"train": train_report.as_dict(), "validation": val_report.as_dict(),
                 "train_rows": len(train_rows), "validation_rows": len(val_rows), "packing": config.packing},
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
        "gradient_checkpointing": config.gradient_checkpointing,
        "attention_isolation": dataclasses.asdict(isolation) if isolation else None,
        "seed": config.seed,
        "versions": _versions(),
        **config.summary_extras,
    }
    if not completed:
        reporter.log(f"stopped at step {state.global_step} of {state.max_steps}; checkpoint in {checkpoint_dir}")
        return TrainSummary("interrupted", state.global_step, resume_from is not None, summary, None)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    reporter.summary(summary)
    return TrainSummary("completed", state.global_step, resume_from is not None, summary, output_dir)


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
