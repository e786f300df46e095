"""Data contracts: each fails on crafted bad input and holds on the real shared data."""

from __future__ import annotations

import dagster as dg
import pytest

from conftest import SHARED_SAMPLES
from governed_ft_dagster import quality
from governed_ft_dagster.edgar.extract import extract_risk_factors

FORMS = {"10-K": "10-K", "10-Q": "10-Q"}


@pytest.fixture(scope="module")
def real_raw_rows() -> list[dict]:
    rows = []
    for path in sorted((SHARED_SAMPLES / "filings").glob("*.html")):
        form = path.name.split("_")[1]
        result = extract_risk_factors(path.read_bytes(), form)
        rows.append({"accession_number": path.stem, "status": result.status.value, "risk_factors_text": result.text})
    return rows


def test_raw_contracts_hold_on_the_shared_filings(real_raw_rows):
    assert quality.unique_accessions(real_raw_rows).passed
    assert quality.located_share(real_raw_rows, 0.8).passed
    assert quality.text_lengths_in_range(real_raw_rows, 200, 2_000_000).passed


def test_raw_contracts_fail_on_crafted_input(real_raw_rows):
    assert not quality.unique_accessions(real_raw_rows + real_raw_rows[:1]).passed
    not_found = [dict(r, status="not_found") for r in real_raw_rows]
    verdict = quality.located_share(not_found, 0.8)
    assert not verdict.passed and verdict.metadata["share_located"] == 0.0
    truncated = [dict(real_raw_rows[0], status="extracted", risk_factors_text="Item 1A. Risk Factors")]
    assert not quality.text_lengths_in_range(truncated, 200, 2_000_000).passed


def test_quarterly_partition_of_no_material_changes_is_located_but_not_found_is_not():
    quarter = ([{"status": "no_material_changes"}] * 20 + [{"status": "extracted"}] * 12
               + [{"status": "not_found"}] * 4)
    verdict = quality.located_share(quarter, 0.8)
    assert verdict.passed and verdict.metadata["share_located"] == round(32 / 36, 4)
    assert verdict.metadata["share_extracted"] == round(12 / 36, 4)
    assert not quality.located_share(quarter + [{"status": "error"}] * 5, 0.8).passed
    assert not quality.located_share([], 0.8).passed


def test_rows_must_cover_every_listed_filing():
    rows = [{"accession_number": a} for a in ("0000000001-24-000001", "0000000002-24-000002",
                                              "0000000009-23-000009")]  # one left from an earlier listing
    assert quality.rows_cover_listing(rows, ["0000000001-24-000001", "0000000002-24-000002"]).passed
    verdict = quality.rows_cover_listing(rows[:1], ["0000000001-24-000001", "0000000002-24-000002"])
    assert not verdict.passed
    assert verdict.description == "1 of 2 listed filings have no row: 0000000002-24-000002"
    assert verdict.metadata["missing"] == ["0000000002-24-000002"]


def record(cik: str, split: str, n_tokens: int = 300, content: str = "text") -> dict:
    messages = [{"role": r, "content": content} for r in ("system", "user", "assistant")]
    return {"record_id": f"{cik}-{split}-{n_tokens}", "cik": cik, "split": split, "n_tokens": n_tokens, "messages": messages}


def test_curated_contracts():
    good = [record("1", "train"), record("1", "train", 1024), record("2", "validation")]
    assert quality.no_empty_messages(good).passed
    assert quality.within_token_budget(good, 1024).passed
    assert quality.companies_in_one_split(good).passed
    assert quality.curated_schema(quality.CURATED_COLUMNS).passed
    assert quality.curated_count_against_raw(3, 2).passed
    assert not quality.no_empty_messages([record("1", "train", content="  ")]).passed
    assert not quality.no_empty_messages([dict(record("1", "train"), messages=[])]).passed
    assert not quality.within_token_budget([record("1", "train", 1025)], 1024).passed
    assert not quality.companies_in_one_split(good + [record("2", "train")]).passed
    assert not quality.curated_schema(["record_id", "messages"]).passed
    assert not quality.curated_count_against_raw(0, 5).passed


def test_adapter_gate():
    assert quality.adapter_beats_base(2.1, 2.5).passed
    assert not quality.adapter_beats_base(2.6, 2.5).passed
    assert not quality.adapter_beats_base(None, 2.5).passed
    assert not quality.adapter_beats_base(8.3237, 8.3538).passed  # 0.36% better: the old demo's adapter
    assert quality.adapter_beats_base(8.3237, 8.3538, min_relative_improvement=0.003).passed
    above, below = quality.adapter_beats_base(2.96, 3.0), quality.adapter_beats_base(2.98, 3.0)
    assert above.passed and above.metadata["relative_improvement"] == pytest.approx(0.013333, abs=1e-6)
    assert not below.passed and "minimum 1.00%" in below.description
    assert above.metadata["min_relative_improvement"] == quality.DEFAULT_MIN_RELATIVE_IMPROVEMENT == 0.01


def test_a_failing_model_check_blocks_registration(tmp_path):
    from governed_ft_dagster.defs.checks import adapter_beats_base_model

    ran = []

    @dg.asset(name="finetuned_lora_model")
    def model():
        return dg.MaterializeResult(metadata={"eval_loss": 3.2, "base_eval_loss": 3.0})

    @dg.asset(deps=[model])
    def uc_model_version():
        ran.append(True)

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([model, uc_model_version, adapter_beats_base_model], instance=instance,
                                raise_on_error=False)
    assert not result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and "3.2000" in evaluation.description
    assert ran == []
