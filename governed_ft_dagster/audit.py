"""Audit of what trained a model version: the manifests attached to its versions, impact queries over them, and
verification that the recorded table versions still read the same through the catalog (no Dagster here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol

from governed_ft_dagster.catalog.base import CatalogClient, Principal
from governed_ft_dagster.lineage import manifest as m
from governed_ft_dagster.registry import ATTACHMENT_TAG_PREFIX
from governed_ft_dagster.storage import S3Endpoint, TableVersionGone, read_version, storage_options

MANIFEST_TAG = f"{ATTACHMENT_TAG_PREFIX}training_data_manifest"
CURATED_READER, RAW_READER = Principal.TRAIN, Principal.PREPROCESS  # the principals the design grants SELECT
CURATED_COLUMNS = ("record_id", "accession_number", "cik", "split", "messages")
RAW_COLUMNS = (*m.RAW_FIELDS, "amends_accession")


class AuditError(ValueError):
    """The audit cannot be answered: no manifest, no such version."""


class Registry(Protocol):
    def version_facts(self, model_full_name: str, version: str | None = None) -> dict[str, dict[str, str]]: ...

    def read_attachment(self, model_full_name: str, version: str, path: str) -> bytes: ...


class Catalog(Protocol):
    def client(self, principal: Principal) -> CatalogClient: ...

    def endpoint(self) -> S3Endpoint: ...


@dataclass(frozen=True)
class StoredManifest:
    """A model version's manifest and where it is kept."""

    model: str
    version: str
    manifest: Mapping[str, Any]
    where: str
    size: int


def stored_manifests(registry: Registry, models: Iterable[str], version: str | None = None,
                     ) -> tuple[list[StoredManifest], list[str]]:
    """The manifests of the models' versions (or of one version), and the versions registered without one."""
    found, without = [], []
    for model in models:
        for number, tags in registry.version_facts(model, version).items():
            path = tags.get(MANIFEST_TAG)
            if not path:
                without.append(f"{model} v{number}")
                continue
            where = f"models:/{model}/{number}/{path}"
            data = registry.read_attachment(model, number, path)
            found.append(StoredManifest(model, number, m.loads(data, where), where, len(data)))
    return found, without


def impact(registry: Registry, models: Iterable[str], *, accession: str | None = None,
           cik: str | None = None) -> dict[str, Any]:
    """Every model version trained on the filing or company, with split and records, answered from the manifests."""
    started = time.perf_counter()
    stored, without = stored_manifests(registry, models)
    answer = m.impact([(s.model, s.version, s.manifest) for s in stored], accession=accession, cik=cik).as_dict()
    answer["versions_without_manifest"] = without
    answer["seconds"] = round(time.perf_counter() - started, 3)
    return answer


def impact_lines(answer: Mapping[str, Any]) -> list[str]:
    """The impact answer as a person reads it."""
    (kind, value), = answer["query"].items()
    versions, read = answer["model_versions"], answer["manifests_read"]
    what = "its filings" if kind == "cik" else "it or a filing amending it or amended by it"
    lines = [f"{'CIK' if kind == 'cik' else 'filing'} {value}: {len(versions)} model version"
             f"{'s' if len(versions) != 1 else ''} trained on {what} ({read} manifest{'s' if read != 1 else ''} read)"]
    for use in answer["uses"]:
        note = ""
        if use["superseded_by"]:
            note = f"; superseded by {', '.join(use['superseded_by'])}: trained on superseded text"
        elif use["amends"]:
            note = f"; amends {use['amends']}"
        lines.append(f"  {use['model']} v{use['version']}: {use['accession_number']} (CIK {use['cik']}, "
                     f"{use['split']}, {use['records']} records{note})")
    for original, amendments in answer.get("superseded", {}).items():
        if not any(u["accession_number"] == original for u in answer["uses"]):
            lines.append(f"  {original} is superseded by {', '.join(amendments)}; no model version trained on its "
                         "own text")
    if answer.get("versions_without_manifest"):
        lines.append(f"  registered without a manifest (not searched): {', '.join(answer['versions_without_manifest'])}")
    return lines


@dataclass
class TableCheck:
    """One table version read again through the catalog."""

    table: str
    version: int | None
    principal: str
    status: str = "match"  # match | differs | gone | not_recorded
    detail: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "delta_version": self.version, "read_as": self.principal,
                "status": self.status, "detail": self.detail, **self.facts}


