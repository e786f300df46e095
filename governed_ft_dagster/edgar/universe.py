"""The company universe: which tickers to fetch filings for."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from governed_ft_dagster.edgar.client import normalize_ticker

SP500 = "sp500"


def _parse_lines(lines: Iterable[str]) -> list[str]:
    return [t for line in lines if (t := line.split("#", 1)[0].strip())]


def sp500_tickers() -> list[str]:
    """The packaged S&P 500 list (EDGAR spelling)."""
    text = resources.files("governed_ft_dagster.edgar").joinpath("sp500.txt").read_text(encoding="utf-8")
    return _normalize(_parse_lines(text.splitlines()))


def _normalize(tickers: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for raw in tickers:
        if ticker := normalize_ticker(raw):
            seen.setdefault(ticker, None)
    return list(seen)


def load_universe(spec: str | Path | Iterable[str] | None = None) -> list[str]:
    """Tickers from None/'sp500' (packaged list), a file (one per line, # comments), 'A,B,C' or a list."""
    if spec is None:
        return sp500_tickers()
    if isinstance(spec, Path):
        return _normalize(_parse_lines(spec.read_text(encoding="utf-8").splitlines()))
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == SP500:
            return sp500_tickers()
        path = Path(text).expanduser()
        if "," not in text and (path.is_file() or path.suffix in {".txt", ".csv", ".lst"}):
            if not path.is_file():
                raise FileNotFoundError(f"universe file not found: {path}")
            return _normalize(_parse_lines(path.read_text(encoding="utf-8").splitlines()))
        return _normalize(t for t in text.replace("\n", ",").split(","))
    return _normalize(spec)
