"""Lineage sinks: OpenLineage run events in a local JSON-lines file, and Databricks External Metadata/Lineage."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound, ResourceConflict
from databricks.sdk.service import catalog as uc
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_type_dataset,
    dataset_version_dataset,
    job_type_job,
    tags_run,
)
from openlineage.client.serde import Serde

from governed_ft_dagster.lineage.derive import (
    Endpoint,
    ExternalMetadata,
    LineageGraph,
    Relationship,
    job_relationships,
)
from governed_ft_dagster.lineage.facts import SOURCE_DATASET_TYPE

PRODUCER = "urn:governed-ft-dagster:lineage"
JOB_NAMESPACE = "governed-ft"
_RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:governed-ft-dagster:job-run")
_DATASET_TYPE = {"table": "TABLE", "model_version": "MODEL"}



class LineageSinkError(RuntimeError):
    """Lineage could not be written to its destination."""


@dataclass
class PushResult:
    """What one push did, by record identity."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def openlineage_run_id(record: ExternalMetadata) -> str:
    """Deterministic OpenLineage run id (uuid5) of a job run, the same on every push."""
    return str(uuid.uuid5(_RUN_ID_NAMESPACE, f"{record.entity_type}:{record.run_id}"))


def build_run_events(
    graph: LineageGraph,
    *,
    catalog_host: str = "local",
    event_time: dt.datetime | None = None,
    producer: str = PRODUCER,
) -> list[RunEvent]:
    """One COMPLETE RunEvent per job run, with the catalog objects it read and wrote as datasets."""
    when = (event_time or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="milliseconds")
    namespace = f"uc://{catalog_host}"
    events = []
    for record in graph.external_metadata:
        if record.role != "job_run":
            continue
        inputs, outputs = job_relationships(graph, record.name)
        tags = sorted({**record.properties, "external_metadata_name": record.name}.items())
        run = Run(
            runId=openlineage_run_id(record),
            facets={
                "tags": tags_run.TagsRunFacet(
                    tags=[tags_run.TagsRunFacetFields(key=k, value=v, source=JOB_NAMESPACE) for k, v in tags],
                    producer=producer,
                )
            },
        )
        job = Job(
            namespace=JOB_NAMESPACE,
            name=record.asset_key,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="DAGSTER", jobType="JOB", producer=producer
                )
            },
        )
        events.append(
            RunEvent(
                eventType=RunState.COMPLETE,
                eventTime=when,
                producer=producer,
                run=run,
                job=job,
                inputs=[
                    InputDataset(namespace, r.source.name, facets=_dataset_facets(r.source, producer))
                    for r in inputs
                    if r.source.kind != "external_metadata"
                ] + [_source_dataset(graph.metadata(r.source.name), producer) for r in inputs
                     if r.source.kind == "external_metadata" and _is_source(graph, r.source.name)],
                outputs=[
                    OutputDataset(namespace, r.target.name, facets=_dataset_facets(r.target, producer))
                    for r in outputs
                    if r.target.kind != "external_metadata"
                ],
            )
        )
    return events


def _is_source(graph: LineageGraph, name: str) -> bool:
    record = graph.metadata(name)
    return record is not None and record.role == "source"


def _source_dataset(record: ExternalMetadata | None, producer: str) -> InputDataset:
    """A source system as an input dataset: namespace its address, name its external-metadata name."""
    assert record is not None
    return InputDataset(record.properties.get("url") or JOB_NAMESPACE, record.name, facets={
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
            datasetType=SOURCE_DATASET_TYPE, subType=record.entity_type, producer=producer)})


def _dataset_facets(endpoint: Endpoint, producer: str) -> dict[str, Any]:
    facets: dict[str, Any] = {
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
            datasetType=_DATASET_TYPE[endpoint.kind], producer=producer
        )
    }
    if endpoint.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=endpoint.version, producer=producer
        )
    return facets


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an OpenLineage JSON-lines file, in file order; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise LineageSinkError(f"{path}:{number} is not a JSON OpenLineage event: {exc}") from None
    return events


def _event_key(event: dict[str, Any]) -> tuple[str, str]:
    return event["run"]["runId"], event.get("eventType", "")


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "eventTime"} == {k: v for k, v in b.items() if k != "eventTime"}


