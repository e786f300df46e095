"""Benchmark LoRA training throughput and padding share, packed vs plain padding.

Default: the tiny base (CPU). --config production: a randomly initialised decoder with the Ministral-3-3B-Instruct-2512
text configuration (full on CUDA, with the FP8 path too; widths and depth scaled down on CPU), bf16, LoRA r=16 on the
seven projections at 1,024 tokens; tokens/s, padding share, peak memory and MFU per batching mode.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import torch  # noqa: E402

from governed_ft_dagster.training.base_model import (  # noqa: E402
    CONTEXT_LENGTH,
    LORA_TARGET_MODULES,
    build_tiny_base,
    load_tokenizer,
    train_tokenizer,
)
from governed_ft_dagster.training.packing import (  # noqa: E402
    NUM_TOKENS_KEY,
    PackedCollator,
    PaddingCollator,
    model_inputs,
    one_per_row,
    pack_examples,
    tokenize_records,
)
from test_packing import chat_records, corpus_texts  # noqa: E402  (the records the tests train on)


@dataclass
class Result:
    """Throughput of one batching mode."""

    mode: str
    rows_per_batch: int
    steps: int
    real_tokens: int
    slots: int
    seconds: float

    @property
    def padding_share(self) -> float:
        return 1 - self.real_tokens / self.slots

    def row(self) -> str:
        return (f"| {self.mode} | {self.rows_per_batch} | {self.steps} | {self.real_tokens / self.steps:,.0f} | "
                f"{self.padding_share:.1%} | {self.real_tokens / self.seconds:,.0f} | {self.slots / self.seconds:,.0f} |")


def lora_model(base_dir: Path, attn: str) -> torch.nn.Module:
    """The tiny base with LoRA r=16 on the seven projections, as the trainer sets it up."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation=attn)
    model.config.use_cache = False
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                            target_modules=list(LORA_TARGET_MODULES), task_type="CAUSAL_LM"))


def measure(mode: str, model: torch.nn.Module, batches: list[dict], rows: int, warmup: int) -> Result:
    """Forward, backward and optimizer step over the batches; the first `warmup` are not timed."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    real = slots = 0
    seconds = 0.0
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        loss = model(**model_inputs(batch)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= warmup:
            seconds += time.perf_counter() - started
            real += int(batch[NUM_TOKENS_KEY])
            slots += batch["input_ids"].numel()
    return Result(mode, rows, len(batches) - warmup, real, slots, seconds)


def batched(collator, rows: list[dict], size: int, seed: int) -> list[dict]:
    """Shuffled batches, as the Trainer's random sampler would draw them."""
    rows = rows[:]
    random.Random(seed).shuffle(rows)
    return [collator(rows[i:i + size]) for i in range(0, len(rows) - size + 1, size)]


# The text decoder of mistralai/Ministral-3-3B-Instruct-2512 (its config.json text_config); no weights are read.
PRODUCTION_TEXT_CONFIG = {
    "vocab_size": 131072, "hidden_size": 3072, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 16.0,
                        "original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,
                        "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1},
}
CPU_SCALE = 8
# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}
PRODUCTION_MODES = ("packed", "padded")


def production_config(scale: int):
    """The Ministral 3 3B text configuration; widths, heads, vocabulary and depth divided by scale (1: unchanged).

    Head size, the 4:1 query/key-value grouping, the FFN/hidden and attention/hidden ratios and YaRN stay as they are.
    """
    from transformers import Ministral3Config

    values = dict(PRODUCTION_TEXT_CONFIG)
    if scale > 1:
        values.update({key: PRODUCTION_TEXT_CONFIG[key] // scale for key in (
            "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")})
        values["num_hidden_layers"] = max(2, round(PRODUCTION_TEXT_CONFIG["num_hidden_layers"] / scale))
    return Ministral3Config(**values)


