"""Declarative automation: the raw table's Delta version observed (writers outside Dagster included), curation and
retraining as automation conditions, each off until chosen."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from aws_fixtures import BUCKET, CATALOG, application_id, start_world
from conftest import free_port
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.defs.automation import CURATED, RAW_TABLE_VERSION, REGISTERED, TRAINED, raw_table_version
from governed_ft_dagster.defs.build import build_defs
from governed_ft_dagster.refresh import RetrainPolicy, retrain_due
from governed_ft_dagster.settings import SettingsError, load_settings

RAW_LOCATION = f"s3://{BUCKET}/raw/tables/risk_factors"
CONTRACTS = ("curated_schema", "curated_messages_complete", "curated_token_budget", "curated_split_by_company",
             "curated_count_against_raw")


@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


def append(world, n: int, start: int = 0) -> None:
    rows = pa.table({"accession_number": [f"a-{i}" for i in range(start, start + n)]})
    options = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}
    write_deltalake(RAW_LOCATION, rows, mode="append", storage_options=options)


class Ticks:
    """The automation sensor's evaluations, one call per tick, the cursor carried from one to the next."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None
        self.time = dt.datetime(2026, 1, 5, 6, 1, tzinfo=dt.timezone.utc)

    def __call__(self, minutes: float = 0.5) -> dict[str, int]:
        self.time += dt.timedelta(minutes=minutes)
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                   evaluation_time=self.time)
        self.cursor = result.cursor
        return {key.to_user_string(): n for key in (RAW_TABLE_VERSION, CURATED, TRAINED, REGISTERED)
                if (n := result.get_num_requested(key))}


def test_a_raw_version_written_outside_dagster_is_observed_and_curation_requested_once(world):
    append(world, 3)
    world.databricks.add_table(f"{CATALOG}.raw.risk_factors", RAW_LOCATION, owner=application_id(Principal.INGEST))
    world.databricks.grant("table", f"{CATALOG}.raw.risk_factors", application_id(Principal.PREPROCESS), "SELECT")
    observer = dg.Definitions(assets=[raw_table_version], resources={"catalog": world.catalog_resource()},
                              jobs=[dg.define_asset_job("observe", selection=[RAW_TABLE_VERSION])])
    with dg.DagsterInstance.ephemeral() as instance:
        def observe() -> str:
            result = observer.resolve_job_def("observe").execute_in_process(instance=instance)
            (observation,) = result.asset_observations_for_node(RAW_TABLE_VERSION.to_user_string())
            return observation.tags["dagster/data_version"]

        tick = Ticks(build_defs(load_settings({})), instance)
        assert tick() == {}
        assert tick(minutes=5) == {"raw_table_version": 1}  # observed every 5 minutes
        assert observe() == "0"
        assert tick() == {"curated_training_table": 1}
        assert observe() == "0"
        assert tick() == {}  # the same version again requests nothing
        append(world, 2, start=3)  # a writer outside Dagster
        assert observe() == "1"
        assert tick() == {"curated_training_table": 1}
        assert tick() == {}


def stub_assets(rows: dict[str, int]) -> list[dg.AssetsDefinition]:
    """Curated (its blocking contracts passed) and adapter materializations, without any job."""

    @dg.asset(key=CURATED, check_specs=[dg.AssetCheckSpec(name, asset=CURATED) for name in CONTRACTS])
    def curated():
        return dg.MaterializeResult(metadata={"rows_out": rows["curated"]}, check_results=[
            dg.AssetCheckResult(check_name=name, passed=True) for name in CONTRACTS])

    @dg.asset(key=TRAINED, deps=[CURATED])
    def trained():
        return dg.MaterializeResult(metadata={"job_run_id": "lora"})

    return [curated, trained]


def test_retraining_follows_the_policy_not_every_change():
    rows = {"curated": 10}
    stubs = stub_assets(rows)
    with dg.DagsterInstance.ephemeral() as instance:
        tick = Ticks(build_defs(load_settings({"GOVERNED_FT_RETRAIN_POLICY": "new_data:5"})), instance)
        on_demand = Ticks(build_defs(load_settings({})), instance)
        assert tick() == {} and on_demand() == {}
        assert dg.materialize(stubs, instance=instance).success  # trained on 10 records
        assert tick() == {"uc_model_version": 1} and on_demand() == {}  # a new adapter is registered
        rows["curated"] = 13
        assert dg.materialize(stubs, selection=[CURATED], instance=instance).success
        assert TRAINED.to_user_string() not in tick() and on_demand() == {}  # 3 new records: not enough
        rows["curated"] = 16
        assert dg.materialize(stubs, selection=[CURATED], instance=instance).success
        assert tick() == {"finetuned_lora_model": 1, "uc_model_version": 1}  # 6 new: retrain, then register
        assert on_demand() == {}
        assert tick() == {}  # requested once


def test_policy_parsing():
    assert RetrainPolicy.parse("new_data:500").min_new_records == 500
    assert RetrainPolicy.parse("schedule:0 3 * * 0").cron == "0 3 * * 0"
    assert not retrain_due(RetrainPolicy.parse("on_demand"), 0, 10_000)
    assert retrain_due(RetrainPolicy.parse("new_data:5"), None, 1)
    with pytest.raises(SettingsError, match="is not a policy"):
        load_settings({"GOVERNED_FT_RETRAIN_POLICY": "always"})


@pytest.mark.parametrize("policy, running", [
    ("on_demand", set()),
    ("new_data:500", {"sensor retraining_automation"}),
    ("schedule:0 3 * * 1", {"sensor retraining_automation"}),
])
def test_only_the_automation_of_the_chosen_retraining_policy_starts_on(policy, running):
    repo = build_defs(load_settings({"GOVERNED_FT_RETRAIN_POLICY": policy})).get_repository_def()
    statuses = {f"schedule {s.name}": s.default_status.value for s in repo.schedule_defs}
    statuses.update({f"sensor {s.name}": s.default_status.value for s in repo.sensor_defs})
    assert set(statuses) == {"sensor new_filings_sensor", "sensor curation_automation",
                             "sensor retraining_automation", "schedule edgar_refresh_schedule"}
    assert {name for name, status in statuses.items() if status == "RUNNING"} == running
    condition = repo.asset_graph.get(TRAINED).automation_condition
    assert (condition is None) == (policy == "on_demand")
