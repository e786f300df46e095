"""Benchmark the Risk Factors extractor (and edgartools, if installed) on the shared EDGAR samples."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from governed_ft_dagster.edgar.extract import Status, extract_risk_factors  # noqa: E402

SAMPLES = Path(os.environ.get("GOVERNED_FT_SEC_SAMPLES", REPO_ROOT.parent / "shared" / "sec_samples"))
EXPECTED_FOUND = {"JNJ_10-Q": False}  # every other sample has an Item 1A section
REPEATS = 3

# Next-section headings: a 10-K section must stop before Item 1B/1C/2, a 10-Q one before Part II Items 2-6.
_RUN_PAST = {
    "10-K": re.compile(r"^\W*item\s*(?:1\s*[bc]|[2-9])\b|^\W*unresolved staff comments\W*$", re.I | re.M),
    "10-Q": re.compile(
        r"^\W*item\s*[2-6]\b|^\W*unregistered sales of equity securities|^\W*defaults upon senior securities",
        re.I | re.M,
    ),
}
_NOISE_LINE = re.compile(
    r"^[ \t]*(?:page[ \t]*)?[-(]?[ \t]*\d{1,4}[ \t]*[-)]?[ \t]*$|^[ \t]*table of contents[ \t]*$|\|[ \t]*\d{1,4}[ \t]*$",
    re.I | re.M,
)


@dataclass
class Row:
    """One tool's result on one filing."""

    status: str
    chars: int
    seconds: float
    run_past: bool
    noise_lines: int


def _pin_one_core() -> str:
    """Pin this process to a single CPU so MB/s is a one-core figure."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def _block_network() -> None:
    """Make any socket connection fail, so nothing here can reach the network."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access is disabled in this benchmark")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


def _load() -> list[tuple[str, str, bytes]]:
    """(name, form, html bytes) for every sample filing."""
    files = sorted((SAMPLES / "filings").glob("*.html"))
    if not files:
        raise SystemExit(f"no filings under {SAMPLES / 'filings'}; set GOVERNED_FT_SEC_SAMPLES")
    return [(f.stem, "10-Q" if "_10-Q_" in f.name else "10-K", f.read_bytes()) for f in files]


def _row(text: str | None, status: str, form: str, seconds: float) -> Row:
    """Summarise one section text."""
    body = text or ""
    return Row(
        status=status,
        chars=len(body),
        seconds=seconds,
        run_past=bool(body) and bool(_RUN_PAST[form].search(body.split("\n", 1)[-1])),
        noise_lines=len(_NOISE_LINE.findall(body)),
    )


def run_ours(docs: list[tuple[str, str, bytes]]) -> tuple[dict[str, Row], float]:
    """Run our extractor; best of REPEATS timings per file."""
    rows: dict[str, Row] = {}
    for name, form, html in docs:
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            result = extract_risk_factors(html, form)
            best = min(best, time.perf_counter() - start)
        found = result.status in (Status.EXTRACTED, Status.NO_MATERIAL_CHANGES, Status.INCORPORATED_BY_REFERENCE)
        rows[name] = _row(result.text if found else None, result.status.value, form, best)
    return rows, sum(r.seconds for r in rows.values())


def _edgartools_lookup() -> Callable[[str, str], str | None] | None:
    """An offline (html, form) -> Item 1A text function backed by edgartools, or None if not installed."""
    os.environ.setdefault("EDGAR_IDENTITY", "bench bench@example.com")
    if "EDGAR_LOCAL_DATA_DIR" not in os.environ:
        data_dir = tempfile.mkdtemp(prefix="bench-edgar-")
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        os.environ["EDGAR_LOCAL_DATA_DIR"] = data_dir
    try:
        import edgar
        from edgar.company_reports import TenK, TenQ
    except ImportError:
        return None
    edgar.set_identity("bench bench@example.com")

    class LocalFiling:
        """The few Filing attributes TenK/TenQ read, served from a local HTML string."""

        def __init__(self, html: str, form: str) -> None:
            self._html = html
            self.form = form
            self.accession_number = "local"
            self.base_dir = ""
            self.cik = 0
            self.company = "local"
            self.attachments: list[object] = []

        def html(self) -> str:
            return self._html

    def lookup(html: str, form: str) -> str | None:
        if form == "10-Q":
            return TenQ(LocalFiling(html, form))["Part II, Item 1A"]
        return TenK(LocalFiling(html, form))["Item 1A"]

    return lookup


