"""Dagster's recorded data provenance, walked back from one materialization to the ones that produced its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import dagster as dg

from governed_ft_dagster.lineage.facts import CATALOG_TABLE, JOB_RUN_ID, PARTITION, catalog_object, inputs_read

# Tag Dagster writes on every asset materialization; 1.13 exports no constant for it.
DATA_VERSION_TAG = "dagster/data_version"
_PAGE = 100


class ProvenanceError(ValueError):
    """The recorded provenance does not lead back to the materializations that produced an input."""


@dataclass(frozen=True)
class Link:
    """One materialization of the chain: where it is in the event log, its data version and its metadata."""

    key: str
    storage_id: int
    run_id: str
    data_version: str | None
    facts: Mapping[str, Any] = field(hash=False)
    recorded_input_versions: Mapping[str, str] = field(default_factory=dict, hash=False)
    partition: str | None = None

    def describe(self) -> str:
        version = f", data version {self.data_version}" if self.data_version else ""
        partition = f" of partition {self.partition}" if self.partition else ""
        return f"{self.key} materialization {self.storage_id}{partition} (run {self.run_id}{version})"

    def as_metadata(self) -> dict[str, Any]:
        return {"storage_id": self.storage_id, "run_id": self.run_id, "data_version": self.data_version}


def data_version(record: dg.EventLogRecord) -> str | None:
    """The data version the materialization recorded."""
    return (record.asset_materialization.tags or {}).get(DATA_VERSION_TAG)


def plain_metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    """The materialization's metadata as plain values."""
    return {name: value.value if isinstance(value, dg.MetadataValue) else value
            for name, value in record.asset_materialization.metadata.items()}


def link(key: str, record: dg.EventLogRecord) -> Link:
    provenance = dg.DataProvenance.from_tags(record.asset_materialization.tags or {})
    recorded = {k.to_user_string(): v.value for k, v in provenance.input_data_versions.items()} if provenance else {}
    facts = plain_metadata(record)
    if record.partition_key:
        facts[PARTITION] = record.partition_key
    return Link(key, record.storage_id, record.run_id, data_version(record), facts, recorded, record.partition_key)


def latest_materialization(instance: dg.DagsterInstance, key: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetKey.from_user_string(key), limit=1).records
    return records[0] if records else None


