"""Pure text functions that turn a Risk Factors section into instruction records (no Spark, no Dagster)."""

from __future__ import annotations

import bisect
import hashlib
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "PREPROCESS_VERSION",
    "SYSTEM_PROMPT",
    "TASK",
    "RiskFactor",
    "build_messages",
    "chunk_paragraphs",
    "chunk_paragraphs_counted",
    "clean_section",
    "exact_key",
    "jaccard",
    "lsh_band_keys",
    "minhash_signature",
    "normalise_unicode",
    "normalise_whitespace",
    "paragraphs",
    "record_id",
    "shingle_hashes",
    "split_for",
    "split_risk_factors",
    "split_sentences",
    "strip_boilerplate",
]

PREPROCESS_VERSION = "1.0.0"

HEADING_MIN_CHARS = 20
HEADING_MAX_CHARS = 350
SUBSECTION_MAX_CHARS = 120
MIN_BODY_CHARS = 150
# Fewer headings than this and the section is split by run-in lead sentences instead.
MIN_HEADINGS = 2
REPEATED_LINE_MIN_COUNT = 3
REPEATED_LINE_MAX_CHARS = 100

NUM_PERM = 64
SHINGLE_WORDS = 5
LSH_BANDS = 16
_MERSENNE_61 = (1 << 61) - 1
_MASK_63 = (1 << 63) - 1
_MASK_31 = (1 << 31) - 1
_MASK_30 = (1 << 30) - 1

_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ad": None, "\u200b": None, "\u200c": None, "\u200d": None, "\u2060": None, "\ufeff": None,
    "\u25cf": "\u2022", "\u25aa": "\u2022", "\u25e6": "\u2022", "\u2023": "\u2022", "\u2043": "\u2022",
    "\u25a0": "\u2022", "\u25a1": "\u2022", "\uf0b7": "\u2022", "\uf0a7": "\u2022", "\u00b7": "\u2022",
})
_BULLET_RE = re.compile(r"^(?:\u2022|[-*\u2013\u2014](?=\s)|\(?[a-z0-9ivx]{1,4}[.)](?=\s))")
_TERMINAL_RE = re.compile(r"[.!?][\"')\]]*$")
_RISK_WORDS_RE = re.compile(
    r"\b(?:could|may|might|can|cannot|will|would|risks?|advers\w*|harm\w*|depend\w*|subject to|fail\w*|unable|"
    r"inability|negativ\w*|loss\w*|los[et]\w*|volatil\w*|uncertain\w*|challeng\w*|expos\w*|impact\w*|affect\w*|"
    r"disrupt\w*|compet\w*|declin\w*|reduc\w*|increas\w*|limit\w*|delay\w*|difficult\w*|threat\w*|vulnerab\w*|"
    r"liabilit\w*|litigation|regulat\w*|damag\w*|suffer\w*|jeopardi\w*|interrupt\w*)\b",
    re.IGNORECASE,
)
_MODAL_RE = re.compile(r"\b(?:could|may|might|can|cannot|will|would)\b", re.IGNORECASE)
_BOILERPLATE_RE = re.compile(
    r"no material changes|item\s+1a\b|annual report on form 10-k|quarterly report on form 10-q|"
    r"should (?:carefully )?consider|forward-looking statements|not the only risks|"
    r"(?:described|discussed|set forth|listed|included|summarized) (?:below|herein)|"
    r"read in conjunction with|incorporated (?:herein |into this item )?by reference",
    re.IGNORECASE,
)
# Openings that continue an argument rather than state a new risk ("While the Company maintains insurance ...").
_CONTINUATION_RE = re.compile(
    r"^(?:although|though|while|whereas|however|in addition|additionally|also|further(?:more)?|moreover|"
    r"for (?:example|instance)|as a result|accordingly|consequently|similarly|likewise|finally|in particular|"
    r"specifically|these|this|those|such|it|they|if so)\b|^(?:\S+\s+){1,5}also\b",
    re.IGNORECASE,
)
_SECTION_TITLE_RE = re.compile(
    r"^(?:part\s+i{1,2}\W+)?(?:item\s+1a\W*)?(?:summary of )?risk\s+factors(?:\s+summary)?\W*$", re.IGNORECASE
)
_ALLCAPS_LEAD_RE = re.compile(r"^(?P<label>[A-Z][A-Z0-9 &,'/-]{3,80}[A-Z])\.\s+(?P<rest>\S.*)$", re.DOTALL)
_INLINE_RE = re.compile(r"^(?P<label>[A-Z][A-Za-z0-9&,'/() -]{1,60}?)\s+[-\u2013\u2014]\s+(?P<rest>[A-Z\"].*)$", re.DOTALL)
_PAGE_NUMBER_RE = re.compile(
    r"^(?:page\s+)?[-\u2013\u2014]?\s*(?:\d{1,4}|[ivxlc]{1,7})\s*[-\u2013\u2014]?(?:\s+of\s+\d{1,4})?$", re.IGNORECASE
)
_NAV_RE = re.compile(r"^(?:table of contents|index|\(?continued\)?|back to (?:contents|index|top))\.?$", re.IGNORECASE)
_FORM_RE = re.compile(r"\bform\s+10-?[kq]\b|\b(?:annual|quarterly) report\b", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9\u2022])")
_ABBREVIATIONS = frozenset({
    "u.s", "u.k", "e.u", "e.g", "i.e", "inc", "corp", "co", "ltd", "no", "nos", "vs", "etc", "mr", "ms", "mrs",
    "dr", "st", "jr", "sr", "l.p", "llc", "n.a", "s.a", "fig", "approx", "dept", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s.a", "p.l.c", "plc", "al",
})
_WORD_RE = re.compile(r"\w+", re.UNICODE)

