"""`governed-ft catalog plan|apply|destroy` against the fake Databricks workspace, secrets and roles in moto."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import boto3
import pytest
import requests
from click.testing import CliRunner, Result
from moto.server import ThreadedMotoServer

from conftest import free_port
from fake_databricks import FakeDatabricks
from governed_ft_dagster.catalog.base import Principal, Privilege
from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient
from governed_ft_dagster.cli.provision import catalog_group
from governed_ft_dagster.provision.aws import AwsProvisioner
from governed_ft_dagster.provision.policies import StackConfig

REGION = "us-east-1"
STACK = "gft"
CATALOG = "governed_ft"
ADMIN_ID, ADMIN_SECRET = "admin-app", "admin-oauth-secret-3c4d5e6f"
UC = "/api/2.1/unity-catalog"
ACCOUNT = "123456789012"
DATA_BUCKET = f"{STACK}-data-{ACCOUNT}-{REGION}"

# The exact grants, written out by hand: governance.GRANTS on catalog and schemas, plus the location grants.
METASTORE = "metastore/<id>"  # the fake's metastore id replaces <id>
EXPECTED_PATCHES: dict[str, dict[str, dict[str, list[str]]]] = {
    f"catalog/{CATALOG}": {role: {"add": ["USE_CATALOG"]} for role in ("ingest", "preprocess", "train", "registrar")},
    f"schema/{CATALOG}.raw": {"ingest": {"add": ["CREATE_TABLE", "EXTERNAL_USE_SCHEMA", "MODIFY", "USE_SCHEMA"]},
                              "preprocess": {"add": ["EXTERNAL_USE_SCHEMA", "USE_SCHEMA"]}},
    f"schema/{CATALOG}.curated": {"preprocess": {"add": ["CREATE_TABLE", "EXTERNAL_USE_SCHEMA", "MODIFY",
                                                         "USE_SCHEMA"]},
                                  "train": {"add": ["EXTERNAL_USE_SCHEMA", "USE_SCHEMA"]}},
    f"schema/{CATALOG}.ml": {"train": {"add": ["USE_SCHEMA"]}, "registrar": {"add": ["CREATE_MODEL", "USE_SCHEMA"]}},
    METASTORE: {"registrar": {"add": ["CREATE_EXTERNAL_METADATA"]}},
    "external_location/gft_raw": {"ingest": {"add": ["CREATE_EXTERNAL_TABLE", "EXTERNAL_USE_LOCATION", "READ_FILES",
                                                     "WRITE_FILES"]}},
    "external_location/gft_curated": {"preprocess": {"add": ["CREATE_EXTERNAL_TABLE", "EXTERNAL_USE_LOCATION",
                                                             "READ_FILES", "WRITE_FILES"]}},
    "external_location/gft_ml": {"train": {"add": ["EXTERNAL_USE_LOCATION", "READ_FILES", "WRITE_FILES"]},
                                 "registrar": {"add": ["EXTERNAL_USE_LOCATION", "READ_FILES"]}},
}


def expected_patches(metastore_id: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    return {key.replace("<id>", metastore_id): value for key, value in EXPECTED_PATCHES.items()}


TABLE_PATCHES = {
    f"table/{CATALOG}.raw.risk_factors": {"preprocess": {"add": ["SELECT"]}},
    f"table/{CATALOG}.curated.risk_factor_instructions": {"train": {"add": ["SELECT"]}},
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def world(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator["World"]:
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with FakeDatabricks() as fake:
        fake.add_service_principal(ADMIN_ID, ADMIN_SECRET, admin=True)
        world = World(moto_url, fake)
        world.aws_apply(fake.account_id)
        yield world


class World:
    """moto with the AWS stack applied, and the fake workspace with an admin service principal."""

    def __init__(self, moto_url: str, fake: FakeDatabricks):
        self.moto_url = moto_url
        self.fake = fake

    def boto(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def aws_apply(self, external_id: str) -> None:
        cfg = StackConfig(name=STACK, region=REGION, uc_external_id=external_id)
        AwsProvisioner(cfg, endpoint_url=self.moto_url).apply()

    def run(self, *args: str) -> Result:
        env = {"GOVERNED_FT_AWS_ENDPOINT_URL": self.moto_url, "AWS_REGION": REGION, "GOVERNED_FT_STACK": STACK,
               "DATABRICKS_HOST": self.fake.url, "DATABRICKS_CLIENT_ID": ADMIN_ID,
               "DATABRICKS_CLIENT_SECRET": ADMIN_SECRET, "DATABRICKS_TOKEN": None, "DATABRICKS_CONFIG_PROFILE": None,
               "DATABRICKS_CONFIG_FILE": "/nonexistent/databrickscfg"}
        return CliRunner().invoke(catalog_group, list(args), env=env, catch_exceptions=False)

    def run_json(self, *args: str) -> dict[str, Any]:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    def secret(self, role: str) -> dict[str, str]:
        return json.loads(self.boto("secretsmanager").get_secret_value(SecretId=f"{STACK}/{role}")["SecretString"])

    def app_ids(self) -> dict[str, str]:
        return {role.value: self.secret(role.value)["client_id"] for role in Principal}

    def patches(self) -> dict[str, dict[str, dict[str, list[str]]]]:
        """PATCH bodies per securable, principals mapped back to their roles."""
        roles = {v: k for k, v in self.app_ids().items()}
        out: dict[str, dict[str, dict[str, list[str]]]] = {}
        for call in self.fake.calls(f"{UC}/permissions/"):
            if call.method != "PATCH":
                continue
            key = call.path.removeprefix(f"{UC}/permissions/")
            assert key not in out, f"two PATCHes on {key}"
            changes = call.body["changes"]
            assert [c["principal"] for c in changes] == sorted(c["principal"] for c in changes)
            out[key] = {roles.get(c["principal"], c["principal"]): {k: v for k, v in c.items() if k != "principal"}
                        for c in changes}
        return out

    def writes(self) -> list[str]:
        return [p for p in self.fake.paths("/api/") if not p.startswith("GET ")]


def test_plan_is_read_only_and_shows_the_grant_diff(world: World) -> None:
    report = world.run_json("plan")
    assert world.writes() == []
    assert {(o["kind"], o["action"]) for o in report["objects"]} == {
        ("storage-credential", "create"), ("external-location", "create"), ("catalog", "create"),
        ("schema", "create"), ("service-principal", "create")}
    diff = {(g["securable_type"], g["full_name"], g["role"]): g["add"] for g in report["grants"]}
    expected = {tuple(key.split("/", 1)) + (role,): change["add"]
                for key, by_role in expected_patches(world.fake.metastore_id).items()
                for role, change in by_role.items()}
    assert diff == expected
    assert all(g["principal"] == f"<new {STACK}-{g['role']}>" and not g["remove"] for g in report["grants"])
    human = world.run("plan")
    assert f"grant  EXTERNAL_USE_SCHEMA, USE_SCHEMA on schema {CATALOG}.curated to train (<new {STACK}-train>)" \
        in human.stdout


def test_apply_creates_the_objects_and_exactly_the_grants(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="databricks.sdk")
    result = world.run("apply")
    assert result.exit_code == 0, result.stderr
    fake = world.fake
    assert fake.storage_credentials["gft_storage"]["aws_iam_role"]["role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/gft-uc-storage"
    assert {n: loc["url"] for n, loc in fake.external_locations.items()} == {
        f"gft_{p}": f"s3://{DATA_BUCKET}/{p}" for p in ("raw", "curated", "ml")}
    assert fake.catalogs[CATALOG]["storage_root"] == f"s3://{DATA_BUCKET}/ml/uc-managed"
    assert sorted(fake.schemas) == [f"{CATALOG}.curated", f"{CATALOG}.ml", f"{CATALOG}.raw"]
    assert sorted(sp["displayName"] for sp in fake.service_principals.values()) == [
        "gft-ingest", "gft-preprocess", "gft-registrar", "gft-train"]
    assert world.patches() == expected_patches(world.fake.metastore_id)
    for role, app_id in world.app_ids().items():
        sp = next(sp for sp in fake.service_principals.values() if sp["applicationId"] == app_id)
        assert sp["displayName"] == f"gft-{role}"
        assert world.secret(role)["client_secret"] == fake.clients[app_id]
    assert "/credentials/secrets" in caplog.text  # the SDK dumped the create-secret round trip
    for secret in fake.clients.values():
        assert secret not in result.stdout and secret not in result.stderr and secret not in caplog.text


def test_reapplying_changes_nothing(world: World) -> None:
    world.run_json("apply")
    world.fake.clear_requests()
    again = world.run_json("apply")
    assert not again["changed"] and again["grants"] == []
    assert {o["action"] for o in again["objects"]} == {"no-change"}
    assert world.writes() == []
    assert world.run("plan").stdout.rstrip().endswith("no changes")


def test_table_grants_are_reconciled_once_the_tables_exist(world: World) -> None:
    world.run_json("apply")
    world.fake.add_table(f"{CATALOG}.raw.risk_factors", f"s3://{DATA_BUCKET}/raw/tables/risk_factors")
    world.fake.add_table(f"{CATALOG}.curated.risk_factor_instructions",
                         f"s3://{DATA_BUCKET}/curated/tables/risk_factor_instructions")
    world.fake.clear_requests()
    world.run_json("apply")
    assert world.patches() == TABLE_PATCHES


def test_a_grant_added_by_hand_is_removed_by_apply(world: World) -> None:
    world.run_json("apply")
    ids = world.app_ids()
    world.fake.grant("schema", f"{CATALOG}.curated", ids["train"], "MODIFY", "CREATE_TABLE")
    world.fake.grant("external_location", "gft_raw", ids["preprocess"], "WRITE_FILES")
    world.fake.grant("catalog", CATALOG, ids["ingest"], "ALL_PRIVILEGES")
    world.fake.grant("schema", f"{CATALOG}.raw", "data-scientists", "SELECT")
    world.fake.clear_requests()
    plan = world.run("plan")
    assert f"revoke CREATE_TABLE, MODIFY on schema {CATALOG}.curated from train ({ids['train']})" in plan.stdout
    assert world.writes() == []
    world.run_json("apply")
    assert world.patches() == {
        f"catalog/{CATALOG}": {"ingest": {"remove": ["ALL_PRIVILEGES"]}},
        f"schema/{CATALOG}.curated": {"train": {"remove": ["CREATE_TABLE", "MODIFY"]}},
        "external_location/gft_raw": {"preprocess": {"remove": ["WRITE_FILES"]}},
    }
    assert world.fake.grants[("schema", f"{CATALOG}.curated")][ids["train"]] == {"EXTERNAL_USE_SCHEMA", "USE_SCHEMA"}
    assert world.fake.grants[("schema", f"{CATALOG}.raw")]["data-scientists"] == {"SELECT"}  # not a stack principal
    world.fake.clear_requests()
    assert not world.run_json("apply")["changed"] and world.writes() == []


def test_the_principals_sign_in_with_their_stored_secrets_and_hold_their_grants(world: World) -> None:
    world.run_json("apply")
    train = DatabricksCatalogClient.from_aws_secret(world.fake.url, "train", f"{STACK}/train", REGION,
                                                    catalog=CATALOG, endpoint_url=world.moto_url, timeout_s=5)
    assert train.effective_privileges("schema", "curated", train.client_id) == {
        Privilege.USE_SCHEMA, Privilege.USE_CATALOG, Privilege.EXTERNAL_USE_SCHEMA}
    assert train.effective_privileges("schema", "raw", train.client_id) == {Privilege.USE_CATALOG}


def test_existing_service_principals_and_secrets_are_used_not_replaced(world: World) -> None:
    world.fake.add_service_principal("pre-made-ingest", "pre-made-ingest-secret-1a2b")
    world.fake.service_principals["42"] = {"id": "42", "applicationId": "pre-made-ingest", "displayName": "ingest-bot"}
    stored = {"client_id": "pre-made-ingest", "client_secret": "pre-made-ingest-secret-1a2b"}
    world.boto("secretsmanager").put_secret_value(SecretId=f"{STACK}/ingest", SecretString=json.dumps(stored))
    result = world.run("apply")
    assert result.exit_code == 0 and "pre-made-ingest-secret-1a2b" not in result.output
    assert world.secret("ingest") == stored
    assert world.patches()[f"schema/{CATALOG}.raw"]["ingest"] == {
        "add": ["CREATE_TABLE", "EXTERNAL_USE_SCHEMA", "MODIFY", "USE_SCHEMA"]}
    assert len(world.fake.service_principals) == 4
    report = world.run_json("destroy", "--yes")
    kept = {o["name"]: o["action"] for o in report["objects"] if o["kind"] == "service-principal"}
    assert kept["gft-ingest (pre-made-ingest)"] == "keep"
    assert "42" in world.fake.service_principals and world.secret("ingest") == stored


def test_destroy_removes_grants_objects_and_the_principals_it_created(world: World) -> None:
    world.run_json("apply")
    ids = world.app_ids()
    world.fake.add_table(f"{CATALOG}.raw.risk_factors", f"s3://{DATA_BUCKET}/raw/tables/risk_factors")
    kept = world.run_json("destroy", "--yes")
    objects = {(o["kind"], o["name"]): o["action"] for o in kept["objects"]}
    assert objects[("schema", f"{CATALOG}.raw")] == "keep" and objects[("schema", f"{CATALOG}.ml")] == "delete"
    assert objects[("catalog", CATALOG)] == "keep" and objects[("external-location", "gft_raw")] == "keep"
    assert all(not held for grants in world.fake.grants.values() for p, held in grants.items() if p in ids.values())
    assert world.fake.service_principals == {} and world.secret("train") == {"client_id": "", "client_secret": ""}
    gone = world.run_json("destroy", "--yes", "--force")
    assert {(o["kind"], o["action"]) for o in gone["objects"] if o["action"] == "delete"} == {
        ("schema", "delete"), ("catalog", "delete"), ("external-location", "delete"), ("storage-credential", "delete")}
    assert world.fake.catalogs == {} and world.fake.schemas == {} and world.fake.tables == {}
    assert world.fake.external_locations == {} and world.fake.storage_credentials == {}
    assert not world.run_json("destroy", "--yes")["changed"]


def test_a_storage_role_that_does_not_trust_the_credential_stops_with_the_fix(world: World) -> None:
    world.aws_apply("0000")
    result = world.run("apply")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: storage role gft-uc-storage trusts external id 0000 but storage credential gft_storage uses "
        f"{world.fake.account_id}; run `governed-ft aws apply --stack gft --region {REGION} --uc-external-id "
        f"{world.fake.account_id}`, then re-run `governed-ft catalog apply`")
    assert "gft_storage" in world.fake.storage_credentials and world.fake.external_locations == {}
    world.aws_apply(world.fake.account_id)
    assert world.run("apply").exit_code == 0 and len(world.fake.external_locations) == 3


def test_a_non_admin_caller_gets_one_readable_line(world: World) -> None:
    world.fake.add_service_principal("not-admin", "not-admin-secret-9z8y")
    env_result = CliRunner().invoke(catalog_group, ["apply"], env={
        "GOVERNED_FT_AWS_ENDPOINT_URL": world.moto_url, "AWS_REGION": REGION, "GOVERNED_FT_STACK": STACK,
        "DATABRICKS_HOST": world.fake.url, "DATABRICKS_CLIENT_ID": "not-admin",
        "DATABRICKS_CLIENT_SECRET": "not-admin-secret-9z8y", "DATABRICKS_CONFIG_FILE": "/nonexistent/databrickscfg"})
    assert env_result.exit_code == 1
    assert env_result.stderr.startswith(f"error: Databricks at {world.fake.url} refused reading storage credential gft_storage")
    assert env_result.stderr.count("\n") == 1 and "not-admin-secret-9z8y" not in env_result.stderr


def test_an_unreachable_workspace_fails_fast(world: World) -> None:
    result = CliRunner().invoke(catalog_group, ["plan"], env={
        "GOVERNED_FT_AWS_ENDPOINT_URL": world.moto_url, "AWS_REGION": REGION,
        "DATABRICKS_HOST": f"http://127.0.0.1:{free_port()}", "DATABRICKS_CONFIG_FILE": "/nonexistent/databrickscfg"})
    assert result.exit_code == 1 and "is unreachable" in result.stderr
