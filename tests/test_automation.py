"""Downstream refresh on the raw table's Delta version (changes outside Dagster included) and the retraining policy."""

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from aws_fixtures import BUCKET, CATALOG, application_id, start_world
from conftest import free_port
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.refresh import RetrainPolicy, retrain_due
from governed_ft_dagster.defs.sensors import raw_table_version_sensor, retraining_sensor
from governed_ft_dagster.settings import SettingsError, load_settings

RAW_LOCATION = f"s3://{BUCKET}/raw/tables/risk_factors"
CURATED_LOCATION = f"s3://{BUCKET}/curated/tables/risk_factor_instructions"


@pytest.fixture
def world(monkeypatch):
    world, server = start_world(monkeypatch, free_port())
    yield world
    world.databricks.stop()
    server.stop()


def options(world) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}


def append(world, location: str, n: int, start: int = 0) -> None:
    rows = pa.table({"accession_number": [f"a-{i}" for i in range(start, start + n)]})
    write_deltalake(location, rows, mode="append", storage_options=options(world))


def tick(sensor, world, instance, cursor):
    context = dg.build_sensor_context(cursor=cursor, instance=instance,
                                      resources={"catalog": world.catalog_resource()})
    return sensor(context), context.cursor


def test_a_new_raw_version_written_outside_dagster_requests_curation_once(world):
    append(world, RAW_LOCATION, 3)
    world.databricks.add_table(f"{CATALOG}.raw.risk_factors", RAW_LOCATION, owner=application_id(Principal.INGEST))
    world.databricks.grant("table", f"{CATALOG}.raw.risk_factors", application_id(Principal.PREPROCESS), "SELECT")
    with dg.DagsterInstance.ephemeral() as instance:
        first, cursor = tick(raw_table_version_sensor, world, instance, None)
        assert isinstance(first, dg.RunRequest) and first.run_key == "raw-v0"
        again, cursor = tick(raw_table_version_sensor, world, instance, cursor)
        assert isinstance(again, dg.SkipReason)
        append(world, RAW_LOCATION, 2, start=3)
        moved, cursor = tick(raw_table_version_sensor, world, instance, cursor)
        assert isinstance(moved, dg.RunRequest) and moved.run_key == "raw-v1"


def test_retraining_follows_the_policy_not_every_change(world):
    append(world, CURATED_LOCATION, 10)
    world.databricks.add_table(f"{CATALOG}.curated.risk_factor_instructions", CURATED_LOCATION,
                               owner=application_id(Principal.PREPROCESS))
    world.databricks.grant("table", f"{CATALOG}.curated.risk_factor_instructions", application_id(Principal.TRAIN), "SELECT")
    with dg.DagsterInstance.ephemeral() as instance:
        idle, _ = tick(retraining_sensor(load_settings({})), world, instance, None)
        assert isinstance(idle, dg.SkipReason) and "on_demand" in str(idle.skip_message)
        sensor = retraining_sensor(load_settings({"GOVERNED_FT_RETRAIN_POLICY": "new_data:5"}))

        @dg.asset(name="finetuned_lora_model")
        def trained():
            return dg.MaterializeResult(metadata={"source_version": 0})

        assert dg.materialize([trained], instance=instance).success
        baseline, cursor = tick(sensor, world, instance, None)
        assert isinstance(baseline, dg.SkipReason) and "baseline" in str(baseline.skip_message)
        append(world, CURATED_LOCATION, 3, start=10)
        few, cursor = tick(sensor, world, instance, cursor)
        assert isinstance(few, dg.SkipReason) and "3 new curated records" in str(few.skip_message)
        append(world, CURATED_LOCATION, 3, start=13)
        enough, cursor = tick(sensor, world, instance, cursor)
        assert isinstance(enough, dg.RunRequest)
        after, cursor = tick(sensor, world, instance, cursor)
        assert isinstance(after, dg.SkipReason)


def test_policy_parsing():
    assert RetrainPolicy.parse("new_data:500").min_new_records == 500
    assert RetrainPolicy.parse("schedule:0 3 * * 0").cron == "0 3 * * 0"
    assert not retrain_due(RetrainPolicy.parse("on_demand"), 0, 10_000)
    assert retrain_due(RetrainPolicy.parse("new_data:5"), None, 1)
    with pytest.raises(SettingsError, match="is not a policy"):
        load_settings({"GOVERNED_FT_RETRAIN_POLICY": "always"})


AUTOMATION_STATUS = """
from governed_ft_dagster.definitions import defs
repo = defs.get_repository_def()
for s in repo.schedule_defs:
    print("schedule", s.name, s.default_status.value)
for s in repo.sensor_defs:
    print("sensor", s.name, s.default_status.value)
"""


@pytest.mark.parametrize("policy, running", [
    ("on_demand", set()),
    ("new_data:500", {"sensor retraining_sensor"}),
    ("schedule:0 3 * * 1", {"schedule retraining_schedule"}),
])
def test_only_the_automation_of_the_chosen_retraining_policy_starts_on(policy, running, tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GOVERNED_FT_")}
    env.update(GOVERNED_FT_RETRAIN_POLICY=policy, GOVERNED_FT_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", AUTOMATION_STATUS], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    statuses = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    assert {"sensor new_filings_sensor", "sensor raw_table_version_sensor", "schedule edgar_refresh_schedule"} <= set(statuses)
    assert {name for name, status in statuses.items() if status == "RUNNING"} == running