def verify(catalog: Catalog, stored: StoredManifest) -> dict[str, Any]:
    """Read the curated table at the manifest's version (as train) and the raw table at the version curation read
    (as preprocess), with credentials the catalog vends, and compare both with the manifest."""
    started = time.perf_counter()
    manifest = stored.manifest
    curated = _verify_curated(catalog, stored)
    raw = _verify_raw(catalog, manifest)
    return {"model": stored.model, "version": stored.version, "manifest": stored.where,
            "fingerprint": manifest["fingerprint"], "counts": manifest["counts"],
            "match": curated.status == "match" and raw.status in ("match", "not_recorded"),
            "curated": curated.as_dict(), "raw": raw.as_dict(), "seconds": round(time.perf_counter() - started, 3)}


def _read(catalog: Catalog, principal: Principal, table: str, version: int, columns: Iterable[str]) -> list[dict]:
    creds = catalog.client(principal).temporary_table_credentials(table, "READ")
    return read_version(creds.location, storage_options(creds, catalog.endpoint()), version, list(columns)).to_pylist()


def _verify_curated(catalog: Catalog, stored: StoredManifest) -> TableCheck:
    table, version = stored.manifest["table"]["name"], stored.manifest["table"]["delta_version"]
    check = TableCheck(table, version, CURATED_READER.value)
    try:
        records = _read(catalog, CURATED_READER, table, int(version), CURATED_COLUMNS)
    except TableVersionGone as exc:
        counts = stored.manifest["counts"]
        check.status = "gone"
        check.detail = [f"{table} version {version} is gone: {exc.why}; the filing list it held is kept in the "
                        f"manifest {stored.where} ({counts['filings']} filings, {counts['records']} records)"]
        return check
    difference = m.compare(stored.manifest, records)
    check.facts = difference.as_dict()
    if not difference.match:
        check.status = "differs"
        check.detail = [f"{table} version {version}: {line}" for line in difference.lines()]
    return check


def _verify_raw(catalog: Catalog, manifest: Mapping[str, Any]) -> TableCheck:
    source = manifest.get("source") or {}
    table, version = source.get("name"), source.get("delta_version")
    check = TableCheck(str(table), version, RAW_READER.value)
    if not table or version is None:
        check.status, check.detail = "not_recorded", ["the manifest names no raw table version"]
        return check
    try:
        rows = _read(catalog, RAW_READER, table, int(version), RAW_COLUMNS)
    except TableVersionGone as exc:
        check.status = "gone"
        check.detail = [f"{table} version {version} is gone: {exc.why}; the manifest still names every filing "
                        "trained on, with its text hash"]
        return check
    by_accession = {row["accession_number"]: row for row in rows}
    problems: dict[str, str] = {}
    for filings in manifest["splits"].values():
        for accession, entry in filings.items():
            row = by_accession.get(accession)
            if row is None:
                problems[accession] = "missing"
            elif entry.get("text_sha256") and not str(row.get("text_sha256") or "").startswith(entry["text_sha256"]):
                problems[accession] = "Risk Factors text changed"
            elif row.get("superseded_by"):
                problems[accession] = f"superseded by {row['superseded_by']}"
    found = m.raw_fingerprint(rows)
    expected = source.get("fingerprint")
    check.facts = {"fingerprint_expected": expected, "fingerprint_found": found, "filings_differing": problems}
    if problems or (expected and expected != found):
        check.status = "differs"
        check.detail = [f"{table} version {version}: filing {a}: {p}" for a, p in sorted(problems.items())]
        if expected and expected != found and not problems:
            check.detail.append(f"{table} version {version} hashes to {found}, not to the {expected} curation "
                                "read; the filings trained on are unchanged, other rows differ")
    return check


def verify_lines(report: Mapping[str, Any]) -> list[str]:
    """`match`, or one line per difference."""
    if report["match"]:
        return ["match"]
    lines = [f"{report['model']} v{report['version']}: training data does not match its manifest {report['manifest']}"]
    for part in ("curated", "raw"):
        if report[part]["status"] not in ("match", "not_recorded"):
            lines += [f"  {line}" for line in report[part]["detail"]]
    return lines


__all__ = ["AuditError", "MANIFEST_TAG", "StoredManifest", "TableCheck", "impact", "impact_lines", "stored_manifests",
           "verify", "verify_lines"]