SYSTEM_PROMPT = (
    "You are a financial analyst. You read risk factors disclosed in SEC annual (Form 10-K) and quarterly "
    "(Form 10-Q) reports and write their headlines in the filer's own style."
)
TASK = "risk_factor_headline"


@dataclass(frozen=True)
class RiskFactor:
    """One risk factor of a section: its headline, body and the subsection it sits under."""

    ordinal: int
    heading: str
    body: str
    section: str | None
    method: str


def normalise_unicode(text: str) -> str:
    """NFKC-normalise and map typographic quotes, invisible characters and bullet glyphs to plain forms."""
    return unicodedata.normalize("NFKC", text).translate(_TRANSLATE)


def _is_bullet(paragraph: str) -> bool:
    return bool(_BULLET_RE.match(paragraph))


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces, keep one blank line between paragraphs, re-join lines wrapped mid-sentence."""
    out: list[str] = []
    joinable = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = " ".join(raw.split())
        if not line:
            joinable = False
            continue
        if out and joinable and line[0].islower():
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
        joinable = not _TERMINAL_RE.search(out[-1]) and not out[-1].endswith((":", ";"))
    return "\n\n".join(out)


def paragraphs(text: str) -> list[str]:
    """The non-empty paragraphs of whitespace-normalised text."""
    return [p for p in text.split("\n\n") if p.strip()]


def _is_page_furniture(paragraph: str) -> bool:
    if _PAGE_NUMBER_RE.match(paragraph) or _NAV_RE.match(paragraph):
        return True
    if len(paragraph) <= 120 and _FORM_RE.search(paragraph):
        # Running header/footer such as "Apple Inc. | 2024 Form 10-K | 17".
        return "|" in paragraph or bool(re.search(r"\d{1,4}$", paragraph))
    return False


def strip_boilerplate(text: str) -> str:
    """Drop page numbers, running headers/footers, "Table of Contents" links and short lines repeated on every page."""
    paras = paragraphs(text)
    counts = Counter(p for p in paras if len(p) <= REPEATED_LINE_MAX_CHARS)
    repeated = {p for p, n in counts.items() if n >= REPEATED_LINE_MIN_COUNT and not _TERMINAL_RE.search(p)}
    kept: list[str] = []
    page_break = False
    for p in paras:
        if p in repeated or _is_page_furniture(p):
            page_break = True
            continue
        if page_break and kept and p[0].islower() and not _TERMINAL_RE.search(kept[-1]):
            kept[-1] = f"{kept[-1]} {p}"  # a sentence that ran over a page break
        else:
            kept.append(p)
        page_break = False
    return "\n\n".join(kept)


def clean_section(text: str | None) -> str:
    """Unicode, whitespace and boilerplate normalisation of a raw Risk Factors section."""
    if not text:
        return ""
    return strip_boilerplate(normalise_whitespace(normalise_unicode(text)))


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph, not breaking after common abbreviations such as "U.S." or "Inc."."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        end = match.start() + 1
        last_word = text[start:end].rsplit(None, 1)[-1].rstrip(".").lower()
        if text[match.start()] == "." and (last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())):
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _looks_like_heading(paragraph: str) -> bool:
    # Some filers leave the period off their headings; such a line still states a risk with a modal verb.
    ended = bool(_TERMINAL_RE.search(paragraph)) or (
        not paragraph.endswith((":", ";", ",")) and bool(_MODAL_RE.search(paragraph)))
    return (HEADING_MIN_CHARS <= len(paragraph) <= HEADING_MAX_CHARS and ended and not _is_bullet(paragraph) and paragraph[0].isupper() and len(split_sentences(paragraph)) <= 2
            and bool(_RISK_WORDS_RE.search(paragraph)) and not _BOILERPLATE_RE.search(paragraph)
            and not _CONTINUATION_RE.search(paragraph))


def _subsection_title(paragraph: str) -> str | None:
    """The title if the paragraph is a subsection heading (e.g. "Risks Related to Our Business"), else None."""
    if _SECTION_TITLE_RE.match(paragraph):
        return paragraph.rstrip(".:")
    lead = _ALLCAPS_LEAD_RE.match(paragraph)
    if lead and len(lead.group("label").split()) <= 8:
        return lead.group("label")
    if (len(paragraph) > SUBSECTION_MAX_CHARS or _is_bullet(paragraph) or not paragraph[0].isupper()
            or _TERMINAL_RE.search(paragraph) or paragraph.endswith((":", ";", ","))):
        return None
    words = paragraph.split()
    if len(words) > 15 or (len(words) > 6 and _MODAL_RE.search(paragraph)):
        return None
    return paragraph


def _inline_heading(paragraph: str) -> tuple[str, str] | None:
    """(headline, rest) for a run-in heading such as "Cybersecurity - Increased threats ... pose risk. Body"."""
    match = _INLINE_RE.match(paragraph)
    if not match or len(match.group("label").split()) > 6:
        return None
    sentences = split_sentences(match.group("rest"))
    headline = sentences[0]
    if not (HEADING_MIN_CHARS <= len(headline) <= HEADING_MAX_CHARS and _TERMINAL_RE.search(headline)):
        return None
    return headline, " ".join(sentences[1:])


def _classify(paras: Sequence[str]) -> list[tuple[str, str | None]]:
    """Kind of each paragraph: subsection, heading, inline (run-in heading) or body."""
    kinds: list[tuple[str, str | None]] = []
    for i, p in enumerate(paras):
        prev = kinds[-1][0] if kinds else None
        title = _subsection_title(p)
        if title is not None:
            kinds.append(("subsection", title))
        elif _inline_heading(p) is not None and prev != "heading":
            kinds.append(("inline", None))
        elif prev != "heading" and _looks_like_heading(p):
            nxt = paras[i + 1] if i + 1 < len(paras) else ""
            body_follows = bool(nxt) and (_is_bullet(nxt) or len(nxt) > len(p)) and _subsection_title(nxt) is None
            kinds.append(("heading" if body_follows else "body", None))
        else:
            kinds.append(("body", None))
    return kinds


def _by_headings(paras: Sequence[str], kinds: Sequence[tuple[str, str | None]]) -> list[RiskFactor]:
    factors: list[RiskFactor] = []
    section: str | None = None
    heading: str | None = None
    method = "heading"
    body: list[str] = []

    def close() -> None:
        text = "\n\n".join(body)
        if heading and len(text) >= MIN_BODY_CHARS:
            factors.append(RiskFactor(len(factors), heading, text, section, method))

    for p, (kind, title) in zip(paras, kinds):
        if kind == "subsection":
            close()
            heading, body, section = None, [], title
        elif kind == "heading":
            close()
            heading, body, method = p, [], "heading"
        elif kind == "inline":
            close()
            headline, rest = _inline_heading(p)  # type: ignore[misc]
            heading, body, method = headline, [rest] if rest else [], "inline"
        elif heading is not None:
            body.append(p)
    close()
    return factors


def _by_lead_sentences(paras: Sequence[str], kinds: Sequence[tuple[str, str | None]]) -> list[RiskFactor]:
    """Run-in layout: each paragraph whose first sentence reads as a risk headline starts a risk factor."""
    factors: list[RiskFactor] = []
    section: str | None = None
    current: list[str] | None = None

    def close() -> None:
        if current and len(body := "\n\n".join(current[1:])) >= MIN_BODY_CHARS:
            factors.append(RiskFactor(len(factors), current[0], body, section, "lead_sentence"))

    for p, (kind, title) in zip(paras, kinds):
        if kind == "subsection":
            close()
            current, section = None, title
            continue
        if _BOILERPLATE_RE.search(p) and current is None:
            continue
        sentences = split_sentences(p) if not _is_bullet(p) else []
        lead = sentences[0] if sentences else ""
        rest = " ".join(sentences[1:])
        if (HEADING_MIN_CHARS <= len(lead) <= HEADING_MAX_CHARS and _RISK_WORDS_RE.search(lead)
                and not _BOILERPLATE_RE.search(lead) and len(rest) >= MIN_BODY_CHARS // 2):
            close()
            current = [lead, rest]
        elif current is not None:
            current.append(p)
    close()
    return factors


def split_risk_factors(text: str) -> list[RiskFactor]:
    """Split a cleaned section into risk factors by their headings, else by run-in lead sentences; preamble is dropped."""
    paras = paragraphs(text)
    kinds = _classify(paras)
    if sum(kind in ("heading", "inline") for kind, _ in kinds) >= MIN_HEADINGS:
        factors = _by_headings(paras, kinds)
        if factors:
            return factors
    return _by_lead_sentences(paras, kinds)


def chunk_paragraphs(body: str, fits: Callable[[str], bool]) -> list[str] | None:
    """Greedy chunks of whole paragraphs (sentences of an oversized paragraph) that each fit; None if one cannot."""
    units: list[str] = []
    seps: list[str] = []
    for para in paragraphs(body):
        pieces = [para] if fits(para) else split_sentences(para)
        units.extend(pieces)
        seps.extend(" " if j else "\n\n" for j in range(len(pieces)))
    runs = _greedy_runs(len(units), lambda a, b: fits(_join_run(units, seps, a, b)), lambda i: fits(units[i]))
    return None if runs is None else [_join_run(units, seps, a, b) for a, b in runs]


def chunk_paragraphs_counted(body: str, count: Callable[[list[str]], list[int]],
                             token_ends: Callable[[str], Sequence[int]], max_tokens: int) -> list[str] | None:
    """chunk_paragraphs(body, fits) for fits(piece) = count([piece])[0] <= max_tokens, with the body tokenized once.

    count gives the exact counts of pieces; token_ends the end offsets of the bare body's tokens. The chunks are built
    from estimates (count("") plus the body's tokens that end within the candidate), then each chunk and each candidate
    that closed one is counted exactly; only if one of them disagrees are the chunks built again from exact counts.
    This is chunk_paragraphs' result provided a text never counts fewer tokens than a part of it: then a chunk that
    fits holds units and prefixes that fit, and a unit that does not fit fails every candidate holding it.
    """
    ends = token_ends(body)
    overhead = count([""])[0]

    def estimate(start: int, end: int) -> int:
        return overhead + bisect.bisect_right(ends, end) - bisect.bisect_right(ends, start)

    units: list[tuple[int, int]] = []  # (start, end) in body
    seps: list[str] = []
    split: list[tuple[int, int]] = []
    cursor = 0
    for para in paragraphs(body):
        start = body.index(para, cursor)
        cursor = start + len(para)
        if estimate(start, cursor) > max_tokens and count([para])[0] > max_tokens:
            pieces = _spans(body, split_sentences(para), start)
            split.extend(pieces)
        else:
            pieces = [(start, cursor)]
        units.extend(pieces)
        seps.extend(" " if j else "\n\n" for j in range(len(pieces)))
    if any(n > max_tokens for n in count([body[a:b] for a, b in split])):
        return None
    texts = [body[a:b] for a, b in units]
    closed: list[tuple[int, int]] = []

    def estimate_fits(a: int, b: int) -> bool:
        if estimate(units[a][0], units[b][1]) <= max_tokens:
            return True
        closed.append((a, b))
        return False

    runs = _greedy_runs(len(units), estimate_fits, lambda i: True) or []
    exact = count([_join_run(texts, seps, a, b) for a, b in runs + closed])
    if all(n <= max_tokens for n in exact[:len(runs)]) and all(n > max_tokens for n in exact[len(runs):]):
        return [_join_run(texts, seps, a, b) for a, b in runs]
    return chunk_paragraphs(body, lambda piece: count([piece])[0] <= max_tokens)


def _spans(text: str, pieces: Sequence[str], offset: int) -> list[tuple[int, int]]:
    """(start, end) of each piece in text, found in order from offset."""
    spans = []
    for piece in pieces:
        offset = text.index(piece, offset)
        spans.append((offset, offset + len(piece)))
        offset += len(piece)
    return spans


def _join_run(units: Sequence[str], seps: Sequence[str], a: int, b: int) -> str:
    return units[a] + "".join(seps[i] + units[i] for i in range(a + 1, b + 1))


def _greedy_runs(n: int, run_fits: Callable[[int, int], bool],
                 unit_fits: Callable[[int], bool]) -> list[tuple[int, int]] | None:
    """Greedy runs (first, last) of units 0..n-1: a unit extends the current run while the run fits, else starts the
    next one; None if a unit alone does not fit."""
    runs: list[tuple[int, int]] = []
    start = None
    for i in range(n):
        if start is not None and run_fits(start, i):
            continue
        if not unit_fits(i):
            return None
        if start is not None:
            runs.append((start, i - 1))
        start = i
    if start is not None:
        runs.append((start, n - 1))
    return runs


def exact_key(text: str) -> str:
    """Hash of the case-folded word sequence: equal for texts differing only in case, punctuation or spacing."""
    return hashlib.sha256(" ".join(_WORD_RE.findall(text.casefold())).encode()).hexdigest()


def _hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big") & _MASK_63


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> list[int]:
    """Sorted distinct 63-bit hashes of the case-folded word shingles of a text."""
    words = _WORD_RE.findall(text.casefold())
    if not words:
        return []
    grams = {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}
    return sorted(_hash64(g) for g in grams)


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[tuple[int, int], ...]:
    rng = random.Random(seed)
    return tuple((rng.randrange(1, _MERSENNE_61), rng.randrange(0, _MERSENNE_61)) for _ in range(num_perm))


@lru_cache(maxsize=8)
def _permutation_arrays(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The permutations' a split into 30 high and 31 low bits, and b, as columns."""
    pairs = np.array(_permutations(num_perm, seed), dtype=np.uint64)
    a = pairs[:, :1]
    return a >> np.uint64(31), a & np.uint64(_MASK_31), pairs[:, 1:]


def _mod_mersenne_61(values: np.ndarray) -> np.ndarray:
    """values mod 2^61-1 for uint64 values (two folds of the high bits, then one subtraction)."""
    p = np.uint64(_MERSENNE_61)
    values = (values & p) + (values >> np.uint64(61))
    values = (values & p) + (values >> np.uint64(61))
    return np.where(values >= p, values - p, values)


def minhash_signature(hashes: Iterable[int], num_perm: int = NUM_PERM, seed: int = 1) -> list[int]:
    """MinHash signature with universal hashing (a*x + b) mod 2^61-1; all-max for an empty set."""
    values = list(hashes)
    if not values:
        return [_MERSENNE_61] * num_perm
    # The 122-bit products in 64-bit pieces: with 2^61 = 1 (mod 2^61-1), a*x = a1*x1*2^62 + (a1*x0 + a0*x1)*2^31
    # + a0*x0 and 2^62 = 2, where a = a1*2^31 + a0 and x = x1*2^31 + x0 (x reduced first). Each term stays below
    # 2^63 and their sum with b below 2^64, so one reduction at the end gives the exact value.
    x = _mod_mersenne_61(np.array(values, dtype=np.uint64))[None, :]
    x1, x0 = x >> np.uint64(31), x & np.uint64(_MASK_31)
    a1, a0, b = _permutation_arrays(num_perm, seed)
    middle = a1 * x0 + a0 * x1
    total = (a1 * x1 << np.uint64(1)) + (middle >> np.uint64(30)) + ((middle & np.uint64(_MASK_30)) << np.uint64(31))
    total += a0 * x0
    total += b
    return _mod_mersenne_61(total).min(axis=1).tolist()


def lsh_band_keys(signature: Sequence[int], bands: int = LSH_BANDS) -> list[int]:
    """One 63-bit bucket key per band; texts sharing any key are near-duplicate candidates."""
    rows = len(signature) // bands
    if rows * bands != len(signature):
        raise ValueError(f"a signature of {len(signature)} values does not split into {bands} bands")
    return [_hash64(f"{b}:" + ",".join(map(str, signature[b * rows:(b + 1) * rows]))) for b in range(bands)]


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """Jaccard similarity of two sets of shingle hashes."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def build_messages(body: str, heading: str, entity_name: str | None, form_type: str | None,
                   part: int = 1, parts: int = 1) -> list[dict[str, str]]:
    """Headline writing: the filer's own heading is a grounded, concise summary of the body, so no labelling is needed."""
    source = f"{entity_name}'s Form {form_type}" if entity_name and form_type else "an SEC filing"
    excerpt = f" (part {part} of {parts} of the risk factor)" if parts > 1 else ""
    user = (f"Below is the body of a risk factor from {source}{excerpt}. "
            f"Write its headline. Answer with the headline only.\n\n{body}")
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
            {"role": "assistant", "content": heading}]


def record_id(accession_number: str, ordinal: int, part: int, parts: int, body: str) -> str:
    """Deterministic id of one training record."""
    digest = hashlib.sha256(f"{accession_number}|{ordinal}|{part}/{parts}|{exact_key(body)}".encode())
    return digest.hexdigest()[:32]


def split_for(cik: str | int, validation_fraction: float = 0.1, seed: int = 0) -> str:
    """"train" or "validation" from a hash of the company's CIK, so a company never spans both splits."""
    key = str(cik).strip().lstrip("0") or "0"
    bucket = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return "validation" if bucket < validation_fraction else "train"
