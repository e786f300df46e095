"""Data contracts of the raw and curated tables and of the trained adapter (no Dagster imports)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

CURATED_COLUMNS = ("record_id", "cik", "ticker", "accession_number", "form_type", "fiscal_year",
                   "risk_factor_heading", "messages", "n_tokens", "split", "source_table", "source_version", "run_id")


@dataclass(frozen=True)
class Verdict:
    """Whether a contract holds, and the figures that show it."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def unique_accessions(rows: Sequence[Mapping[str, Any]]) -> Verdict:
    counts = Counter(r["accession_number"] for r in rows)
    duplicated = sorted(a for a, n in counts.items() if n > 1)
    return Verdict(not duplicated, f"{len(duplicated)} accession numbers appear more than once",
                   {"rows": len(rows), "duplicated": duplicated[:20]})


def rows_cover_listing(rows: Sequence[Mapping[str, Any]], listed: Sequence[str]) -> Verdict:
    """Every filing the partition's run listed has a row (a fetch failure is a row with its status)."""
    present = {r["accession_number"] for r in rows}
    missing = sorted(set(listed) - present)
    return Verdict(not missing, f"{len(missing)} of {len(listed)} listed filings have no row"
                   + (f": {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "") if missing else ""),
                   {"listed": len(listed), "rows": len(rows), "missing": missing[:20]})


LOCATED_STATUSES = ("extracted", "no_material_changes", "incorporated_by_reference")


def located_share(rows: Sequence[Mapping[str, Any]], minimum: float) -> Verdict:
    """A quarterly report may rightly say "no material changes": only not_found and error count against it."""
    statuses = Counter(r["status"] for r in rows)
    located = sum(statuses.get(s, 0) for s in LOCATED_STATUSES)
    share = located / len(rows) if rows else 0.0
    return Verdict(bool(rows) and share >= minimum,
                   f"{share:.0%} of {len(rows)} filings have their Risk Factors section located (minimum {minimum:.0%})",
                   {"share_located": round(share, 4), "share_extracted": round(statuses.get("extracted", 0) / len(rows), 4)
                    if rows else 0.0, "by_status": dict(sorted(statuses.items()))})


def text_lengths_in_range(rows: Sequence[Mapping[str, Any]], low: int, high: int) -> Verdict:
    lengths = [(r["accession_number"], len(r.get("risk_factors_text") or "")) for r in rows if r["status"] == "extracted"]
    outside = [(a, n) for a, n in lengths if not low <= n <= high]
    return Verdict(not outside, f"{len(outside)} extracted sections outside {low:,}-{high:,} characters",
                   {"checked": len(lengths), "outside": [f"{a}: {n}" for a, n in outside[:20]],
                    "min_chars": min((n for _, n in lengths), default=0), "max_chars": max((n for _, n in lengths), default=0)})


def curated_schema(columns: Iterable[str]) -> Verdict:
    missing = sorted(set(CURATED_COLUMNS) - set(columns))
    return Verdict(not missing, f"missing columns: {', '.join(missing) or 'none'}", {"missing": missing})


def no_empty_messages(rows: Sequence[Mapping[str, Any]]) -> Verdict:
    roles = ("system", "user", "assistant")
    bad = []
    for row in rows:
        messages = row.get("messages") or []
        present = [m.get("role") for m in messages]
        if present != list(roles) or any(not (m.get("content") or "").strip() for m in messages):
            bad.append(row.get("record_id"))
    return Verdict(not bad, f"{len(bad)} records without a system, user and assistant message with content",
                   {"checked": len(rows), "bad_records": bad[:20]})


def within_token_budget(rows: Sequence[Mapping[str, Any]], budget: int) -> Verdict:
    over = [(r.get("record_id"), r["n_tokens"]) for r in rows if r["n_tokens"] is None or r["n_tokens"] > budget]
    longest = max((r["n_tokens"] or 0 for r in rows), default=0)
    return Verdict(not over, f"{len(over)} records over {budget} tokens (longest {longest})",
                   {"checked": len(rows), "longest": longest, "over": [f"{r}: {n}" for r, n in over[:20]]})


def companies_in_one_split(rows: Sequence[Mapping[str, Any]]) -> Verdict:
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["cik"], set()).add(row["split"])
    both = sorted(cik for cik, s in splits.items() if len(s) > 1)
    return Verdict(not both, f"{len(both)} companies in more than one split",
                   {"companies": len(splits), "in_both": both[:20]})


def curated_count_against_raw(curated_rows: int, raw_extracted: int, max_per_filing: int = 400) -> Verdict:
    ok = (curated_rows > 0) == (raw_extracted > 0) and curated_rows <= raw_extracted * max_per_filing
    return Verdict(ok, f"{curated_rows} curated records from {raw_extracted} extracted filings",
                   {"curated_rows": curated_rows, "raw_extracted": raw_extracted,
                    "records_per_filing": round(curated_rows / raw_extracted, 2) if raw_extracted else 0.0})


DEFAULT_MIN_RELATIVE_IMPROVEMENT = 0.01


def adapter_beats_base(eval_loss: float | None, base_eval_loss: float | None,
                       min_relative_improvement: float = DEFAULT_MIN_RELATIVE_IMPROVEMENT) -> Verdict:
    """The adapter lowers the base model's validation loss on the same validation set by at least the minimum share."""
    threshold = {"min_relative_improvement": min_relative_improvement}
    if eval_loss is None or base_eval_loss is None:
        return Verdict(False, "the training run reported no validation loss for the adapter or the base model",
                       threshold)
    if base_eval_loss <= 0:
        return Verdict(False, f"the base model's validation loss {base_eval_loss:.4f} leaves nothing to improve on",
                       {"eval_loss": eval_loss, "base_eval_loss": base_eval_loss, **threshold})
    relative = (base_eval_loss - eval_loss) / base_eval_loss
    return Verdict(relative >= min_relative_improvement,
                   f"validation loss {eval_loss:.4f} with the adapter against {base_eval_loss:.4f} for the base model: "
                   f"{relative:+.2%} improvement (minimum {min_relative_improvement:.2%})",
                   {"eval_loss": eval_loss, "base_eval_loss": base_eval_loss,
                    "improvement": round(base_eval_loss - eval_loss, 6), "relative_improvement": round(relative, 6),
                    **threshold})
