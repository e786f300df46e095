"""Benchmark LoRA training throughput and padding share, packed vs plain padding, on the tiny base (CPU)."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import torch  # noqa: E402

from governed_ft_dagster.training.base_model import LORA_TARGET_MODULES, build_tiny_base, load_tokenizer  # noqa: E402
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


def main() -> None:
    """Build the tiny base, then time packed and plain-padded batches."""
    parser = argparse.ArgumentParser(description=__doc__)
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
