"""Chat records to supervised token sequences, padding-free packing and the collators that batch them."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from governed_ft_dagster.training.base_model import CONTEXT_LENGTH

IGNORE_INDEX = -100
NUM_TOKENS_KEY = "num_real_tokens"
OverlongPolicy = Literal["refuse", "truncate"]


class PackingIsolationError(RuntimeError):
    """The model lets packed examples attend to each other."""


@dataclass(frozen=True)
class TokenizedExample:
    """One chat record as token ids with loss labels (IGNORE_INDEX outside assistant turns)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizationReport:
    """What happened to the records on their way to token sequences."""

    max_length: int
    overlong_policy: str
    records: int = 0
    kept: int = 0
    truncated: int = 0
    refused_too_long: int = 0
    refused_no_assistant_tokens: int = 0
    longest_tokens: int = 0
    tokens_kept: int = 0
    assistant_tokens_kept: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable values."""
        return asdict(self)


@dataclass(frozen=True)
class PackedSequence:
    """Several examples laid end to end, with position ids restarting at 0 for each example."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    position_ids: tuple[int, ...]
    lengths: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    def as_features(self) -> dict[str, list[int]]:
        """The row as a dataset item for the collators."""
        return {"input_ids": list(self.input_ids), "labels": list(self.labels),
                "position_ids": list(self.position_ids)}


def _prefix_assistant_mask(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
    """Assistant mask from re-tokenising conversation prefixes, for templates without generation markers."""
    ids: list[int] = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True)["input_ids"]
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(list(messages[:i]), tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"] if i else []
        upto = tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=True, return_dict=True)["input_ids"]
        if ids[: len(upto)] != upto or upto[: len(before)] != before:
            raise ValueError("the chat template does not tokenise conversation prefixes stably")
        mask[len(before):len(upto)] = [1] * (len(upto) - len(before))
    return ids, mask


def assistant_token_mask(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask of the tokens the assistant produced."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if "{% generation %}" not in (getattr(tokenizer, "chat_template", None) or ""):
        return _prefix_assistant_mask(tokenizer, messages)
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    return list(encoded["input_ids"]), list(encoded["assistant_masks"])


def tokenize_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], max_length: int = CONTEXT_LENGTH,
                  overlong: OverlongPolicy = "refuse") -> tuple[TokenizedExample | None, str]:
    """One record to a training example, or None and the reason it was refused ("too_long", "no_assistant")."""
    ids, mask = assistant_token_mask(tokenizer, messages)
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, mask)]
    if labels:
        labels[0] = IGNORE_INDEX  # the first token of a packed example must never be a target of its neighbour
    truncated = len(ids) > max_length
    if truncated:
        if overlong == "refuse":
            return None, "too_long"
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None, "no_assistant"
    return TokenizedExample(tuple(ids), tuple(labels), truncated), "truncated" if truncated else "ok"


def tokenize_records(tokenizer: Any, records: Iterable[Mapping[str, Any]], max_length: int = CONTEXT_LENGTH,
                     overlong: OverlongPolicy = "refuse") -> tuple[list[TokenizedExample], TokenizationReport]:
    """Tokenise records that carry a `messages` list, counting what was kept, truncated and refused."""
    report = TokenizationReport(max_length=max_length, overlong_policy=overlong)
    examples: list[TokenizedExample] = []
    for record in records:
        report.records += 1
        example, outcome = tokenize_chat(tokenizer, record["messages"], max_length, overlong)
        if example is None:
            if outcome == "too_long":
                report.refused_too_long += 1
            else:
                report.refused_no_assistant_tokens += 1
            continue
        report.kept += 1
        report.truncated += example.truncated
        report.longest_tokens = max(report.longest_tokens, len(example))
        report.tokens_kept += len(example)
        report.assistant_tokens_kept += sum(label != IGNORE_INDEX for label in example.labels)
        examples.append(example)
    return examples, report