def production_model(config, device: str, quantization: str, tmp: Path) -> torch.nn.Module:
    """Random weights in bf16 with LoRA r=16 on the seven projections; fp8 goes through the trainer's loading path."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Ministral3ForCausalLM

    from governed_ft_dagster.training.base_model import load_base_model
    from governed_ft_dagster.training.trainer import quantization_config

    torch.manual_seed(0)
    with torch.device(device):
        model = Ministral3ForCausalLM._from_config(config, dtype=torch.bfloat16)
    if quantization == "fp8":
        saved = tmp / "random-ministral3"
        model.save_pretrained(saved)
        del model
        quant = quantization_config("fp8", str(saved), torch.bfloat16)
        model = load_base_model(saved, dtype=torch.bfloat16, quantization_config=quant).to(device)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.config.use_cache = False
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                            target_modules=list(LORA_TARGET_MODULES), task_type="CAUSAL_LM"))


def useful_flops_per_token(config, model: torch.nn.Module, examples) -> float:
    """Training FLOPs per real token: 4·N through the frozen matrices (forward, input gradients), 6·N for the
    adapters, and causal attention over each example's own tokens (padding and cross-example work not counted)."""
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    layer = (config.hidden_size * config.head_dim * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
             + 3 * config.hidden_size * config.intermediate_size)
    frozen = config.num_hidden_layers * layer + config.vocab_size * config.hidden_size  # + the (tied) output head
    lengths = [len(e) for e in examples]
    mean_context = sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * mean_context
    return 4 * frozen + 6 * lora + attention


def peak_tflops(device: str, override: float | None) -> tuple[float, str]:
    """The device's peak for MFU: given, a dense bf16 table entry on CUDA, or an AVX FMA estimate on CPU."""
    if override:
        return override, "given"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, f"{name} dense bf16"
        return float("nan"), f"{name}: unknown peak, pass --peak-tflops"
    flags = open("/proc/cpuinfo").read()
    mhz = max(float(line.split(":")[1]) for line in flags.splitlines() if line.startswith("cpu MHz"))
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    threads = torch.get_num_threads()
    return threads * mhz * 1e6 * per_cycle / 1e12, f"estimate: {threads} threads x {mhz:.0f} MHz x {per_cycle} FLOP/cycle"


