"""Against the real open-source catalog server: bootstrap, restart, refusal and permission."""

from __future__ import annotations

import pytest

from governed_ft_dagster.catalog.base import CatalogPermissionError, ColumnInfo, Principal
from governed_ft_dagster.governance import RAW_TABLE
from governed_ft_dagster.resources.catalog import LocalCatalogResource
from governed_ft_dagster.stack import jars
from governed_ft_dagster.stack.bootstrap import apply_governance, bootstrap, BootstrapReport
from governed_ft_dagster.stack.inventory import catalog_inventory
from governed_ft_dagster.catalog.oss import OssCatalogClient


@pytest.fixture
def running_stack(local_stack, uc_server_jars):
    for group in ("uc-server",):
        target = jars.group_dir(local_stack.home, group)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(jars.group_dir(uc_server_jars, group))
    local_stack.up()
    yield local_stack
    local_stack.down()


def _resource(stack) -> LocalCatalogResource:
    return LocalCatalogResource(catalog=stack.settings.catalog_name, url=stack.settings.uc_url, home=str(stack.home),
                                storage_root=stack.warehouse.as_uri())


def test_bootstrap_twice_gives_the_same_catalog_state(running_stack):
    first = bootstrap(running_stack)
    assert first.changed
    state = catalog_inventory(running_stack)
    second = bootstrap(running_stack)
    assert not second.changed
    assert catalog_inventory(running_stack) == state
    assert state["schemas"] == ["curated", "ml", "raw"]
    assert sorted(state["principals"]) == sorted(p.value for p in Principal)


def test_state_survives_a_stop_and_start(running_stack):
    bootstrap(running_stack)
    before = catalog_inventory(running_stack)
    assert running_stack.down()
    running_stack.up()
    assert catalog_inventory(running_stack) == before
    assert not bootstrap(running_stack).changed


def test_train_is_refused_read_on_raw_and_preprocess_is_allowed(running_stack):
    bootstrap(running_stack)
    resource = _resource(running_stack)
    full_name = resource.table_name(RAW_TABLE)
    location = (running_stack.warehouse / "raw" / "risk_factors").as_uri()
    resource.client(Principal.INGEST).register_external_table(
        full_name, location, [ColumnInfo("accession_number", "STRING", "string", 0, False)])
    admin = OssCatalogClient(running_stack.settings.uc_url, running_stack.admin_token(), "admin")
    apply_governance(admin, running_stack.settings.catalog_name, BootstrapReport())
    with pytest.raises(CatalogPermissionError) as refused:
        resource.client(Principal.TRAIN).temporary_table_credentials(full_name, "READ")
    message = str(refused.value)
    assert "train" in message and full_name in message and "SELECT" in message
    vended = resource.client(Principal.PREPROCESS).temporary_table_credentials(full_name, "READ")
    assert vended.location.rstrip("/").endswith("raw/risk_factors")
