"""Against the real open-source catalog server: bootstrap, restart, refusal and permission."""

from __future__ import annotations

import json
import logging
import re

import dagster as dg
import pytest

from governed_ft_dagster.catalog.base import CatalogPermissionError, ColumnInfo, Principal
from governed_ft_dagster.governance import RAW_TABLE
from governed_ft_dagster.defs.resources.catalog import LocalCatalogResource
from governed_ft_dagster.stack.bootstrap import apply_governance, bootstrap, BootstrapReport
from governed_ft_dagster.stack.inventory import catalog_inventory
from governed_ft_dagster.catalog.oss import OssCatalogClient


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


@pytest.fixture(scope="module")
def stoppable_stack(tmp_path_factory, uc_server_jars):
    """A catalog server of this module's own: its tests stop and start it (each leaves it running)."""
    from conftest import free_port, link_group
    from governed_ft_dagster.settings import load_settings
    from governed_ft_dagster.stack.local import LocalStack

    stack = LocalStack(load_settings({"GOVERNED_FT_HOME": str(tmp_path_factory.mktemp("stoppable") / "state"),
                                      "GOVERNED_FT_UC_PORT": str(free_port()), "GOVERNED_FT_DEPLOYMENT": "local"}))
    link_group(stack.home, uc_server_jars, "uc-server")
    stack.up()
    yield stack
    stack.down()


def test_state_survives_a_stop_and_start(stoppable_stack):
    bootstrap(stoppable_stack)
    before = catalog_inventory(stoppable_stack)
    assert stoppable_stack.down()
    stoppable_stack.up()
    assert catalog_inventory(stoppable_stack) == before
    assert not bootstrap(stoppable_stack).changed


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


class StopCatalogWhenExtracted(logging.Handler):
    """Stops the catalog server, from inside the run, once every filing is landed and before the Delta merge."""

    def __init__(self, stack):
        super().__init__()
        self.stack, self.stopped = stack, False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not self.stopped and re.search(r"extracted (\d+)/\1 filings", message):
            self.stopped = self.stack.down()


def test_the_catalog_stopped_mid_ingest_fails_the_run_and_the_rerun_loses_and_duplicates_nothing(stoppable_stack):
    from deltalake import DeltaTable

    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.partitions import raw_partitions
    from governed_ft_dagster.defs.resources import local_resources

    raw_risk_factors = raw_risk_factors_asset(raw_partitions((2023, 2024)))
    bootstrap(stoppable_stack)
    stopper = StopCatalogWhenExtracted(stoppable_stack)

    @dg.logger
    def catalog_stopper(init_context) -> logging.Logger:
        logger = logging.Logger("catalog-stopper", level=logging.INFO)
        logger.addHandler(stopper)
        return logger

    resources = {k: v for k, v in local_resources(stoppable_stack.settings).items() if k in ("catalog", "edgar")}
    job = dg.define_asset_job("raw_job", selection=[raw_risk_factors])
    defs = dg.Definitions(assets=[raw_risk_factors], jobs=[job], resources=resources,
                          loggers={"catalog_stopper": catalog_stopper})
    run = lambda: defs.resolve_job_def("raw_job").execute_in_process(  # noqa: E731
        partition_key="2024|10-K", raise_on_error=False, run_config={"loggers": {"catalog_stopper": {}}})
    failed = run()
    assert stopper.stopped and not failed.success
    message = failed.get_step_failure_events()[0].event_specific_data.error.message
    assert "did not answer" in message and "governed-ft stack up" in message
    landing = stoppable_stack.warehouse / "raw" / "risk_factors"
    landed = sorted(json.loads(p.read_text())["accession_number"] for p in landing.rglob("*.json"))
    assert landed and not (stoppable_stack.warehouse / "raw" / "tables" / "risk_factors").exists()

    stoppable_stack.up()
    assert run().success
    rows = DeltaTable(str(stoppable_stack.warehouse / "raw" / "tables" / "risk_factors")).to_pyarrow_table()
    accessions = rows.column("accession_number").to_pylist()
    assert sorted(accessions) == landed and len(set(accessions)) == len(accessions)
    catalog = resources["catalog"]
    table = catalog.client(Principal.PREPROCESS).get_table(catalog.table_name(RAW_TABLE))
    assert table.storage_location.rstrip("/").endswith("raw/tables/risk_factors")
    again = run()
    assert again.asset_materializations_for_node("raw_risk_factors")[0].metadata["rows_inserted"].value == 0


def test_a_port_taken_after_the_check_stops_the_start_in_one_sentence_and_leaves_no_server(local_stack,
                                                                                          uc_server_jars):
    import socket
    import time

    from conftest import link_group
    from governed_ft_dagster.stack import server
    from governed_ft_dagster.stack.errors import StackError

    link_group(local_stack.home, uc_server_jars, "uc-server")
    port = local_stack.settings.uc_port
    with socket.socket() as held:
        held.bind(("127.0.0.1", port + 1))  # bound but not listening: the pre-start check cannot see it
        started = time.monotonic()
        with pytest.raises(StackError, match=f"took port {port} or {port + 1}"):
            local_stack.up()
    assert time.monotonic() - started < 60
    assert server.read_pid(local_stack.server_paths) is None
