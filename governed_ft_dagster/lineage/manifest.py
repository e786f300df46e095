"""The training-data manifest of a model version: which filings, companies and records it was trained on (pure).

A manifest is computed by the training job from the records it read. It names the curated table and Delta version
read, the raw table and version that the curation read, every filing (accession number, CIK, split, the text hash
of its raw Risk Factors section, the filing it amends) and, per filing, each record's id with a short digest of
the record. Its fingerprint is one hash over the full hash of every record in a canonical order, so the same
records give the same fingerprint and any change to one record changes it; the per-record digests then say which.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

FORMAT = "governed-ft.training-data-manifest/1"
MANIFEST_FILE = "training_data_manifest.json"
SPLITS = ("train", "validation")
RECORD_FIELDS = ("record_id", "accession_number", "cik", "split", "messages")
DIGEST_CHARS = 16
FINGERPRINT_METHOD = ("sha256 over the sha256 of each record's canonical JSON (keys " + ", ".join(RECORD_FIELDS)
                      + "; sorted keys, no whitespace, UTF-8), records ordered by split, accession_number, record_id")


class ManifestError(ValueError):
    """A manifest cannot be built from these records, or a stored manifest cannot be read."""


def canonical_record(record: Mapping[str, Any]) -> bytes:
    """The bytes a record is hashed as: the fields training consumes and the record's identity, canonical JSON."""
    messages = record.get("messages")
    if isinstance(messages, str):
        messages = json.loads(messages)
    value = {
        "record_id": str(record.get("record_id") or ""),
        "accession_number": str(record.get("accession_number") or ""),
        "cik": str(record.get("cik") or ""),
        "split": str(record.get("split") or ""),
        "messages": [{"role": str(m["role"]), "content": str(m["content"])} for m in messages or []],
    }
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_record(record)).digest()


def _order_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(record.get("split") or ""), str(record.get("accession_number") or ""), str(record.get("record_id") or ""))


def fingerprint(records: Iterable[Mapping[str, Any]]) -> str:
    """`sha256:<hex>` over the records' hashes in canonical order; independent of the order they were read in."""
    ordered = sorted(((_order_key(r), record_hash(r)) for r in records), key=lambda item: (item[0], item[1]))
    digest = hashlib.sha256()
    for _, value in ordered:
        digest.update(value)
    return f"sha256:{digest.hexdigest()}"


RAW_FIELDS = ("accession_number", "cik", "status", "text_sha256", "superseded_by")


def raw_fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """`sha256:<hex>` of a raw table version as curation read it: each filing's identity, status, text hash and
    supersession, in accession-number order."""
    digest = hashlib.sha256()
    for row in sorted(({k: None if row.get(k) is None else str(row.get(k)) for k in RAW_FIELDS} for row in rows),
                      key=lambda r: (r["accession_number"] or "", json.dumps(r, sort_keys=True))):
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n")
    return f"sha256:{digest.hexdigest()}"


def _record_ids(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each record's id, with `#n` appended to a repeated id so that every entry stays addressable."""
    seen: Counter = Counter()
    ids = []
    for record in records:
        rid = str(record.get("record_id") or record_hash(record).hex()[:32])
        seen[rid] += 1
        ids.append(rid if seen[rid] == 1 else f"{rid}#{seen[rid]}")
    return ids


def _filings(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """split → accession → {cik, text_sha256, amends, records: {record_id: digest}}, in canonical order."""
    ordered = sorted(records, key=lambda r: (_order_key(r), record_hash(r)))
    splits: dict[str, dict[str, dict[str, Any]]] = {}
    for record, rid in zip(ordered, _record_ids(ordered)):
        split = str(record.get("split") or "")
        accession = str(record.get("accession_number") or "")
        if not accession:
            raise ManifestError(f"record {rid} has no accession_number: the manifest names every record's filing")
        entry = splits.setdefault(split, {}).setdefault(accession, {"cik": str(record.get("cik") or ""),
                                                                    "records": {}})
        for key, column in (("text_sha256", "text_sha256"), ("amends", "amends_accession")):
            if record.get(column) and key not in entry:
                entry[key] = str(record[column])[:DIGEST_CHARS] if key == "text_sha256" else str(record[column])
        entry["records"][rid] = record_hash(record).hex()[:DIGEST_CHARS]
    return splits


def build_manifest(records_train: Sequence[Mapping[str, Any]], records_validation: Sequence[Mapping[str, Any]], *,
                   table: str | None, delta_version: int, location: str | None = None,
                   source_table: str | None = None, source_version: int | None = None,
                   source_fingerprint: str | None = None) -> dict[str, Any]:
    """The manifest of exactly these training and validation records, read from table at delta_version."""
    records = [*records_train, *records_validation]
    splits = _filings(records)
    companies = {entry["cik"] for filings in splits.values() for entry in filings.values()}
    counts = {"records": len(records), "train": len(records_train), "validation": len(records_validation),
              "filings": sum(len(filings) for filings in splits.values()), "companies": len(companies)}
    return {
        "format": FORMAT,
        "fingerprint": fingerprint(records),
        "fingerprint_method": FINGERPRINT_METHOD,
        "table": {"name": table, "delta_version": delta_version, "location": location},
        "source": {"name": source_table, "delta_version": source_version, "fingerprint": source_fingerprint},
        "counts": counts,
        "splits": {split: splits[split] for split in sorted(splits, key=_split_order)},
    }


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split), split) if split in SPLITS else (len(SPLITS), split)


