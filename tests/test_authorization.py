"""The authorization matrix: every principal × securable × operation the pipeline uses, exactly the design allows.

Each cell is tried for real against the catalog as that principal. On the aws path the catalog is the Databricks
stand-in as `governed-ft aws apply` and `governed-ft catalog apply` leave it (the project's own provisioning), and
the expected outcome of every cell is written out below, not computed from the design's grant table; on the local
path it is the open-source catalog server.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import pytest
from databricks.sdk.errors import PermissionDenied
from databricks.sdk.service import catalog as uc

from aws_fixtures import enforced_registry_world
from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError, ColumnInfo, Principal
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

COLUMNS = [ColumnInfo("accession_number", "STRING", "string", 0, False)]
MLFLOW_UC = "/api/2.0/mlflow/unity-catalog"
Probe = Callable[[Principal, Action], None]
_RUNS = itertools.count(1)
# The aws matrix as provisioned: "ok" where the principal may, "no" where the catalog must refuse it.
PROVISIONED = """
                                                      ingest  preprocess  train  registrar
vend READ raw.risk_factors                            ok      ok          no     no
vend READ_WRITE raw.risk_factors                      ok      no          no     no
vend READ curated.risk_factor_instructions            no      ok          ok     no
vend READ_WRITE curated.risk_factor_instructions      no      ok          no     no
create table raw                                      ok      no          no     no
create table curated                                  no      ok          no     no
create table ml                                       no      no          no     no
create model version ml.ministral_3b_sec_risk_factors no      no          no     ok
write model artifact                                  no      no          ok     no
write lineage                                         no      no          no     ok
"""


def expected_cells(table: str, **changes: str) -> dict[tuple[Principal, str], str]:
    """The written table as (principal, action) -> "ok"/"no", with some cells changed ("principal|action": "no")."""
    header, *rows = table.strip().splitlines()
    principals = [Principal(name) for name in header.split()]
    cells = {}
    for row in rows:
        words = row.split()
        action, marks = " ".join(words[:-len(principals)]), words[-len(principals):]
        for principal, mark in zip(principals, marks):
            cells[(principal, action)] = mark
    for key, mark in changes.items():
        principal, action = key.split("|")
        assert (Principal(principal), action) in cells, key
        cells[(Principal(principal), action)] = mark
    return cells


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


def run_matrix(probe: Probe, actions: tuple[Action, ...],
               expected: Callable[[Principal, Action], bool] = allowed) -> list[Cell]:
    cells = []
    for principal in Principal:
        for action in actions:
            try:
                probe(principal, action)
                outcome, message = "allowed", ""
            except (CatalogError, PermissionDenied) as exc:
                outcome, message = "refused", str(exc)
            except Exception as exc:  # noqa: BLE001 - any other failure is an unexpected cell, reported below
                outcome, message = f"error: {type(exc).__name__}", str(exc)[:300]
            cells.append(Cell(principal, action, expected(principal, action), outcome, message))
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
    lines.append(f"matrix: {len(cells)} cells ({sum(c.expected for c in cells)} allowed), "
                 f"{len(unexpected)} unexpected outcome(s)")
    return "\n".join(lines)


# ---- the aws path: the Databricks stand-in as the project's provisioning leaves it ----------------------------


def table_probe(catalog: CatalogResource, principal: Principal, action: Action, tag: str) -> bool:
    """Vend or create-table as the principal; False when the action is not one of those."""
    client, full = catalog.client(principal), catalog.table_name(action.target)
    op = action.operation
    if op in (Operation.VEND_READ, Operation.VEND_READ_WRITE):
        client.temporary_table_credentials(full, "READ" if op == Operation.VEND_READ else "READ_WRITE")
    elif op == Operation.CREATE_TABLE:
        client.register_external_table(f"{full}.{tag}", catalog.location(f"{action.target}/tables/{tag}"), COLUMNS)
    else:
        return False
    return True


def databricks_probe(catalog: CatalogResource) -> Probe:
    """Each matrix run names what it creates apart (tables, lineage), so runs in one workspace do not meet."""
    run_number = next(_RUNS)

    def run(principal: Principal, action: Action) -> None:
        tag = f"authz_probe_{principal.value}_{run_number}"
        if table_probe(catalog, principal, action, tag):
            return
        client = catalog.client(principal)
        full = catalog.table_name(action.target) if action.target else ""
        op = action.operation
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


@pytest.fixture(scope="module")
def provisioned():
    """The workspace and AWS as `governed-ft aws apply` and `catalog apply` leave them, the governed objects created;
    once for the module, each test putting back what it changes."""
    with pytest.MonkeyPatch.context() as monkeypatch, enforced_registry_world(monkeypatch) as (aws, _, _):
        catalog = aws.catalog_resource()
        governed_objects(catalog)
        yield aws, catalog


def check_matrix(catalog: CatalogResource, expected: dict[tuple[Principal, str], str]) -> list[Cell]:
    cells = run_matrix(databricks_probe(catalog), pipeline_actions(),
                       lambda principal, action: expected[(principal, str(action))] == "ok")
    assert len(cells) == len(expected) == 40, report(cells)
    assert [c for c in cells if c.unexpected] == [], report(cells)
    return cells


def test_exactly_the_provisioned_grants_succeed_on_the_aws_path(provisioned, capsys):
    aws, catalog = provisioned
    cells = check_matrix(catalog, expected_cells(PROVISIONED))
    with capsys.disabled():
        print("\n" + report(cells))
    assert sum(c.outcome == "allowed" for c in cells) == 11
    for cell in cells:
        if cell.outcome == "refused":
            assert f"'{cell.principal.value}'" in cell.message or aws.application_ids[cell.principal.value] in \
                cell.message, cell
            assert "\n" not in cell.message and "Traceback" not in cell.message, cell
    # The literal table is the design's, as the design's table says: provisioning changed nothing of it.
    assert {(c.principal, str(c.action)) for c in cells if c.outcome == "allowed"} == {
        (p, str(a)) for p in Principal for a in pipeline_actions() if allowed(p, a)}


def test_one_missing_grant_and_one_extra_grant_show_up_as_exactly_their_cells(provisioned):
    aws, catalog = provisioned
    train, preprocess = aws.application_ids["train"], aws.application_ids["preprocess"]
    aws.databricks.revoke("table", catalog.table_name(CURATED_TABLE), train, "SELECT")
    aws.databricks.grant("table", catalog.table_name(RAW_TABLE), preprocess, "MODIFY")
    try:
        check_matrix(catalog, expected_cells(PROVISIONED, **{
            f"train|vend READ {CURATED_TABLE}": "no", f"preprocess|vend READ_WRITE {RAW_TABLE}": "ok"}))
    finally:
        aws.databricks.grant("table", catalog.table_name(CURATED_TABLE), train, "SELECT")
        aws.databricks.revoke("table", catalog.table_name(RAW_TABLE), preprocess, "MODIFY")


def test_external_use_schema_missing_while_select_is_present_refuses_only_that_vend(provisioned):
    aws, catalog = provisioned
    train = aws.application_ids["train"]
    aws.databricks.revoke("schema", catalog.table_name("curated"), train, "EXTERNAL_USE_SCHEMA")
    assert aws.databricks.holds(train, "table", catalog.table_name(CURATED_TABLE), "SELECT")
    try:
        cells = check_matrix(catalog, expected_cells(PROVISIONED, **{f"train|vend READ {CURATED_TABLE}": "no"}))
    finally:
        aws.databricks.grant("schema", catalog.table_name("curated"), train, "EXTERNAL_USE_SCHEMA")
    (refused,) = [c for c in cells if (c.principal, str(c.action)) == (Principal.TRAIN, f"vend READ {CURATED_TABLE}")]
    assert refused.message.startswith(
        f"principal 'train' lacks EXTERNAL USE SCHEMA on schema {catalog.catalog}.curated")


def test_a_path_no_external_location_covers_is_refused(provisioned):
    aws, catalog = provisioned
    ml = next(name for name, loc in aws.databricks.external_locations.items() if loc["url"].endswith("/ml"))
    kept = aws.databricks.external_locations.pop(ml)  # the ml/ prefix is no longer an external location
    try:
        cells = check_matrix(catalog, expected_cells(PROVISIONED, **{"train|write model artifact": "no"}))
    finally:
        aws.databricks.external_locations[ml] = kept
    (refused,) = [c for c in cells if (c.principal, str(c.action)) == (Principal.TRAIN, "write model artifact")]
    assert refused.message.startswith(f"no external location of the metastore at {aws.databricks.url} covers "
                                      f"{catalog.location('ml/adapters/authz_probe_train_')}")


def test_external_data_access_switched_off_refuses_every_vend(provisioned):
    aws, catalog = provisioned
    vends = [f"vend READ {RAW_TABLE}", f"vend READ_WRITE {RAW_TABLE}", f"vend READ {CURATED_TABLE}",
             f"vend READ_WRITE {CURATED_TABLE}", "write model artifact"]
    granted = expected_cells(PROVISIONED)
    aws.databricks.external_access_enabled = False
    try:
        cells = check_matrix(catalog, expected_cells(PROVISIONED, **{f"{p.value}|{a}": "no" for p in Principal
                                                                     for a in vends}))
    finally:
        aws.databricks.external_access_enabled = True
    switched = [c for c in cells if str(c.action) in vends and granted[(c.principal, str(c.action))] == "ok"]
    assert len(switched) == 7 and all("has external data access turned off" in c.message for c in switched)


# ---- the local path: the open-source catalog server ---------------------------------------------------------

LOCAL_ACTIONS = tuple(a for a in pipeline_actions() if a.operation != Operation.WRITE_LINEAGE)  # lineage is a file


def oss_probe(catalog: CatalogResource) -> Probe:
    def run(principal: Principal, action: Action) -> None:
        tag = f"authz_probe_{principal.value}"
        if table_probe(catalog, principal, action, tag):
            return
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
    expected = expected_cells(PROVISIONED)
    cells = run_matrix(oss_probe(catalog), LOCAL_ACTIONS,
                       lambda principal, action: expected[(principal, str(action))] == "ok")
    with capsys.disabled():
        print("\n" + report(cells))
    assert len(cells) == len(Principal) * len(LOCAL_ACTIONS) == 36
    assert [c for c in cells if c.unexpected] == []


def test_the_design_matrix_itself() -> None:
    """The design's own reading of its grant table agrees with the matrix written out above."""
    expected = {
        Principal.INGEST: {f"vend READ {RAW_TABLE}", f"vend READ_WRITE {RAW_TABLE}", "create table raw"},
        Principal.PREPROCESS: {f"vend READ {RAW_TABLE}", f"vend READ {CURATED_TABLE}",
                               f"vend READ_WRITE {CURATED_TABLE}", "create table curated"},
        Principal.TRAIN: {f"vend READ {CURATED_TABLE}", "write model artifact"},
        Principal.REGISTRAR: {f"create model version {PRODUCTION_MODEL_NAME}", "write lineage"},
    }
    assert {p: {str(a) for a in pipeline_actions() if allowed(p, a)} for p in Principal} == expected
    written = expected_cells(PROVISIONED)
    assert {p: {a for (q, a), mark in written.items() if q == p and mark == "ok"} for p in Principal} == expected
