"""The EDGAR resource: the live SEC site, or a local EDGAR-shaped folder with the same interface."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from governed_ft_dagster.edgar.client import SUBMISSIONS_MAX_AGE_S, EdgarClient, FilingSource, LocalEdgarSource

# The Dagster concurrency pool of every step that calls EDGAR (its limit: Settings.prepare_dagster_home).
EDGAR_POOL = "edgar"


class EdgarResource(dg.ConfigurableResource):
    """Hands out the filing source for ingestion."""

    source: str = Field(default="sample", description="'live' for sec.gov, 'sample' for the generated local corpus, 'folder' for local_root.")
    user_agent: str | None = Field(default=None, description="Declared User-Agent with a contact address (live only).")
    cache_dir: str = Field(description="EDGAR cache in the state folder, shared by every run: documents (kept), "
                                       "submissions pages (reused while fresh) and the fair-access state (one "
                                       "request schedule and cool-down for all processes).")
    local_root: str = Field(description="Local EDGAR-shaped folder (generated on first use for 'sample').")
    base_url: str = "https://www.sec.gov"
    data_url: str = "https://data.sec.gov"
    max_rps: float = Field(default=10.0, description="SEC's limit: requests per second of all processes together.")
    submissions_max_age_s: float = Field(default=SUBMISSIONS_MAX_AGE_S,
                                         description="Seconds a cached submissions page is reused by every run "
                                                     "before it is fetched again (live only).")
    sample_companies: int = 12
    sample_fiscal_years: list[int] = Field(default=[2023, 2024],
                                           description="Fiscal years the generated corpus covers ('sample' only).")
    list_missing_documents: bool = Field(default=False, description="List filings whose document is absent from a local folder (they become fetch_failed rows).")
    sensor_batch_size: int = Field(default=50, description="Companies the new-filings sensor reads per tick (10 requests/s).")

    def filing_source(self) -> FilingSource:
        if self.source == "live":
            return EdgarClient(self.user_agent or "", base_url=self.base_url, data_url=self.data_url,
                               cache_dir=Path(self.cache_dir), max_rps=self.max_rps,
                               submissions_max_age=self.submissions_max_age_s)
        root = Path(self.local_root)
        if self.source == "sample":
            self._ensure_sample_corpus(root)
        return LocalEdgarSource(root, only_available=not self.list_missing_documents)

    def origin(self) -> dict:
        """Where filings come from, for lineage: the system's name, kind and address (never the User-Agent)."""
        if self.source == "live":
            return {"name": "sec_edgar", "entity_type": "FilingArchive",
                    "properties": {"url": self.base_url, "api": self.data_url, "edgar_source": "live"}}
        return {"name": "sec_edgar_sample" if self.source == "sample" else "sec_edgar_folder",
                "entity_type": "FilingArchive",
                "properties": {"url": Path(self.local_root).resolve().as_uri(), "edgar_source": self.source,
                               "shape": "EDGAR submissions JSON and Archives/edgar/data documents"}}

    def _ensure_sample_corpus(self, root: Path) -> None:
        """Generate the sample corpus, anew when the configured fiscal years or company count changed."""
        from governed_ft_dagster.edgar.sample_corpus import CORPUS_VERSION, MANIFEST_NAME, build_sample_corpus

        wanted = {"fiscal_years": sorted(set(self.sample_fiscal_years)), "companies": self.sample_companies,
                  "version": CORPUS_VERSION}
        try:
            built = json.loads((root / MANIFEST_NAME).read_text())
            current = {"fiscal_years": sorted(built["fiscal_years"]), "companies": len(built["companies"]),
                       "version": built.get("corpus_version", 1)}
        except (OSError, ValueError, KeyError, TypeError):
            current = None
        if current == wanted and (root / "files" / "company_tickers.json").exists():
            return
        if root.exists():
            shutil.rmtree(root)
        build_sample_corpus(root, companies=self.sample_companies, fiscal_years=self.sample_fiscal_years)

    def default_universe(self) -> list[str]:
        """S&P 500 live; every company with submissions in the local folder otherwise."""
        from governed_ft_dagster.edgar.client import submissions_name
        from governed_ft_dagster.edgar.universe import load_universe

        if self.source == "live":
            return load_universe(None)
        source = self.filing_source()
        submissions = Path(self.local_root) / "submissions"
        return sorted(t for t, cik in source.ticker_to_cik().items() if (submissions / submissions_name(cik)).exists())
