"""Tokenisation, packing and attention isolation on chat records built from real SEC filings."""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from lxml import html

from governed_ft_dagster.training.base_model import CONTEXT_LENGTH, TINY_MARKER, build_tiny_base, load_tokenizer
from governed_ft_dagster.training.packing import (
    IGNORE_INDEX,
    PackedCollator,
    PackingIsolationError,
    PaddingCollator,
    _prefix_assistant_mask,
    check_attention_isolation,
    model_inputs,
    one_per_row,
    pack_examples,
    padding_share,
    tokenize_chat,
    tokenize_records,
    verify_attention_isolation,
)

REPO = Path(__file__).resolve().parents[1]
FILINGS = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO.parent / "shared" / "sec_samples")) / "filings"
COMPANIES = {  # ticker: (primary document, CIK); V is held out as the validation company
    "AAPL": ("AAPL_10-K_2024-09-28_0000320193-24-000123.html", "0000320193"),
    "NVDA": ("NVDA_10-K_2024-01-28_0001045810-24-000029.html", "0001045810"),
    "V": ("V_10-K_2024-09-30_0001403161-24-000058.html", "0001403161"),
}
VALIDATION_COMPANIES = {"V"}
SYSTEM_PROMPT = "You are a financial analyst who summarises the risk factors of SEC filings."


@functools.cache
def filing_paragraphs(document: str) -> tuple[str, ...]:
    """The text of each innermost block element of a filing, whitespace collapsed."""
    root = html.fromstring((FILINGS / document).read_bytes())
    paragraphs = []
    for element in root.iter("div", "p"):
        if any(child.tag in ("div", "p", "table") for child in element):
            continue
        text = " ".join(element.text_content().split())
        if text:
            paragraphs.append(text)
    return tuple(paragraphs)


def risk_paragraphs(document: str, count: int) -> list[str]:
    """Long paragraphs after the last "Item 1A" heading (the section itself, not the table of contents)."""
    paragraphs = filing_paragraphs(document)
    starts = [i for i, p in enumerate(paragraphs) if re.match(r"item\s*1a\b", p, re.I)]
    body = paragraphs[starts[-1] if starts else 0:]
    return [p for p in body if len(p) > 300][:count]


def corpus_texts() -> list[str]:
    """All paragraphs of the sample filings, to train the tiny tokenizer on."""
    return [p for document, _ in COMPANIES.values() for p in filing_paragraphs(document)]


@functools.cache
def _chat_records(per_company: int) -> tuple[dict, ...]:
    records = []
    for ticker, (document, cik) in COMPANIES.items():
        accession = re.search(r"(\d{10}-\d{2}-\d{6})", document).group(1)
        for paragraph in risk_paragraphs(document, per_company):
            first_sentence = re.split(r"(?<=[.!?])\s+", paragraph)[0]
            records.append({
                "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                             {"role": "user", "content": f"Summarize this risk factor: {paragraph}"},
                             {"role": "assistant", "content": first_sentence}],
                "split": "validation" if ticker in VALIDATION_COMPANIES else "train",
                "cik": cik, "accession_number": accession,
            })
    return tuple(records)


