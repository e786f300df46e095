"""Property tests: the extractor never raises and keeps its contract on arbitrary and mutated input."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governed_ft_dagster.edgar.extract import Extraction, Status, extract_many, extract_risk_factors

SAMPLES = Path(
    os.environ.get("GOVERNED_FT_SEC_SAMPLES")
    or Path(__file__).resolve().parents[1].parent / "shared" / "sec_samples"
)

_SYNTHETIC = (
    "<html><body><p>PART II</p><p>Item 1A. Risk Factors</p><p>"
    + "Our results could be harmed by many risks. " * 40
    + "</p><p>Item 2. Unregistered Sales of Equity Securities</p><p>None.</p></body></html>"
).encode()


def _load() -> dict[str, tuple[str, bytes]]:
    """name -> (form, html) for every shared filing, loaded once; a synthetic one if the samples are absent."""
    files = sorted((SAMPLES / "filings").glob("*.html"))
    docs = {f.stem: ("10-Q" if "_10-Q_" in f.name else "10-K", f.read_bytes()) for f in files}
    return docs or {"synthetic": ("10-Q", _SYNTHETIC)}


NAMED_DOCS = _load()
DOCS = list(NAMED_DOCS.values())
FORMS = st.sampled_from(["10-K", "10-Q", "10-K/A", "10-Q/A"])
TAGS = [
    b"<p>", b"</p>", b"<div>", b"</div>", b"<span>", b"</span>", b"<table><tr><td>", b"</td></tr></table>",
    b"<br/>", b"<ix:header>", b"</ix:header>", b"<div style='display:none'>", b"<script>", b"</script>",
    b"<!--", b"-->", b"<![CDATA[", b"]]>", b"<?xml version='1.0' encoding='utf-16'?>", b"&#0;", b"&bogus;",
    b"<meta charset='shift_jis'>", b"Item 1A. Risk Factors", b"Item 2.", b"PART II", b"\x00", b"\xff\xfe", b"<",
]
SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _check(result: Extraction) -> None:
    """The invariants every extraction result must satisfy."""
    assert isinstance(result, Extraction)
    assert isinstance(result.status, Status)
    assert isinstance(result.text, str) and result.chars == len(result.text)
    assert "\x00" not in result.text and "\x01" not in result.text
    if result.status is Status.ERROR:
        assert result.reason
    if result.status in (Status.EXTRACTED, Status.NO_MATERIAL_CHANGES, Status.INCORPORATED_BY_REFERENCE):
        assert result.heading and result.text.startswith(result.heading)
        assert result.text.strip() == result.text and len(result.text) > len(result.heading)
    if result.status is Status.NOT_FOUND:
        assert result.text == "" and result.reason


def _run_one(html: bytes | str, form: str) -> Extraction:
    """Run through the batch API and check there is exactly one well-formed result."""
    results = list(extract_many([("k", html, form)]))
    assert len(results) == 1 and results[0][0] == "k"
    _check(results[0][1])
    return results[0][1]


@st.composite
def mutated(draw: st.DrawFn, window: int) -> tuple[bytes, str]:
    """A slice of a real filing with random truncation, deletion, duplication and tag insertion."""
    form, doc = draw(st.sampled_from(DOCS))
    start = draw(st.integers(0, max(0, len(doc) - 1)))
    data = bytearray(doc[start : start + window])
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["truncate", "delete", "duplicate", "insert", "insert"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 5000))]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 5000))]
        else:
            data[pos:pos] = draw(st.sampled_from(TAGS) | st.binary(min_size=1, max_size=8))
    return bytes(data), form


@settings(SETTINGS, max_examples=150)
@given(st.binary(max_size=4000), FORMS)
def test_arbitrary_bytes_never_raise(data: bytes, form: str) -> None:
    _run_one(data, form)


@settings(SETTINGS, max_examples=100)
@given(st.text(max_size=2000), st.text(max_size=12) | FORMS)
def test_arbitrary_text_and_form_never_raise(text: str, form: str) -> None:
    _run_one(text, form)


@settings(SETTINGS, max_examples=120)
@given(mutated(window=200_000))
def test_mutated_filing_slices_never_raise(sample: tuple[bytes, str]) -> None:
    _run_one(*sample)


@settings(SETTINGS, max_examples=15)
@given(mutated(window=10**9))
def test_mutated_whole_filings_never_raise(sample: tuple[bytes, str]) -> None:
    _run_one(*sample)


@settings(SETTINGS, max_examples=40)
@given(st.lists(st.tuples(st.binary(max_size=300), FORMS), max_size=6))
def test_extract_many_yields_one_result_per_item(items: list[tuple[bytes, str]]) -> None:
    keyed = [(f"k{i}", html, form) for i, (html, form) in enumerate(items)]
    results = list(extract_many(keyed))
    assert [k for k, _ in results] == [k for k, _, _ in keyed]
    for _, result in results:
        _check(result)


# Splitting words of headings with empty inline tags (the ORCL "Ri</span><span>sk" case) must change nothing.
_QUARTERLY = [doc for name, (_, doc) in NAMED_DOCS.items() if name.startswith(("AAPL_10-Q", "NVDA_10-Q", "ORCL_10-Q"))]
_QUARTERLY = _QUARTERLY or [_SYNTHETIC]
_WORDS = re.compile(rb"(?:Item|ITEM)\s*(?:1A|2)|Risk Factors|RISK FACTORS|Unregistered|UNREGISTERED")
_BASELINE = [extract_risk_factors(doc, "10-Q") for doc in _QUARTERLY]


def _text_positions(doc: bytes) -> list[int]:
    """Offsets strictly inside heading words that sit in text content, not inside a tag."""
    body = doc.find(b"<body")
    positions = []
    for match in _WORDS.finditer(doc, max(body, 0)):
        if doc.rfind(b"<", 0, match.start()) < doc.rfind(b">", 0, match.start()):
            positions.extend(range(match.start() + 1, match.end()))
    return positions


_POSITIONS = [_text_positions(doc) for doc in _QUARTERLY]


@settings(SETTINGS, max_examples=30)
@given(st.data())
def test_inline_tags_inside_heading_words_change_nothing(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(_QUARTERLY) - 1))
    positions = _POSITIONS[which]
    chosen = sorted(set(data.draw(st.lists(st.sampled_from(positions), min_size=1, max_size=8))), reverse=True)
    doc = bytearray(_QUARTERLY[which])
    for pos in chosen:
        doc[pos:pos] = data.draw(st.sampled_from([b"<span></span>", b"</span><span>", b"<b></b>", b"<font>", b"</font>"]))
    result = _run_one(bytes(doc), "10-Q")
    assert result.status is _BASELINE[which].status
    assert result.text == _BASELINE[which].text
