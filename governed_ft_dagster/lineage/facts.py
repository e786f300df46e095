"""Lineage nodes from an asset graph description and the metadata of one materialization per asset (no Dagster).

The facts of one asset are its materialization metadata as plain values, read through these keys:

- `catalog_table` + `delta_version`: the table the asset wrote, at the Delta version written;
- `model_name` + `model_version`: the model version the asset registered;
- `job_run_kind` + `job_run_id` (+ `job_properties`, a mapping or its JSON): the external job that ran;
- `source_table` + `source_version`, and/or `sources_read` (table → Delta version): what that job read;
- `external_source` (a mapping: `name`, `entity_type`, `properties`): the system outside the catalog the job
  fetched from;
- `delta_version_written`: the Delta version the job wrote, -1 when it wrote nothing (else `delta_version`);
- `partition`: the partition the materialization was of.

A partitioned asset's facts are a list, one mapping per partition materialization: each becomes a node of its own.
Anything else is ignored, so an asset added to the graph extends lineage as soon as it writes these keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from governed_ft_dagster.lineage.derive import AssetNode, CatalogObject, ExternalSource, JobRun, LineageError

CATALOG_TABLE = "catalog_table"
DELTA_VERSION = "delta_version"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
JOB_RUN_KIND = "job_run_kind"
JOB_RUN_ID = "job_run_id"
JOB_PROPERTIES = "job_properties"
SOURCE_TABLE = "source_table"
SOURCE_VERSION = "source_version"
SOURCES_READ = "sources_read"
EXTERNAL_SOURCE = "external_source"
DELTA_VERSION_WRITTEN = "delta_version_written"
PARTITION = "partition"
OPENLINEAGE_FILE = Path("lineage") / "openlineage.jsonl"
SOURCE_DATASET_TYPE = "EXTERNAL_METADATA"  # OpenLineage dataset type of a source system a job fetched from


def openlineage_path(home: Path) -> Path:
    """The local deployment's OpenLineage file under the state folder."""
    return Path(home) / OPENLINEAGE_FILE


def lineage_nodes_from_graph(
    asset_graph_description: Mapping[str, Iterable[str]],
    facts: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
) -> list[AssetNode]:
    """One AssetNode per asset, or per partition materialization where an asset's facts are a list (dependencies
    outside the description become nodes without facts), in key order."""
    deps = {key: tuple(sorted(set(parents))) for key, parents in asset_graph_description.items()}
    for parents in list(deps.values()):
        for parent in parents:
            deps.setdefault(parent, ())
    expanded = {key: [(f"{key}[{_partition(key, f)}]", f) for f in value]
                for key, value in facts.items() if isinstance(value, Sequence) and not isinstance(value, str) and value}
    nodes = []
    for key in sorted(deps):
        parents = tuple(sorted(name for parent in deps[key]
                               for name in ([n for n, _ in expanded[parent]] if parent in expanded else [parent])))
        for name, asset_facts in expanded.get(key) or [(key, facts.get(key) or {})]:
            if not isinstance(asset_facts, Mapping):
                raise LineageError(f"asset {key!r} reports facts as {type(asset_facts).__name__}, not a mapping")
            nodes.append(AssetNode(name, parents, catalog_object(key, asset_facts), job_run(key, asset_facts),
                                   inputs_read(key, asset_facts), _optional(asset_facts.get(PARTITION)),
                                   external_source(key, asset_facts)))
    return nodes


def _partition(key: str, facts: Mapping[str, Any]) -> str:
    if not isinstance(facts, Mapping) or not facts.get(PARTITION):
        raise LineageError(f"asset {key!r} reports several materializations, one without its {PARTITION!r}")
    return str(facts[PARTITION])


def _optional(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def external_source(key: str, facts: Mapping[str, Any]) -> ExternalSource | None:
    """The system outside the catalog the asset's job fetched from, if its facts name one."""
    value = _mapping(key, EXTERNAL_SOURCE, facts.get(EXTERNAL_SOURCE))
    if not value:
        return None
    if not value.get("name") or not value.get("entity_type"):
        raise LineageError(f"asset {key!r} reports {EXTERNAL_SOURCE!r} without both 'name' and 'entity_type'")
    return ExternalSource(str(value["name"]), str(value["entity_type"]),
                          _mapping(key, EXTERNAL_SOURCE, value.get("properties")))


def catalog_object(key: str, facts: Mapping[str, Any]) -> CatalogObject | None:
    """The table or model version the asset wrote, if its facts name one."""
    if facts.get(CATALOG_TABLE):
        written = DELTA_VERSION_WRITTEN if DELTA_VERSION_WRITTEN in facts else DELTA_VERSION
        version = _version(key, written, facts.get(written))
        if isinstance(version, int) and version < 0:
            version = None  # the raw asset reports -1 when a run wrote nothing
        return CatalogObject("table", str(facts[CATALOG_TABLE]), version)
    if facts.get(MODEL_NAME) and facts.get(MODEL_VERSION) not in (None, ""):
        return CatalogObject("model_version", str(facts[MODEL_NAME]), str(facts[MODEL_VERSION]))
    return None


def job_run(key: str, facts: Mapping[str, Any]) -> JobRun | None:
    """The external job run of the asset, if its facts name one."""
    kind, run_id = facts.get(JOB_RUN_KIND), facts.get(JOB_RUN_ID)
    if not kind and not run_id:
        return None
    if not kind or not run_id:
        raise LineageError(f"asset {key!r} reports a job run without both {JOB_RUN_KIND!r} and {JOB_RUN_ID!r}")
    return JobRun(str(kind), str(run_id), _mapping(key, JOB_PROPERTIES, facts.get(JOB_PROPERTIES)))


def inputs_read(key: str, facts: Mapping[str, Any]) -> dict[str, int | str]:
    """Table full name → Delta version the asset's job read."""
    read: dict[str, int | str] = {}
    for table, version in _mapping(key, SOURCES_READ, facts.get(SOURCES_READ)).items():
        read[str(table)] = _version(key, SOURCES_READ, version)
    if facts.get(SOURCE_TABLE):
        read[str(facts[SOURCE_TABLE])] = _version(key, SOURCE_VERSION, facts.get(SOURCE_VERSION))
    return {table: version for table, version in read.items() if version is not None}


def _mapping(key: str, name: str, value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise LineageError(f"asset {key!r} reports {name!r} that is not JSON: {value[:80]!r}") from None
    if not isinstance(value, Mapping):
        raise LineageError(f"asset {key!r} reports {name!r} as {type(value).__name__}, not a mapping")
    return dict(value)


def _version(key: str, name: str, value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise LineageError(f"asset {key!r} reports {name!r} as a boolean, not a version")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


__all__ = [
    "CATALOG_TABLE",
    "DELTA_VERSION",
    "DELTA_VERSION_WRITTEN",
    "EXTERNAL_SOURCE",
    "JOB_PROPERTIES",
    "JOB_RUN_ID",
    "JOB_RUN_KIND",
    "MODEL_NAME",
    "MODEL_VERSION",
    "OPENLINEAGE_FILE",
    "PARTITION",
    "SOURCES_READ",
    "SOURCE_DATASET_TYPE",
    "SOURCE_TABLE",
    "SOURCE_VERSION",
    "catalog_object",
    "external_source",
    "inputs_read",
    "job_run",
    "lineage_nodes_from_graph",
    "openlineage_path",
]