def chat_records(per_company: int = 20) -> list[dict]:
    """About 60 system/user/assistant records from the sample filings, split by company."""
    return [dict(record) for record in _chat_records(per_company)]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny Ministral3 base, built once per session (shared with test_training through the base temp dir)."""
    path = tmp_path_factory.getbasetemp() / "tiny-base"
    if not (path / TINY_MARKER).exists():
        build_tiny_base(corpus_texts(), path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tiny_base):
    return load_tokenizer(tiny_base)


@pytest.fixture(scope="session")
def examples(tokenizer):
    examples, report = tokenize_records(tokenizer, chat_records())
    assert report.kept == report.records == len(chat_records())
    return examples


def test_records_come_from_real_filings():
    records = chat_records()
    assert 55 <= len(records) <= 60
    assert Counter(r["split"] for r in records)["validation"] == 20
    assert {r["cik"] for r in records if r["split"] == "train"} == {"0000320193", "0001045810"}


def test_labels_only_on_assistant_tokens(tokenizer):
    for record in chat_records()[:10]:
        example, outcome = tokenize_chat(tokenizer, record["messages"])
        assert outcome == "ok"
        labelled = [label for label in example.labels if label != IGNORE_INDEX]
        assert tokenizer.decode(labelled) == record["messages"][-1]["content"] + tokenizer.eos_token
        start = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        assert all(label == IGNORE_INDEX for label in example.labels[:start])
        assert list(example.labels[start:]) == list(example.input_ids[start:])
        assert example.labels[0] == IGNORE_INDEX


def test_multi_turn_labels_match_the_prefix_method(tokenizer):
    record = chat_records()[0]
    messages = record["messages"] + [{"role": "user", "content": "Shorter, please."},
                                     {"role": "assistant", "content": "Supply chain risk."}]
    example, _ = tokenize_chat(tokenizer, messages)
    ids, mask = _prefix_assistant_mask(tokenizer, messages)
    assert list(example.input_ids) == ids
    assert [label != IGNORE_INDEX for label in example.labels] == [bool(m) for m in mask]
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == (
        record["messages"][-1]["content"] + "</s>Supply chain risk.</s>")


def test_records_over_the_context_are_refused_or_truncated_and_counted(tokenizer):
    records = chat_records()[:3]
    long_text = " ".join(risk_paragraphs(COMPANIES["NVDA"][0], 40))
    long_answer = {"messages": [{"role": "user", "content": "Repeat the risk factors."},
                                {"role": "assistant", "content": long_text}]}
    long_prompt = {"messages": [{"role": "user", "content": long_text},
                                {"role": "assistant", "content": "Many risks."}]}
    examples, report = tokenize_records(tokenizer, records + [long_answer, long_prompt])
    assert (report.records, report.kept, report.refused_too_long) == (5, 3, 2)
    assert report.longest_tokens <= CONTEXT_LENGTH

    examples, report = tokenize_records(tokenizer, records + [long_answer, long_prompt], overlong="truncate")
    assert (report.kept, report.truncated, report.refused_no_assistant_tokens) == (4, 1, 1)
    assert len(examples[-1]) == CONTEXT_LENGTH and examples[-1].truncated


def test_packed_rows_fit_the_context_and_positions_restart(examples):
    rows = pack_examples(examples)
    assert len(rows) < len(examples)
    assert all(len(row) <= CONTEXT_LENGTH for row in rows)
    packed = Counter()
    for row in rows:
        start = 0
        for length in row.lengths:
            assert list(row.position_ids[start:start + length]) == list(range(length))
            assert row.labels[start] == IGNORE_INDEX
            packed[row.input_ids[start:start + length]] += 1
            start += length
        assert start == len(row)
    assert packed == Counter(example.input_ids for example in examples)
    assert sum(len(row) for row in rows) / (len(rows) * CONTEXT_LENGTH) > 0.85


def _dataset_padding_share(collator, rows, batch_size: int) -> float:
    batches = [collator([r.as_features() for r in rows[i:i + batch_size]]) for i in range(0, len(rows), batch_size)]
    slots = sum(batch["input_ids"].numel() for batch in batches)
    return sum(padding_share(batch) * batch["input_ids"].numel() for batch in batches) / slots


def test_packed_batches_carry_far_less_padding_than_plain_padding(tokenizer, examples):
    packed = _dataset_padding_share(PackedCollator(tokenizer.pad_token_id), pack_examples(examples), 4)
    plain = _dataset_padding_share(PaddingCollator(tokenizer.pad_token_id), one_per_row(examples), 4)
    assert packed < 0.05
    assert plain > 0.2 and plain > 5 * packed


def test_collators_pad_labels_and_positions(tokenizer, examples):
    rows = pack_examples(examples)
    batch = PackedCollator(tokenizer.pad_token_id, pad_to_multiple_of=64)([rows[-1].as_features(),
                                                                            rows[0].as_features()])
    n = len(rows[-1])
    assert batch["input_ids"].shape[1] % 64 == 0 and "attention_mask" not in batch
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["input_ids"][0, n:] == tokenizer.pad_token_id).all()
    assert batch["position_ids"][0, n] == 0
    assert int(batch["num_real_tokens"]) == len(rows[-1]) + len(rows[0])
    plain = PaddingCollator(tokenizer.pad_token_id)([{"input_ids": [5, 6], "labels": [-100, 6]},
                                                     {"input_ids": [7], "labels": [7]}])
    assert plain["attention_mask"].tolist() == [[1, 1], [1, 0]] and padding_share(plain) == 0.25


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny_model(request, tiny_base):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation=request.param).eval()
    model.config.use_cache = False
    return model


def test_attention_does_not_cross_packed_examples(tokenizer, examples, tiny_model):
    rows = [pack_examples(examples[:2])[0], one_per_row(examples[2:3])[0]]
    assert len(rows[0].lengths) == 2 and len(rows[1]) < len(rows[0])
    batch = PackedCollator(tokenizer.pad_token_id)([row.as_features() for row in rows])
    with torch.no_grad():
        packed = tiny_model(**model_inputs(batch)).logits
        for index, row in enumerate(rows):
            start = 0
            for length in row.lengths:
                alone = tiny_model(input_ids=torch.tensor([row.input_ids[start:start + length]])).logits[0]
                assert (packed[index, start:start + length] - alone).abs().max() < 1e-4
                start += length

        # The same row read as one document: the second example sees the first, and its logits move.
        leaking = tiny_model(input_ids=batch["input_ids"][:1], position_ids=batch["position_ids"][:1],
                             attention_mask=torch.ones_like(batch["input_ids"][:1])).logits[0]
        first = rows[0].lengths[0]
        assert (leaking[first:len(rows[0])] - packed[0, first:len(rows[0])]).abs().max() > 1e-2


def test_packed_loss_equals_the_loss_of_the_examples_alone(tokenizer, examples, tiny_model):
    chosen = examples[:3]
    batch = PackedCollator(tokenizer.pad_token_id)([pack_examples(chosen)[0].as_features()])
    assert len(pack_examples(chosen)) == 1
    with torch.no_grad():
        packed = tiny_model(**model_inputs(batch)).loss
        total, count = 0.0, 0
        for example in chosen:
            n = sum(label != IGNORE_INDEX for label in example.labels[1:])
            loss = tiny_model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
            total, count = total + loss.item() * n, count + n
    assert packed.item() == pytest.approx(total / count, abs=1e-4)


def test_isolation_check_catches_the_cache_trap(tokenizer, tiny_model):
    check = verify_attention_isolation(tiny_model, len(tokenizer))
    assert check.max_abs_diff_isolated < 1e-4 < check.max_abs_diff_leaking
    tiny_model.config.use_cache = True  # the saved config's default: a cache turns packed-sequence masking off
    try:
        assert check_attention_isolation(tiny_model, len(tokenizer)).ratio > 0.5
        with pytest.raises(PackingIsolationError):
            verify_attention_isolation(tiny_model, len(tokenizer))
    finally:
        tiny_model.config.use_cache = False