def _line(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class OpenLineageFileSink:
    """Writes job runs as OpenLineage events to a JSON-lines file; a re-push replaces, never duplicates."""

    path: Path
    catalog_host: str = "local"
    producer: str = PRODUCER

    def push(self, graph: LineageGraph, *, event_time: dt.datetime | None = None) -> PushResult:
        """Append new events, replace changed ones in place, leave identical ones (and their eventTime) alone."""
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = [
            Serde.to_dict(e)
            for e in build_run_events(
                graph, catalog_host=self.catalog_host, event_time=event_time, producer=self.producer
            )
        ]
        result = PushResult()
        with _locked(path):
            existing = read_events(path)
            index = {_event_key(e): i for i, e in enumerate(existing)}
            appended: list[dict[str, Any]] = []
            replaced = False
            for event in fresh:
                key = _event_key(event)
                label = f"{event['job']['name']}:{key[0]}:{key[1]}"
                if key not in index:
                    index[key] = len(existing) + len(appended)
                    appended.append(event)
                    result.created.append(label)
                elif _same_event(existing[index[key]], event):
                    result.unchanged.append(label)
                else:
                    existing[index[key]] = event
                    replaced = True
                    result.updated.append(label)
            if replaced:
                self._rewrite(path, existing + appended)
            elif appended:
                with open(path, "a", encoding="utf-8") as out:
                    out.write("".join(_line(e) for e in appended))
        return result

    def read(self) -> list[dict[str, Any]]:
        """The events in the sink's file."""
        return read_events(Path(self.path))

    @staticmethod
    def _rewrite(path: Path, events: list[dict[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("".join(_line(e) for e in events))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class DatabricksLineageSink:
    """Pushes external-metadata objects and external lineage relationships to Unity Catalog, idempotently."""

    def __init__(self, workspace_client: WorkspaceClient):
        self._w = workspace_client

    def push(self, graph: LineageGraph) -> PushResult:
        """Create what is missing, update what changed, leave the rest; metadata first, then relationships."""
        result = PushResult()
        for record in graph.external_metadata:
            self._upsert_metadata(record, result)
        for relationship in graph.relationships:
            self._upsert_relationship(relationship, result)
        return result

    def _upsert_metadata(self, record: ExternalMetadata, result: PushResult) -> None:
        desired = uc.ExternalMetadata(
            name=record.name,
            system_type=uc.SystemType(record.system_type),
            entity_type=record.entity_type,
            description=record.description,
            properties=dict(record.properties),
        )
        label = f"external_metadata:{record.name}"
        api = self._w.external_metadata
        try:
            current = api.get_external_metadata(record.name)
        except NotFound:
            try:
                api.create_external_metadata(desired)
                result.created.append(label)
                return
            except ResourceConflict:
                current = api.get_external_metadata(record.name)
        if current.entity_type != desired.entity_type or current.system_type != desired.system_type:
            raise LineageSinkError(
                f"external metadata {record.name!r} exists as {current.system_type}/{current.entity_type}, "
                f"not {desired.system_type}/{desired.entity_type}"
            )
        if (current.properties or {}) == desired.properties and current.description == desired.description:
            result.unchanged.append(label)
            return
        api.update_external_metadata(record.name, desired, update_mask="description,properties")
        result.updated.append(label)

    def _upsert_relationship(self, relationship: Relationship, result: PushResult) -> None:
        source, target = lineage_object(relationship.source), lineage_object(relationship.target)
        properties = dict(relationship.properties)
        label = relationship.key
        existing = self._find_relationship(relationship)
        if existing is None:
            try:
                self._w.external_lineage.create_external_lineage_relationship(
                    uc.CreateRequestExternalLineage(source=source, target=target, properties=properties)
                )
                result.created.append(label)
                return
            except ResourceConflict:
                existing = self._find_relationship(relationship)
                if existing is None:
                    raise
            except NotFound as exc:
                raise LineageSinkError(
                    f"Unity Catalog refused the lineage relationship {label} ({_first_line(exc)}): the table or model "
                    "version it names is not registered there; register it (materialize the asset that creates it) "
                    "before pushing its lineage") from None
            except BadRequest as exc:
                raise LineageSinkError(
                    f"Unity Catalog refused the lineage relationship {label} ({_first_line(exc)}): each relationship "
                    "needs an external-metadata object (a job run) on one side; link the two objects through the job "
                    "run between them") from None
        if (existing.properties or {}) == properties:
            result.unchanged.append(label)
            return
        self._w.external_lineage.update_external_lineage_relationship(
            uc.UpdateRequestExternalLineage(source=source, target=target, id=existing.id, properties=properties),
            update_mask="properties",
        )
        result.updated.append(label)

    def _find_relationship(self, relationship: Relationship) -> uc.ExternalLineageRelationshipInfo | None:
        """The stored relationship with the same source and target, listed from its external-metadata side."""
        if relationship.source.kind == "external_metadata":
            anchor, direction = relationship.source, uc.LineageDirection.DOWNSTREAM
        else:
            anchor, direction = relationship.target, uc.LineageDirection.UPSTREAM
        wanted = (_endpoint_ref(relationship.source), _endpoint_ref(relationship.target))
        for info in self._w.external_lineage.list_external_lineage_relationships(
            object_info=lineage_object(anchor), lineage_direction=direction
        ):
            edge = info.external_lineage_info
            if edge is None or edge.source is None or edge.target is None:
                continue
            if (_object_ref(edge.source), _object_ref(edge.target)) == wanted:
                return edge
        return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).split(" Config: ")[0].splitlines() or [type(exc).__name__])[0][:300]


def lineage_object(endpoint: Endpoint) -> uc.ExternalLineageObject:
    """The SDK's ExternalLineageObject for one side of a relationship (tables by name, no version)."""
    if endpoint.kind == "external_metadata":
        return uc.ExternalLineageObject(external_metadata=uc.ExternalLineageExternalMetadata(name=endpoint.name))
    if endpoint.kind == "table":
        return uc.ExternalLineageObject(table=uc.ExternalLineageTable(name=endpoint.name))
    return uc.ExternalLineageObject(
        model_version=uc.ExternalLineageModelVersion(name=endpoint.name, version=endpoint.version)
    )


def _endpoint_ref(endpoint: Endpoint) -> str:
    return _object_ref(lineage_object(endpoint))


def _object_ref(obj: uc.ExternalLineageObject) -> str:
    """Comparable identity of a stored object; catalog names are case-insensitive, metadata names are not."""
    if obj.external_metadata is not None:
        return f"external_metadata:{obj.external_metadata.name}"
    if obj.table is not None:
        return f"table:{(obj.table.name or '').lower()}"
    if obj.model_version is not None:
        return f"model_version:{(obj.model_version.name or '').lower()}@{obj.model_version.version}"
    if obj.path is not None:
        return f"path:{obj.path.url}"
    return "unknown"


__all__ = [
    "DatabricksLineageSink",
    "JOB_NAMESPACE",
    "LineageSinkError",
    "OpenLineageFileSink",
    "PRODUCER",
    "PushResult",
    "build_run_events",
    "lineage_object",
    "openlineage_run_id",
    "read_events",
]