def run_production_mode(args: argparse.Namespace) -> dict:
    """One batching mode (and quantization) in this process, so peak memory is its own; a JSON-ready result."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scale = 1 if device == "cuda" else args.cpu_scale
    config = production_config(scale)
    tokenizer = train_tokenizer(corpus_texts())
    examples, _ = tokenize_records(tokenizer, chat_records(args.records_per_company), CONTEXT_LENGTH)
    mean = sum(len(e) for e in examples) / len(examples)
    if args.only_mode == "packed":
        collator, rows, size = PackedCollator(tokenizer.pad_token_id, pad_to_multiple_of=8), [
            s.as_features() for s in pack_examples(examples)], args.packed_rows
    else:  # the same token budget per step, one record per row, right-padded to the batch's longest
        collator, rows = PaddingCollator(tokenizer.pad_token_id, pad_to_multiple_of=8), [
            s.as_features() for s in one_per_row(examples)]
        size = max(1, round(args.packed_rows * CONTEXT_LENGTH / mean))
    batches = batched(collator, rows, size, seed=0)
    needed = args.warmup + args.steps
    batches = (batches * (needed // max(1, len(batches)) + 1))[:needed]
    with tempfile.TemporaryDirectory() as tmp:
        model = production_model(config, device, args.quantization, Path(tmp))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    real = slots = 0
    seconds = 0.0
    for index, batch in enumerate(batches):
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if index >= args.warmup:
            seconds += time.perf_counter() - started
            real += int(batch[NUM_TOKENS_KEY])
            slots += batch["input_ids"].numel()
    if device == "cuda":
        peak_memory = torch.cuda.max_memory_allocated()
    else:
        import resource

        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    flops = useful_flops_per_token(config, model, examples)
    return {
        "mode": args.only_mode, "quantization": args.quantization, "device": device, "scale": scale,
        "rows_per_step": size, "steps": args.steps, "tokens_per_s": real / seconds, "slots_per_s": slots / seconds,
        "padding_share": 1 - real / slots, "peak_memory_gib": peak_memory / 2**30,
        "mfu": real / seconds * flops / (peak * 1e12), "peak_tflops": peak, "peak_source": peak_source,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "config": {k: getattr(config, k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                   "num_attention_heads", "num_key_value_heads", "head_dim",
                                                   "vocab_size", "rope_parameters")},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "mean_record_tokens": mean,
    }


def production(args: argparse.Namespace) -> None:
    """Each mode in its own process; on CUDA the FP8 path as well."""
    runs = [(mode, "none") for mode in PRODUCTION_MODES]
    if torch.cuda.is_available():
        runs += [(mode, "fp8") for mode in PRODUCTION_MODES]
    results = []
    for mode, quantization in runs:
        command = [sys.executable, __file__, "--config", "production", "--only-mode", mode, "--quantization",
                   quantization, "--steps", str(args.steps), "--warmup", str(args.warmup), "--packed-rows",
                   str(args.packed_rows), "--cpu-scale", str(args.cpu_scale),
                   "--records-per-company", str(args.records_per_company)]
        if args.peak_tflops:
            command += ["--peak-tflops", str(args.peak_tflops)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"mode": mode, "quantization": quantization, "error": tail})
            continue
        results.append(json.loads(lines[-1]))
    done = [r for r in results if "error" not in r]
    if done:
        first = done[0]
        what = ("the full Ministral-3-3B-Instruct-2512 text configuration" if first["scale"] == 1 else
                f"CPU: the Ministral-3-3B-Instruct-2512 text configuration scaled down {first['scale']}x "
                "(hidden, FFN, heads, KV heads, vocabulary; layers 26 -> "
                f"{first['config']['num_hidden_layers']}); head size, GQA 4:1 and YaRN as in production")
        print(f"{what}: {first['config']}")
        print(f"random weights, bf16 autocast, LoRA r=16 on {', '.join(LORA_TARGET_MODULES)}, {CONTEXT_LENGTH} tokens "
              f"per packed row; {first['params']:,} parameters, {first['trainable']:,} trainable; records of "
              f"{first['mean_record_tokens']:.0f} tokens on average; torch {first['torch']}, {first['device']}, "
              f"{first['threads']} threads; peak for MFU {first['peak_tflops']:.1f} TFLOPS ({first['peak_source']})")
    print("\n| batching | quantization | rows/step | timed steps | real tokens/s | padding share | peak memory | MFU |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['mode']} | {r['quantization']} | failed: {r['error'][:160]} |")
            continue
        memory = "GPU allocated" if r["device"] == "cuda" else "process RSS"
        print(f"| {r['mode']} | {r['quantization']} | {r['rows_per_step']} | {r['steps']} | {r['tokens_per_s']:,.0f} | "
              f"{r['padding_share']:.1%} | {r['peak_memory_gib']:.2f} GiB ({memory}) | {r['mfu']:.1%} |")


def main() -> None:
    """Build the tiny base, then time packed and plain-padded batches (or --config production)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="tiny", choices=["tiny", "production"])
    parser.add_argument("--steps", type=int, default=None, help="production: timed steps per mode")
    parser.add_argument("--cpu-scale", type=int, default=CPU_SCALE, help="production on CPU: width divisor")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU")
    parser.add_argument("--only-mode", choices=PRODUCTION_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--quantization", default="none", choices=["none", "fp8"], help=argparse.SUPPRESS)
    parser.add_argument("--records-per-company", type=int, default=60)
    parser.add_argument("--packed-rows", type=int, default=4, help="packed rows of <=1024 tokens per batch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config == "production":
        args.steps = args.steps or (10 if torch.cuda.is_available() else 3)
        if args.only_mode:
            print(json.dumps(run_production_mode(args)))
        else:
            production(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_base(corpus_texts(), Path(tmp) / "tiny-base")
        tokenizer = load_tokenizer(base)
        examples, report = tokenize_records(tokenizer, chat_records(args.records_per_company))
        mean = sum(len(e) for e in examples) / len(examples)
        plain_rows = max(1, round(args.packed_rows * 1024 / mean))  # the same token budget per batch
        packed = [s.as_features() for s in pack_examples(examples)]
        plain = [s.as_features() for s in one_per_row(examples)]
        pad = tokenizer.pad_token_id
        plans = [
            ("packed (position_ids)", PackedCollator(pad), packed, args.packed_rows),
            ("plain padding, same token budget", PaddingCollator(pad), plain, plain_rows),
            ("plain padding, same rows", PaddingCollator(pad), plain, args.packed_rows),
        ]
        print(f"{report.kept} records, {sum(len(e) for e in examples):,} tokens, mean {mean:.0f} tokens/record; "
              f"{len(packed)} packed rows; torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"attention {args.attn}")
        print("\n| batching | rows/batch | timed steps | real tokens/step | padding share | real tokens/s | "
              "slots/s |\n| --- | --- | --- | --- | --- | --- | --- |")
        best: dict[str, Result] = {}
        for repeat in range(args.repeats):  # modes alternate so that load on a shared machine hits them alike
            for mode, collator, rows, size in plans[repeat % len(plans):] + plans[:repeat % len(plans)]:
                model = lora_model(base, args.attn)
                batches = [b for epoch in range(args.epochs) for b in batched(collator, rows, size, seed=epoch)]
                result = measure(mode, model, batches, size, args.warmup)
                if mode not in best or result.seconds < best[mode].seconds:
                    best[mode] = result
        for mode, *_ in plans:
            print(best[mode].row())


if __name__ == "__main__":
    main()
