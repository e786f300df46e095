"""The `governed-ft extract` command-line contract: one JSON object per input line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples"))
FILINGS = SHARED / "filings"

pytestmark = pytest.mark.skipif(not FILINGS.is_dir(), reason=f"shared filings not found at {FILINGS}")


def run_extract(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "governed_ft_dagster.cli", "extract", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_one_object_per_input_with_path_status_and_chars():
    tenks = sorted(str(p) for p in FILINGS.glob("*_10-K_*.html"))
    records = run_extract(*tenks, "--form", "10-K")
    assert [r["path"] for r in records] == tenks
    by_name = {Path(r["path"]).name.split("_")[0]: r for r in records}
    assert by_name["AAPL"]["status"] == "extracted" and by_name["AAPL"]["chars"] > 20_000
    assert by_name["WFC"]["status"] == "incorporated_by_reference"
    assert all("text" not in r for r in records)


def test_text_flag_adds_the_section_and_chars_is_its_length():
    [record] = run_extract(str(next(FILINGS.glob("AAPL_10-Q_*.html"))), "--form", "10-Q", "--text")
    assert record["status"] == "no_material_changes"
    assert record["chars"] == len(record["text"]) > 0


def test_a_bad_file_is_a_status_not_a_crash(tmp_path):
    empty = tmp_path / "empty.html"
    empty.write_bytes(b"")
    [record] = run_extract(str(empty), "--form", "10-K")
    assert record["status"] == "error" and record["reason"]


def test_heading_reason_and_line_offsets_when_known():
    from governed_ft_dagster.edgar.extract import document_lines

    path = next(FILINGS.glob("ORCL_10-Q_*.html"))
    [record] = run_extract(str(path), "--form", "10-Q")
    assert record["status"] == "incorporated_by_reference" and record["reason"]
    assert record["heading"] == "Item 1A. Risk Factors"
    lines = document_lines(path.read_bytes())
    assert lines[record["start"]] == record["heading"] and record["start"] < record["end"] <= len(lines)