def pack_examples(examples: Sequence[TokenizedExample], max_length: int = CONTEXT_LENGTH,
                  row_multiple: int = 1) -> list[PackedSequence]:
    """Greedy bin packing into rows of at most max_length tokens: few rows, of nearly equal length.

    row_multiple: the row count is made a multiple of it (the global batch), so every batch of an epoch is full and
    a job on several ranks trains exactly the batches one process would (no rank pads its last batch with repeats).
    """
    sizes = [len(example) for example in examples]
    too_long = [i for i, size in enumerate(sizes) if size > max_length]
    if too_long:
        raise ValueError(f"example {too_long[0]} has {sizes[too_long[0]]} tokens, more than {max_length}")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    bins = _best_fit_decreasing(sizes, order, max_length)
    lower = -(-sum(sizes) // max_length)
    if row_multiple > 1 and len(sizes) >= row_multiple:
        first = max(row_multiple, -(-lower // row_multiple) * row_multiple)
        counts: Iterable[int] = range(first, len(sizes) + 1, row_multiple)
    else:
        # Rows of equal length need little padding when batched; try a few row counts from the lower bound up.
        counts = sorted({*range(lower, min(lower + 3, len(bins))), len(bins)})
    for count in counts:
        balanced = _balanced(sizes, order, count, max_length)
        if balanced is not None:
            bins = balanced
            break
    return [_concat([examples[i] for i in members]) for members in bins if members]


def _best_fit_decreasing(sizes: Sequence[int], order: Sequence[int], max_length: int) -> list[list[int]]:
    """Each example, longest first, into the fullest row it still fits."""
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row index), sorted
    for i in order:
        slot = bisect.bisect_left(free, (sizes[i], -1))
        if slot < len(free):
            remaining, row = free.pop(slot)
        else:
            remaining, row = max_length, len(bins)
            bins.append([])
        bins[row].append(i)
        if remaining > sizes[i]:
            bisect.insort(free, (remaining - sizes[i], row))
    return bins


def _balanced(sizes: Sequence[int], order: Sequence[int], count: int, max_length: int) -> list[list[int]] | None:
    """Each example, longest first, into the emptiest of `count` rows; None when one does not fit."""
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [(0, row) for row in range(count)]
    for i in order:
        load, row = heapq.heappop(loads)
        if load + sizes[i] > max_length:
            return None
        bins[row].append(i)
        heapq.heappush(loads, (load + sizes[i], row))
    return bins


def one_per_row(examples: Sequence[TokenizedExample]) -> list[PackedSequence]:
    """Each example in a row of its own (the plain padding baseline)."""
    return [_concat([example]) for example in examples]


def _concat(examples: Sequence[TokenizedExample]) -> PackedSequence:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids.extend(example.input_ids)
        labels.extend(example.labels)
        positions.extend(range(len(example)))
    return PackedSequence(tuple(ids), tuple(labels), tuple(positions), tuple(len(e) for e in examples))


def _padded_length(lengths: Sequence[int], multiple: int | None) -> int:
    longest = max(lengths)
    return longest if not multiple else -(-longest // multiple) * multiple


@dataclass
class PackedCollator:
    """Batches packed rows: right padding, restarting position ids, no attention mask (document masking).

    flatten: the rows laid end to end in one row with no padding at all, for FlashAttention's variable-length
    kernel, which finds every example's boundary in the position ids.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    flatten: bool = False

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        if self.flatten:
            features = [{key: [item for feature in features for item in feature[key]]
                         for key in ("input_ids", "labels", "position_ids")}]
        ids, labels, lengths = _right_padded(features, self.pad_token_id, self.pad_to_multiple_of)
        width = ids.shape[1]
        # Padding forms a segment of its own (positions from 0), so no real token can attend to it.
        positions = torch.arange(width, dtype=torch.long).repeat(len(features), 1)
        for row, (feature, n) in enumerate(zip(features, lengths)):
            positions[row, :n] = torch.tensor(feature["position_ids"])
            positions[row, n:] = torch.arange(width - n)
        return {"input_ids": ids, "labels": labels, "position_ids": positions,
                NUM_TOKENS_KEY: torch.tensor(sum(lengths), dtype=torch.long)}


@dataclass
class PaddingCollator:
    """Batches one example per row with right padding and a 2-D attention mask (the baseline)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        ids, labels, lengths = _right_padded(features, self.pad_token_id, self.pad_to_multiple_of)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                NUM_TOKENS_KEY: mask.sum()}


def _right_padded(features: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int,
                  multiple: int | None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Input ids and labels padded on the right to one width, and each row's real length."""
    lengths = [len(f["input_ids"]) for f in features]
    width = _padded_length(lengths, multiple)
    ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    for row, (feature, n) in enumerate(zip(features, lengths)):
        ids[row, :n] = torch.tensor(feature["input_ids"])
        labels[row, :n] = torch.tensor(feature["labels"])
    return ids, labels, lengths


def padding_share(batch: Mapping[str, torch.Tensor]) -> float:
    """Share of the batch's token slots that hold padding."""
    slots = batch["input_ids"].numel()
    return 1.0 - int(batch[NUM_TOKENS_KEY]) / slots if slots else 0.0


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without the bookkeeping entries the model does not accept."""
    return {key: value for key, value in batch.items() if key != NUM_TOKENS_KEY}


@dataclass
class IsolationCheck:
    """How far packed logits are from the logits of the example alone, against the leak without restarts."""

    max_abs_diff_isolated: float
    max_abs_diff_leaking: float
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.max_abs_diff_isolated / max(self.max_abs_diff_leaking, 1e-12)


@torch.no_grad()
def check_attention_isolation(model: torch.nn.Module, vocab_size: int, lengths: tuple[int, int] = (23, 17),
                              seed: int = 0) -> IsolationCheck:
    """Run two examples packed with restarting position ids and compare the second one's logits with it alone."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        low = min(16, vocab_size - 1)  # stay clear of control tokens
        first, second = (torch.randint(low, vocab_size, (n,), generator=generator) for n in lengths)
        packed = torch.cat([first, second]).unsqueeze(0).to(device)
        restart = torch.cat([torch.arange(lengths[0]), torch.arange(lengths[1])]).unsqueeze(0).to(device)
        alone = model(input_ids=second.unsqueeze(0).to(device)).logits[0].float()
        isolated = model(input_ids=packed, position_ids=restart).logits[0, lengths[0]:].float()
        # The same row read as one document (the second example sees the first): what a leak looks like.
        leaking = model(input_ids=packed, position_ids=restart, attention_mask=torch.ones_like(packed)
                        ).logits[0, lengths[0]:].float()
    finally:
        model.train(was_training)
    return IsolationCheck((isolated - alone).abs().max().item(), (leaking - alone).abs().max().item())


def verify_attention_isolation(model: torch.nn.Module, vocab_size: int, max_ratio: float = 0.05) -> IsolationCheck:
    """Raise PackingIsolationError unless packed examples are as isolated as examples run alone."""
    check = check_attention_isolation(model, vocab_size)
    if check.ratio > max_ratio:
        raise PackingIsolationError(
            f"packed examples attend across boundaries (max |logit diff| {check.max_abs_diff_isolated:.3g} vs "
            f"{check.max_abs_diff_leaking:.3g} for a real leak); is use_cache on, or an attention mask passed?")
    return check
