"""Probes of the storage's enforcement: who tries what on which securable with which credentials, expected and got."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

REFUSALS = frozenset({"AccessDenied", "AccessDeniedException", "ExpiredToken", "ExpiredTokenException",
                      "InvalidToken", "SignatureDoesNotMatch", "XAmzContentSHA256Mismatch", "BadDigest", "403"})


@dataclass(frozen=True)
class Probe:
    """One attempt: a principal, a securable, an operation, where its credentials came from, and what must happen."""

    principal: str
    securable: str
    operation: str
    source: str  # "own role" or "vended <operation>"
    expect_allowed: bool
    attempt: Callable[[], object]


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    actual: str  # "allowed", "refused" or "error: ..."
    detail: str = ""

    @property
    def expected(self) -> str:
        return "allowed" if self.probe.expect_allowed else "refused"

    @property
    def unexpected(self) -> bool:
        return self.actual != self.expected


def refusal_code(exc: BaseException) -> str | None:
    """The AWS error code when exc is a refusal by the storage or by IAM, else None."""
    response = getattr(exc, "response", None)
    code = str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code if code in REFUSALS else None


def run(probes: Iterable[Probe]) -> list[Outcome]:
    """Try every probe once and record what happened."""
    outcomes = []
    for probe in probes:
        try:
            probe.attempt()
            outcomes.append(Outcome(probe, "allowed"))
        except Exception as exc:  # noqa: BLE001 - anything but a refusal is reported as an error outcome
            code = refusal_code(exc)
            if code:
                outcomes.append(Outcome(probe, "refused", code))
            else:
                outcomes.append(Outcome(probe, f"error: {type(exc).__name__}", str(exc)[:200]))
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    refused = sum(1 for o in outcomes if o.actual == o.expected == "refused")
    allowed = sum(1 for o in outcomes if o.actual == o.expected == "allowed")
    unexpected = sum(1 for o in outcomes if o.unexpected)
    return (f"probes: {len(outcomes)}; refused as expected: {refused}; allowed as expected: {allowed}; "
            f"unexpected: {unexpected}")


def table(outcomes: list[Outcome]) -> str:
    """principal × securable × operation × credential source, expected and actual, then the summary line."""
    header = ("principal", "securable", "operation", "credentials", "expected", "actual")
    rows = [header] + [(o.probe.principal, o.probe.securable, o.probe.operation, o.probe.source, o.expected,
                        o.actual + (f" ({o.detail})" if o.detail and o.actual == "refused" else "")
                        + ("  <-- UNEXPECTED" if o.unexpected else "")) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join([*lines, summary(outcomes)])


__all__ = ["Outcome", "Probe", "refusal_code", "run", "summary", "table"]