def run_edgartools(docs: list[tuple[str, str, bytes]]) -> tuple[dict[str, Row], float] | None:
    """Run edgartools' offline item lookup once per file (it is slow), or None if unavailable."""
    lookup = _edgartools_lookup()
    if lookup is None:
        return None
    rows: dict[str, Row] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, form, html in docs:
            start = time.perf_counter()
            try:
                text = lookup(html.decode("utf-8", errors="replace"), form)
                status = "found" if text and text.strip() else "not_found"
            except Exception as exc:  # noqa: BLE001 - report, don't stop the benchmark
                text, status = None, f"error:{type(exc).__name__}"
            rows[name] = _row(text if status == "found" else None, status, form, time.perf_counter() - start)
    return rows, sum(r.seconds for r in rows.values())


def _summary(tool: str, rows: dict[str, Row], seconds: float, docs: list[tuple[str, str, bytes]]) -> str:
    """One line of the side-by-side table."""
    mb = sum(len(html) for _, _, html in docs) / 1e6
    found = sum(r.chars > 0 for r in rows.values())
    correct = sum((rows[n].chars > 0) == EXPECTED_FOUND.get(n[:8], True) for n, _, _ in docs)
    q_docs = [n for n, form, _ in docs if form == "10-Q"]
    q_past = sum(rows[n].run_past for n in q_docs)
    k_past = sum(rows[n].run_past for n, form, _ in docs if form == "10-K")
    noise = sum(r.noise_lines for r in rows.values())
    return (
        f"{tool:<11} {mb / seconds:>8.1f} {seconds:>8.2f} {found:>3}/{len(docs)} {correct:>5}/{len(docs)}"
        f" {q_past:>5}/{len(q_docs)} {k_past:>5}/{len(docs) - len(q_docs)} {noise:>6}"
    )


def main() -> None:
    """Run both tools and print per-file and summary tables."""
    _block_network()
    pinned = _pin_one_core()
    docs = _load()
    total_mb = sum(len(html) for _, _, html in docs) / 1e6
    print(f"{len(docs)} filings, {total_mb:.1f} MB of HTML from {SAMPLES}; {pinned}; network blocked")

    ours, ours_s = run_ours(docs)
    theirs_result = run_edgartools(docs)
    theirs, theirs_s = theirs_result if theirs_result else ({}, 0.0)

    print()
    header = f"{'filing':<40} {'form':<5} {'ours status':<26} {'chars':>7} {'ms':>6} {'past':>5}"
    if theirs:
        header += f" | {'edgartools':<11} {'chars':>7} {'ms':>7} {'past':>5}"
    print(header)
    print("-" * len(header))
    for name, form, _ in docs:
        o = ours[name]
        line = f"{name[:40]:<40} {form:<5} {o.status:<26} {o.chars:>7} {o.seconds * 1e3:>6.1f} {'YES' if o.run_past else 'no':>5}"
        if theirs:
            t = theirs[name]
            line += f" | {t.status:<11} {t.chars:>7} {t.seconds * 1e3:>7.0f} {'YES' if t.run_past else 'no':>5}"
        print(line)

    print()
    print(f"{'tool':<11} {'MB/s':>8} {'seconds':>8} {'found':>5} {'correct':>7} {'10-Q past':>9} {'10-K past':>9} {'noise':>6}")
    print(_summary("ours", ours, ours_s, docs) + f"   (best of {REPEATS})")
    if theirs:
        print(_summary("edgartools", theirs, theirs_s, docs) + "   (single run, import excluded)")
    else:
        print("edgartools  not installed (pip install edgartools) - skipped")
    print()
    print("found = non-empty section text; correct = found exactly where a section exists (JNJ 10-Q has none);")
    print("past = section text contains a later item heading (10-K: Item 1B/1C/2+, 10-Q: Part II Item 2-6);")
    print("noise = page-number-only, 'Table of Contents' or '... | 12' footer lines left in the section text.")


if __name__ == "__main__":
    main()