def materialization(instance: dg.DagsterInstance, key: str, storage_id: int) -> dg.EventLogRecord | None:
    """The materialization of key stored under storage_id."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(key), storage_ids=[storage_id]), limit=1).records
    return records[0] if records else None


def _materializations_back_from(instance: dg.DagsterInstance, key: str,
                                storage_id: int) -> Iterator[dg.EventLogRecord]:
    """Materializations of key at or before storage_id, newest first."""
    cursor = None
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(key), before_storage_id=storage_id + 1)
    while True:
        result = instance.fetch_materializations(records_filter, limit=_PAGE, cursor=cursor)
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor


def producing_materialization(instance: dg.DagsterInstance, key: str, version: str,
                              at_or_before: int) -> dg.EventLogRecord | None:
    """The newest materialization of key, at or before a storage id, whose data version is version."""
    return next((r for r in _materializations_back_from(instance, key, at_or_before) if data_version(r) == version),
                None)


def provenance_chain(instance: dg.DagsterInstance, start: Link,
                     parents: Mapping[str, Sequence[str]]) -> dict[str, Link]:
    """start and, recursively, the materialization of each parent that produced the version its child read.

    The child's recorded input event pointer leads to the parent materialization current when the child ran; when
    the child's job reports reading another version of the parent's table (a pinned version), the parent's
    materialization whose data version is that version is used instead. A parent that ran a job must have one."""
    chain = {start.key: start}
    pending = [start]
    while pending:
        child = pending.pop()
        provenance = dg.DataProvenance.from_tags(
            _record(instance, child).asset_materialization.tags or {})
        for parent in parents.get(child.key, ()):
            if parent in chain:
                continue
            pointer = provenance.input_storage_ids.get(dg.AssetKey.from_user_string(parent)) if provenance else None
            if pointer is None:
                raise ProvenanceError(f"{child.describe()} recorded no materialization of its input {parent}; "
                                      f"re-materialize {child.key}")
            record = materialization(instance, parent, pointer)
            if record is None:
                raise ProvenanceError(f"{child.describe()} read {parent} materialization {pointer}, which is no "
                                      "longer in the event log")
            found = link(parent, record)
            read = inputs_read(child.key, child.facts).get(str(found.facts.get(CATALOG_TABLE) or ""))
            if read is not None and found.data_version != str(read):
                producer = producing_materialization(instance, parent, str(read), pointer)
                if producer is not None:
                    found = link(parent, producer)
                elif found.facts.get(JOB_RUN_ID) and found.partition is None:
                    raise ProvenanceError(
                        f"{child.describe()} read {found.facts[CATALOG_TABLE]} at version {read}, but no "
                        f"materialization of {parent} up to {pointer} produced that version")
            chain[parent] = found
            pending.append(found)
    return chain


def partition_writers(instance: dg.DagsterInstance, item: Link, read_version: int | None) -> list[Link]:
    """For each partition of item's asset, the latest materialization up to item that wrote a version of its table
    no later than read_version: together, the runs whose rows that table version holds."""
    found: dict[str, Link] = {}
    for record in _materializations_back_from(instance, item.key, item.storage_id):
        if record.partition_key is None or record.partition_key in found:
            continue
        candidate = link(item.key, record)
        written = catalog_object(item.key, candidate.facts)
        if written is None or not isinstance(written.version, int):
            continue  # this run wrote nothing: an earlier run of the partition holds its rows
        if read_version is not None and written.version > read_version:
            continue
        found[record.partition_key] = candidate
    return [found[key] for key in sorted(found)]


def lineage_facts(instance: dg.DagsterInstance, chain: Mapping[str, Link],
                  parents: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The facts of each link of the chain; a partitioned asset's as the list of its partitions' writers."""
    facts: dict[str, Any] = {key: dict(item.facts) for key, item in chain.items()}
    for key, item in chain.items():
        if item.partition is None:
            continue
        table = str(item.facts.get(CATALOG_TABLE) or "")
        reads = [inputs_read(child, chain[child].facts).get(table) for child, deps in parents.items()
                 if key in deps and child in chain]
        read = next((int(r) for r in reads if isinstance(r, int) or str(r).isdigit()), None)
        writers = partition_writers(instance, item, read)
        if writers:
            facts[key] = [dict(w.facts) for w in writers]
    return facts


def _record(instance: dg.DagsterInstance, item: Link) -> dg.EventLogRecord:
    record = materialization(instance, item.key, item.storage_id)
    if record is None:
        raise ProvenanceError(f"{item.describe()} is no longer in the event log")
    return record


def check_evaluation(instance: dg.DagsterInstance, check: dg.AssetCheckKey,
                     target: Link) -> dg.AssetCheckEvaluation | None:
    """The latest evaluation of check that Dagster recorded against exactly the target materialization."""
    # 1.13 has no public DagsterInstance query of a check's evaluations: the deprecated get_event_records cannot
    # page by storage id on the default run-sharded SQLite storage, so the event log storage's check history is read.
    cursor = None
    while True:
        history = instance.event_log_storage.get_asset_check_execution_history(check, limit=_PAGE, cursor=cursor)
        for execution in history:
            evaluation = execution.event.dagster_event.event_specific_data if execution.event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.target_materialization_data is None:
                continue
            targeted = evaluation.target_materialization_data.storage_id
            if targeted == target.storage_id:
                return evaluation
            if targeted < target.storage_id:  # newest first: the rest evaluated earlier materializations
                return None
        if len(history) < _PAGE:
            return None
        cursor = history[-1].id


__all__ = ["DATA_VERSION_TAG", "Link", "ProvenanceError", "check_evaluation", "data_version", "latest_materialization",
           "lineage_facts", "link", "materialization", "partition_writers", "plain_metadata",
           "producing_materialization", "provenance_chain"]