def dumps(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as stored: compact JSON, sorted keys, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes | str, where: str = "the manifest") -> dict[str, Any]:
    """A stored manifest, checked for its format."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"{where} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"{where} is not a training-data manifest of format {FORMAT} (found {found!r})")
    return manifest


def summary(manifest: Mapping[str, Any], stored: bytes | None = None) -> dict[str, Any]:
    """Fingerprint, counts, versions read and the stored file's size and hash: what travels as metadata and tags."""
    data = dumps(manifest) if stored is None else stored
    return {"fingerprint": manifest["fingerprint"], "counts": dict(manifest["counts"]),
            "table": dict(manifest["table"]), "source": dict(manifest["source"]), "file": MANIFEST_FILE,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def filings_by_company(manifest: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """split → CIK → accession numbers: the compact filing list a materialization carries."""
    out: dict[str, dict[str, list[str]]] = {}
    for split, filings in manifest["splits"].items():
        for accession, entry in filings.items():
            out.setdefault(split, {}).setdefault(entry["cik"], []).append(accession)
    return {split: {cik: sorted(accessions) for cik, accessions in sorted(companies.items())}
            for split, companies in out.items()}


# ---- impact: which model versions were trained on a filing or a company ---------------------------------------


@dataclass(frozen=True)
class Use:
    """One model version's use of one filing."""

    model: str
    version: str
    accession_number: str
    cik: str
    split: str
    records: int
    amends: str | None = None
    superseded_by: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "accession_number": self.accession_number,
                "cik": self.cik, "split": self.split, "records": self.records, "amends": self.amends,
                "superseded_by": list(self.superseded_by), "trained_on_superseded_text": bool(self.superseded_by)}


@dataclass
class Impact:
    """The model versions that trained on the filings asked about, with what the manifests know of amendments."""

    query: dict[str, str]
    uses: list[Use] = field(default_factory=list)
    amended_by: dict[str, list[str]] = field(default_factory=dict)
    manifests_read: int = 0

    def as_dict(self) -> dict[str, Any]:
        versions = sorted({(u.model, u.version) for u in self.uses}, key=lambda mv: (mv[0], _version_key(mv[1])))
        used = {u.accession_number for u in self.uses}
        return {"query": self.query, "manifests_read": self.manifests_read,
                "model_versions": [{"model": m, "version": v} for m, v in versions],
                "uses": [u.as_dict() for u in self.uses],
                "superseded": {a: b for a, b in sorted(self.amended_by.items())
                               if a in used or a in self.query.values() or used & set(b)}}


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if str(version).isdigit() else (1 << 62, str(version))


def supersessions(manifests: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Filing → the amendments of it that the manifests hold: text a model trained on from one of those
    amendments replaced the amended filing's Risk Factors in the raw table."""
    amended: dict[str, set[str]] = {}
    for manifest in manifests:
        for filings in manifest["splits"].values():
            for accession, entry in filings.items():
                if entry.get("amends"):
                    amended.setdefault(entry["amends"], set()).add(accession)
    return {original: sorted(amendments) for original, amendments in sorted(amended.items())}


def impact(manifests: Sequence[tuple[str, str, Mapping[str, Any]]], *, accession: str | None = None,
           cik: str | None = None) -> Impact:
    """Every (model, version) whose manifest holds the filing (or, with cik, any filing of the company), with the
    split it was in; a filing that an amendment superseded is marked with the amending accession. Asking for a
    filing also lists the versions that trained on its amendments, and asking for an amendment those that trained
    on the filing it amends."""
    if bool(accession) == bool(cik):
        raise ManifestError("ask for one filing (accession number) or one company (CIK)")
    wanted_cik = _normal_cik(cik) if cik else None
    amended_by = supersessions(m for _, _, m in manifests)
    wanted = {accession} if accession else set()
    if accession:
        wanted |= {original for original, amendments in amended_by.items() if accession in amendments}
        wanted |= set(amended_by.get(accession, ()))
    uses = []
    for model, version, manifest in manifests:
        for split, filings in manifest["splits"].items():
            for number, entry in filings.items():
                if (number in wanted) if accession else (_normal_cik(entry["cik"]) == wanted_cik):
                    uses.append(Use(model, str(version), number, entry["cik"], split, len(entry["records"]),
                                    entry.get("amends"), tuple(amended_by.get(number, ()))))
    uses.sort(key=lambda u: (u.model, _version_key(u.version), u.accession_number))
    query = {"accession_number": accession} if accession else {"cik": wanted_cik or ""}
    return Impact(query, uses, amended_by, len(manifests))


def _normal_cik(cik: str) -> str:
    digits = str(cik).strip().upper().removeprefix("CIK")
    if not digits.isdigit():
        raise ManifestError(f"not a CIK: {cik!r}")
    return digits.zfill(10)


# ---- verification: the records a table version holds now against the manifest --------------------------------


@dataclass
class Difference:
    """What differs between a manifest and the records read again, by accession number and record id."""

    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    fingerprint_expected: str = ""
    fingerprint_found: str = ""

    @property
    def match(self) -> bool:
        return not (self.added or self.removed or self.changed) and self.fingerprint_expected == self.fingerprint_found

    def as_dict(self) -> dict[str, Any]:
        return {"match": self.match, "fingerprint_expected": self.fingerprint_expected,
                "fingerprint_found": self.fingerprint_found,
                "records_added": self.added, "records_removed": self.removed, "records_changed": self.changed}

    def lines(self) -> list[str]:
        """One line per filing that differs, naming its records."""
        out = []
        for label, by_filing in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            for accession, ids in sorted(by_filing.items()):
                out.append(f"{accession}: {len(ids)} record{'s' if len(ids) != 1 else ''} {label}: {', '.join(ids)}")
        if not out and not self.match:
            out.append(f"fingerprint {self.fingerprint_found} differs from {self.fingerprint_expected} although "
                       "every record digest matches")
        return out


def compare(manifest: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Difference:
    """Records of the manifest's splits read again, against the manifest: added, removed, changed by filing."""
    splits = [s for s in manifest["splits"]] or list(SPLITS)
    kept = [r for r in records if str(r.get("split") or "") in splits]
    found = _filings(kept)
    difference = Difference(fingerprint_expected=manifest["fingerprint"], fingerprint_found=fingerprint(kept))
    for split in sorted(set(manifest["splits"]) | set(found), key=_split_order):
        before, after = manifest["splits"].get(split, {}), found.get(split, {})
        for accession in sorted(set(before) | set(after)):
            old = before.get(accession, {}).get("records", {})
            new = after.get(accession, {}).get("records", {})
            for target, ids in ((difference.added, sorted(set(new) - set(old))),
                                (difference.removed, sorted(set(old) - set(new))),
                                (difference.changed, sorted(k for k in set(old) & set(new) if old[k] != new[k]))):
                if ids:
                    target.setdefault(accession, []).extend(ids)
    return difference


__all__ = ["Difference", "FINGERPRINT_METHOD", "FORMAT", "Impact", "MANIFEST_FILE", "ManifestError", "Use",
           "RAW_FIELDS", "build_manifest", "canonical_record", "compare", "dumps", "filings_by_company", "fingerprint",
           "impact", "loads", "raw_fingerprint", "record_hash", "summary", "supersessions"]
