"""The authorization matrix: every principal × securable × operation the pipeline uses, exactly the design allows.

Each cell is tried for real against the catalog as that principal; the expected outcome comes from the design's
grant table (`governance.allowed`). On the aws path the catalog is the recording Databricks stand-in, provisioned by
`governed-ft catalog apply`'s grant set; on the local path it is the open-source catalog server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
from databricks.sdk.errors import PermissionDenied
from databricks.sdk.service import catalog as uc

from aws_fixtures import CATALOG, application_id
from governed_ft_dagster.catalog.base import CatalogPermissionError, ColumnInfo, Principal
from governed_ft_dagster.catalog.oss import API
from governed_ft_dagster.governance import (
    CURATED_TABLE,
    PRODUCTION_MODEL_NAME,
    RAW_TABLE,
    Action,
    Operation,
    allowed,
    pipeline_actions,
)
from governed_ft_dagster.defs.resources.catalog import CatalogResource
from test_model_asset import world  # noqa: F401  (fixture: fake workspace with MLflow UC and lineage routes)

COLUMNS = [ColumnInfo("accession_number", "STRING", "string", 0, False)]
MLFLOW_UC = "/api/2.0/mlflow/unity-catalog"
Probe = Callable[[Principal, Action], None]


@dataclass
class Cell:
    principal: Principal
    action: Action
    expected: bool
    outcome: str  # "allowed", "refused" or "error: ..."
    message: str = ""

    @property
    def unexpected(self) -> bool:
        return self.outcome != ("allowed" if self.expected else "refused")


def run_matrix(probe: Probe, actions: tuple[Action, ...]) -> list[Cell]:
    cells = []
    for principal in Principal:
        for action in actions:
            try:
                probe(principal, action)
                outcome, message = "allowed", ""
            except (CatalogPermissionError, PermissionDenied) as exc:
                outcome, message = "refused", str(exc)
            except Exception as exc:  # noqa: BLE001 - any other failure is an unexpected cell, reported below
                outcome, message = f"error: {type(exc).__name__}", str(exc)[:300]
            cells.append(Cell(principal, action, allowed(principal, action), outcome, message))
    return cells


def report(cells: list[Cell]) -> str:
    actions = list(dict.fromkeys(c.action for c in cells))
    width = max(len(str(a)) for a in actions)
    lines = [f"{'':<{width}}  " + "  ".join(f"{p.value:<10}" for p in Principal)]
    for action in actions:
        row = {c.principal: c for c in cells if c.action == action}
        marks = ["ok" if row[p].outcome == "allowed" else "no" if row[p].outcome == "refused" else "ERR"
                 for p in Principal]
        marks = [m + ("!" if row[p].unexpected else "") for m, p in zip(marks, Principal)]
        lines.append(f"{str(action):<{width}}  " + "  ".join(f"{m:<10}" for m in marks))
    unexpected = [c for c in cells if c.unexpected]
    lines.append(f"matrix: {len(cells)} cells ({sum(c.expected for c in cells)} allowed by the design), "
                 f"{len(unexpected)} unexpected outcome(s)")
    return "\n".join(lines)


# ---- the aws path: the recording Databricks stand-in --------------------------------------------------------


def table_probe(catalog: CatalogResource, principal: Principal, action: Action) -> bool:
    """Vend or create-table as the principal; False when the action is not one of those."""
    client, full = catalog.client(principal), catalog.table_name(action.target)
    op, tag = action.operation, f"authz_probe_{principal.value}"
    if op in (Operation.VEND_READ, Operation.VEND_READ_WRITE):
        client.temporary_table_credentials(full, "READ" if op == Operation.VEND_READ else "READ_WRITE")
    elif op == Operation.CREATE_TABLE:
        client.register_external_table(f"{full}.{tag}", catalog.location(f"{action.target}/tables/{tag}"), COLUMNS)
    else:
        return False
    return True


def databricks_probe(catalog: CatalogResource) -> Probe:
    def run(principal: Principal, action: Action) -> None:
        if table_probe(catalog, principal, action):
            return
        client = catalog.client(principal)
        full = catalog.table_name(action.target) if action.target else ""
        op, tag = action.operation, f"authz_probe_{principal.value}"
        if op == Operation.CREATE_MODEL_VERSION:  # the first call of MLflow's databricks-uc registry
            client._ws().api_client.do("POST", f"{MLFLOW_UC}/model-versions/create",
                                       body={"name": full, "source": catalog.location(f"ml/adapters/{tag}")})
        elif op == Operation.WRITE_ARTIFACT:
            client.temporary_path_credentials(catalog.location(f"ml/adapters/{tag}"), "PATH_READ_WRITE")
        elif op == Operation.WRITE_LINEAGE:
            client._ws().external_metadata.create_external_metadata(uc.ExternalMetadata(
                name=tag, system_type=uc.SystemType.OTHER, entity_type="AuthorizationProbe"))
        else:
            raise AssertionError(f"no probe for {action}")
    return run


def governed_objects(catalog: CatalogResource) -> None:
    """The tables and the model as the pipeline leaves them: created by their owners, readers granted."""
    catalog.client(Principal.INGEST).register_external_table(
        catalog.table_name(RAW_TABLE), catalog.location("raw/tables/risk_factors"), COLUMNS)
    catalog.grant_table_readers(Principal.INGEST, RAW_TABLE)
    catalog.client(Principal.PREPROCESS).register_external_table(
        catalog.table_name(CURATED_TABLE), catalog.location("curated/tables/risk_factor_instructions"), COLUMNS)
    catalog.grant_table_readers(Principal.PREPROCESS, CURATED_TABLE)
    catalog.client(Principal.REGISTRAR).create_registered_model(catalog.table_name(PRODUCTION_MODEL_NAME))


def test_exactly_the_designs_grants_succeed_on_the_aws_path(world, capsys):  # noqa: F811
    aws, _, _ = world
    catalog = aws.catalog_resource()
    governed_objects(catalog)
    cells = run_matrix(databricks_probe(catalog), pipeline_actions())
    with capsys.disabled():
        print("\n" + report(cells))
    assert len(cells) == len(Principal) * len(pipeline_actions()) == 40
    assert sum(c.expected for c in cells) == 11
    assert [c for c in cells if c.unexpected] == []
    for cell in cells:
        if cell.outcome == "refused":
            name = application_id(cell.principal)
            assert (cell.principal.value in cell.message or name in cell.message), cell
            assert "lacks" in cell.message or "not an owner" in cell.message or "does not have" in cell.message, cell


def test_one_missing_grant_and_one_extra_grant_show_up_as_exactly_their_cells(world):  # noqa: F811
    aws, _, _ = world
    catalog = aws.catalog_resource()
    governed_objects(catalog)
    train, preprocess = application_id(Principal.TRAIN), application_id(Principal.PREPROCESS)
    aws.databricks.revoke("table", catalog.table_name(CURATED_TABLE), train, "SELECT")
    aws.databricks.grant("table", catalog.table_name(RAW_TABLE), preprocess, "MODIFY")
    cells = run_matrix(databricks_probe(catalog), pipeline_actions())
    unexpected = {(c.principal, str(c.action), c.outcome) for c in cells if c.unexpected}
    assert unexpected == {
        (Principal.TRAIN, f"vend READ {CURATED_TABLE}", "refused"),
        (Principal.PREPROCESS, f"vend READ_WRITE {RAW_TABLE}", "allowed"),
    }


def test_the_external_use_privileges_are_what_vending_hinges_on(world):  # noqa: F811
    aws, _, _ = world
    catalog = aws.catalog_resource()
    governed_objects(catalog)
    train = application_id(Principal.TRAIN)
    aws.databricks.revoke("schema", catalog.table_name("curated"), train, "EXTERNAL_USE_SCHEMA")
    aws.databricks.revoke("external_location", "governed_ml", train, "EXTERNAL_USE_LOCATION")
    cells = {(c.principal, c.action): c for c in run_matrix(databricks_probe(catalog), pipeline_actions())}
    read = cells[(Principal.TRAIN, Action(Operation.VEND_READ, CURATED_TABLE))]
    write = cells[(Principal.TRAIN, Action(Operation.WRITE_ARTIFACT))]
    assert read.outcome == write.outcome == "refused"
    assert "EXTERNAL USE SCHEMA on schema governed_ft.curated" in read.message
    assert "EXTERNAL USE LOCATION on external_location governed_ml" in write.message


# ---- the local path: the open-source catalog server ---------------------------------------------------------

LOCAL_ACTIONS = tuple(a for a in pipeline_actions() if a.operation != Operation.WRITE_LINEAGE)  # lineage is a file


def oss_probe(catalog: CatalogResource) -> Probe:
    def run(principal: Principal, action: Action) -> None:
        if table_probe(catalog, principal, action):
            return
        tag = f"authz_probe_{principal.value}"
        if action.operation == Operation.WRITE_ARTIFACT:
            catalog.client(principal).temporary_path_credentials(catalog.location(f"ml/adapters/{tag}"),
                                                                 "PATH_READ_WRITE")
        elif action.operation == Operation.CREATE_MODEL_VERSION:
            catalog_name, schema, model = catalog.table_name(action.target).split(".")
            catalog.client(principal)._request("POST", f"{API}/models/versions", body={  # type: ignore[attr-defined]
                "catalog_name": catalog_name, "schema_name": schema, "model_name": model,
                "source": catalog.location(f"ml/adapters/{tag}"), "run_id": tag},
                securable=f"registered_model {catalog_name}.{schema}.{model}", privilege="OWNER")
        else:
            raise AssertionError(f"no probe for {action}")
    return run


def test_exactly_the_designs_grants_succeed_on_the_local_catalog(running_stack, capsys):
    from governed_ft_dagster.defs.resources.catalog import LocalCatalogResource
    from governed_ft_dagster.stack.bootstrap import bootstrap

    bootstrap(running_stack)
    catalog = LocalCatalogResource(catalog=running_stack.settings.catalog_name, url=running_stack.settings.uc_url,
                                   home=str(running_stack.home), storage_root=running_stack.warehouse.as_uri())
    governed_objects(catalog)
    cells = run_matrix(oss_probe(catalog), LOCAL_ACTIONS)
    with capsys.disabled():
        print("\n" + report(cells))
    assert len(cells) == len(Principal) * len(LOCAL_ACTIONS) == 36
    assert [c for c in cells if c.unexpected] == []


def test_the_design_matrix_itself() -> None:
    """The expectations the matrices are held to, spelled out once by hand from the design's table."""
    expected = {
        Principal.INGEST: {f"vend READ {RAW_TABLE}", f"vend READ_WRITE {RAW_TABLE}", "create table raw"},
        Principal.PREPROCESS: {f"vend READ {RAW_TABLE}", f"vend READ {CURATED_TABLE}",
                               f"vend READ_WRITE {CURATED_TABLE}", "create table curated"},
        Principal.TRAIN: {f"vend READ {CURATED_TABLE}", "write model artifact"},
        Principal.REGISTRAR: {f"create model version {PRODUCTION_MODEL_NAME}", "write lineage"},
    }
    assert {p: {str(a) for a in pipeline_actions() if allowed(p, a)} for p in Principal} == expected
