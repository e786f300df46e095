"""What the workspace refuses, as Databricks refuses it, and the one sentence the operator reads for each refusal.

Every refusal goes through the pipeline's own code: DatabricksCatalogClient, the lineage sink and the lineage reader
against the fake workspace. The fake's rules and texts cite Databricks' documentation and the SDK (see
fake_databricks.py and fake_lineage.py); the sentences checked here are the pipeline's."""

from __future__ import annotations

from typing import Iterator

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config

from fake_databricks import FakeDatabricks
from fake_lineage import FakeLineageService
from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError, ColumnInfo, Privilege
from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient
from governed_ft_dagster.cli.lineage import graph_from_databricks
from governed_ft_dagster.defs.resources.registry import databricks_lineage_errors
from governed_ft_dagster.lineage.derive import Endpoint, ExternalMetadata, LineageGraph, Relationship
from governed_ft_dagster.lineage.sinks import DatabricksLineageSink, LineageSinkError

RAW, CURATED = "main.raw.filings", "main.curated.train_set"
RAW_URL, CURATED_URL = "s3://lake/raw/filings", "s3://lake/curated/train_set"
MODEL = "main.ml.adapter"
SECRETS = {role: f"planted-{role}-secret-4d1e" for role in ("owner", "reader", "registrar", "admin")}
COLUMNS = [ColumnInfo("cik", "STRING", "string", 0)]


@pytest.fixture
def fake() -> Iterator[FakeDatabricks]:
    """main.raw and main.curated over two external locations; `owner` owns the tables, `reader` may read them."""
    with FakeDatabricks() as server:
        for role, secret in SECRETS.items():
            server.add_service_principal(f"app-{role}", secret, admin=role == "admin")
            server.grant("catalog", "main", f"app-{role}", "USE_CATALOG")
        for schema in ("raw", "curated"):
            server.add_external_location(f"lake_{schema}", f"s3://lake/{schema}")
            server.grant("schema", f"main.{schema}", "app-owner", "USE_SCHEMA", "CREATE_TABLE", "MODIFY",
                         "EXTERNAL_USE_SCHEMA")
            server.grant("external_location", f"lake_{schema}", "app-owner", "CREATE_EXTERNAL_TABLE", "READ_FILES",
                         "WRITE_FILES", "EXTERNAL_USE_LOCATION")
        server.add_table(RAW, RAW_URL, owner="app-owner")
        server.add_table(CURATED, CURATED_URL, owner="app-owner")
        server.grant("schema", "main.raw", "app-reader", "USE_SCHEMA", "EXTERNAL_USE_SCHEMA")
        server.grant("table", RAW, "app-reader", "SELECT")
        yield server


def client(fake: FakeDatabricks, role: str) -> DatabricksCatalogClient:
    return DatabricksCatalogClient(fake.url, role, f"app-{role}", SECRETS[role], catalog="main", timeout_s=5,
                                   retry_timeout_s=5)


def workspace(fake: FakeDatabricks, role: str) -> WorkspaceClient:
    return WorkspaceClient(config=Config(
        host=fake.url, client_id=f"app-{role}", client_secret=SECRETS[role], auth_type="oauth-m2m",
        discovery_url=f"{fake.url}/oidc/.well-known/oauth-authorization-server", http_timeout_seconds=5,
        retry_timeout_seconds=5))


def one_sentence(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and "Config:" not in message
    assert not any(secret in message for secret in SECRETS.values())


# ---- OAuth tokens end by time ---------------------------------------------------------------------------------


def test_an_oauth_token_ends_by_the_workspace_clock_and_the_operator_is_told_to_check_the_clock(fake):
    reader = client(fake, "reader")
    assert reader.get_table(RAW).table_id
    (token,) = [t for t, owner in fake.tokens.items() if owner == "app-reader"]
    fake.advance(fake.token_ttl_s + 1)  # the workspace's clock is past the token's end; this machine's is not

    with pytest.raises(CatalogError) as refused:
        reader.get_table(RAW)

    message = str(refused.value)
    one_sentence(message)
    assert message.startswith(f"Databricks at {fake.url} refused principal 'reader' (client id app-reader) for "
                              f"reading table {RAW}: its OAuth token has expired")
    assert "JWT has expired" in message and "clock" in message and "retry" in message
    assert fake.tokens[token] == "app-reader"  # ended by time, not deleted
    assert client(fake, "reader").get_table(RAW).table_id  # a new sign-in takes a new token


# ---- EXTERNAL USE is granted explicitly, never held through ownership or ALL PRIVILEGES ------------------------


def test_owning_a_table_or_all_privileges_on_its_schema_does_not_confer_external_use_schema(fake):
    fake.revoke("schema", "main.curated", "app-owner", "EXTERNAL_USE_SCHEMA")
    fake.grant("schema", "main.curated", "app-owner", "ALL_PRIVILEGES")
    owner = client(fake, "owner")

    with pytest.raises(CatalogPermissionError) as refused:
        owner.temporary_table_credentials(CURATED, "READ_WRITE")

    message = str(refused.value)
    one_sentence(message)
    assert refused.value.privileges == ("EXTERNAL USE SCHEMA",) and refused.value.securable == "schema main.curated"
    assert message.startswith(f"principal 'owner' lacks EXTERNAL USE SCHEMA on schema main.curated (needed for "
                              f"vending READ_WRITE credentials for table {CURATED}); grant it explicitly (ownership "
                              f"and ALL PRIVILEGES never include EXTERNAL USE SCHEMA) with `GRANT EXTERNAL USE SCHEMA "
                              f"ON SCHEMA main.curated TO `app-owner``")
    assert fake.vended == []
    # The preflight reads ALL PRIVILEGES the same way: it does not count EXTERNAL USE SCHEMA.
    with pytest.raises(CatalogPermissionError, match="EXTERNAL USE SCHEMA on schema main.curated"):
        client(fake, "admin").require("app-owner", [("schema", "main.curated", Privilege.EXTERNAL_USE_SCHEMA)])
    # Metastore admins do not hold it either.
    with pytest.raises(CatalogPermissionError, match="EXTERNAL USE SCHEMA"):
        client(fake, "admin").temporary_table_credentials(CURATED, "READ")


def test_owning_an_external_location_or_all_privileges_on_it_does_not_confer_external_use_location(fake):
    fake.add_external_location("landing", "s3://lake/landing", owner="app-owner")
    fake.grant("external_location", "landing", "app-reader", "ALL_PRIVILEGES")
    for role in ("owner", "reader"):
        with pytest.raises(CatalogPermissionError) as refused:
            client(fake, role).temporary_path_credentials("s3://lake/landing/2024", "PATH_READ")
        one_sentence(str(refused.value))
        assert (refused.value.securable, refused.value.privileges) == ("external_location landing",
                                                                       ("EXTERNAL USE LOCATION",))
        assert "`GRANT EXTERNAL USE LOCATION ON EXTERNAL LOCATION landing TO " in str(refused.value)
    assert fake.vended == []


# ---- CREATE TABLE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("securable_type, name, privilege, securable", [
    ("schema", "main.curated", "EXTERNAL_USE_SCHEMA", "schema main.curated"),
    ("external_location", "lake_curated", "EXTERNAL_USE_LOCATION", "external_location lake_curated"),
])
def test_creating_a_table_checks_external_use_schema_and_location(fake, securable_type, name, privilege, securable):
    fake.revoke(securable_type, name, "app-owner", privilege)
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "owner").register_external_table("curated.features", "s3://lake/curated/features", COLUMNS)
    one_sentence(str(refused.value))
    assert (refused.value.securable, refused.value.privileges) == (securable, (privilege.replace("_", " "),))
    assert "needed for registering table main.curated.features at s3://lake/curated/features" in str(refused.value)
    assert "main.curated.features" not in fake.tables


def test_creating_a_table_outside_every_external_location_is_refused(fake):
    with pytest.raises(CatalogError) as refused:
        client(fake, "owner").register_external_table("curated.stray", "s3://elsewhere/stray", COLUMNS)
    message = str(refused.value)
    one_sentence(message)
    assert message.startswith(f"no external location of the metastore at {fake.url} covers s3://elsewhere/stray, so "
                              "principal 'owner' was refused registering table main.curated.stray at "
                              "s3://elsewhere/stray; keep the data under the stack's external locations")
    assert "main.curated.stray" not in fake.tables


def test_creating_a_table_over_another_tables_location_is_refused(fake):
    for url in (f"{CURATED_URL}/part", "s3://lake/curated"):  # inside another table, and around one
        with pytest.raises(CatalogError) as refused:
            client(fake, "owner").register_external_table("curated.copy", url, COLUMNS)
        message = str(refused.value)
        one_sentence(message)
        assert message.startswith(f"principal 'owner' was refused registering table main.curated.copy at {url}: "
                                  f"{url} overlaps {CURATED}")
        assert "choose a location of its own" in message
    assert "main.curated.copy" not in fake.tables


# ---- path credentials under a table, and the metastore's switch --------------------------------------------------


def test_path_credentials_under_a_table_also_need_external_use_location(fake):
    reader = client(fake, "reader")
    assert reader.temporary_table_credentials(RAW, "READ").aws_access_key_id  # SELECT and EXTERNAL USE SCHEMA

    with pytest.raises(CatalogPermissionError) as refused:
        reader.temporary_path_credentials(f"{RAW_URL}/_delta_log", "PATH_READ")

    one_sentence(str(refused.value))
    assert (refused.value.securable, refused.value.privileges) == ("external_location lake_raw",
                                                                   ("EXTERNAL USE LOCATION",))
    assert f"needed for vending PATH_READ credentials for {RAW_URL}/_delta_log" in str(refused.value)
    fake.grant("external_location", "lake_raw", "app-reader", "EXTERNAL_USE_LOCATION")
    assert reader.temporary_path_credentials(f"{RAW_URL}/_delta_log", "PATH_READ").aws_access_key_id


def test_nothing_is_vended_while_the_metastores_external_data_access_is_off(fake):
    fake.external_access_enabled = False
    reader, owner = client(fake, "reader"), client(fake, "owner")
    for vend in (lambda: reader.temporary_table_credentials(RAW, "READ"),
                 lambda: owner.temporary_path_credentials(f"{CURATED_URL}/part-0", "PATH_READ_WRITE")):
        with pytest.raises(CatalogError) as refused:
            vend()
        message = str(refused.value)
        one_sentence(message)
        assert not isinstance(refused.value, CatalogPermissionError)
        assert message.startswith(f"the metastore of {fake.url} has external data access turned off, so principal '")
        assert "' was refused vending " in message
        assert "a metastore admin turns it on in Catalog Explorer (Metastore details, External data access)" in message
    assert fake.vended == []


# ---- grants -------------------------------------------------------------------------------------------------


def test_a_privilege_that_does_not_apply_to_the_securable_type_is_refused(fake):
    with pytest.raises(CatalogError) as refused:
        client(fake, "admin").update_grants("schema", "raw", "app-reader", add=[Privilege.READ_FILES])
    message = str(refused.value)
    one_sentence(message)
    assert message.startswith(f"Databricks at {fake.url} refused principal 'admin' changing grants on schema "
                              "main.raw: READ FILES does not apply to main.raw:SCHEMA/SCHEMA_STANDARD; grant it on a "
                              "securable it applies to")
    assert "READ_FILES" not in fake.grants.get(("schema", "main.raw"), {}).get("app-reader", set())


# ---- lineage ------------------------------------------------------------------------------------------------


@pytest.fixture
def lineage(fake) -> Iterator[tuple[FakeDatabricks, FakeLineageService]]:
    fake.grant("metastore", fake.metastore_id, "app-registrar", "CREATE_EXTERNAL_METADATA")
    fake.model_versions[MODEL] = {"1": {"version": "1"}}
    service = FakeLineageService()
    service.install(fake)
    yield fake, service


JOB = ExternalMetadata("emr_job_run__r1", "OTHER", "EMRServerlessJobRun", "r1", "curated_training_table", "", {})


def graph(*relationships: Relationship) -> LineageGraph:
    return LineageGraph([JOB], list(relationships))


def job() -> Endpoint:
    return Endpoint("external_metadata", JOB.name)


def edge(source: Endpoint, target: Endpoint) -> Relationship:
    return Relationship(source, target, {})


def test_reading_external_metadata_takes_browse(lineage):
    fake, service = lineage
    DatabricksLineageSink(workspace(fake, "admin")).push(graph(  # another principal wrote it and owns it
        edge(Endpoint("table", RAW), job()), edge(job(), Endpoint("model_version", MODEL, "1"))))
    assert graph_from_databricks(workspace(fake, "registrar"), MODEL, "1").external_metadata  # account users BROWSE
    fake.revoke("external_metadata", JOB.name, "account users", "BROWSE")

    with pytest.raises(CatalogError) as refused:
        with databricks_lineage_errors(fake.url, f"reading the lineage of model {MODEL}", grantee="app-registrar"):
            graph_from_databricks(workspace(fake, "registrar"), MODEL, "1")

    message = str(refused.value)
    one_sentence(message)
    assert isinstance(refused.value, CatalogPermissionError)
    assert message.startswith(f"principal 'registrar' lacks BROWSE on external_metadata {JOB.name} (needed for "
                              f"reading the lineage of model {MODEL}); grant it with `GRANT BROWSE ON EXTERNAL "
                              f"METADATA {JOB.name} TO `app-registrar``")
    assert graph_from_databricks(workspace(fake, "admin"), MODEL, "1").external_metadata  # its owner still reads


NOT_REGISTERED = "the table or model version it names is not registered there; register it"
NO_JOB_RUN = "each relationship needs an external-metadata object (a job run) on one side"


@pytest.mark.parametrize("source, target, said, fix", [
    (Endpoint("table", "main.raw.never_registered"), job(), "Table 'main.raw.never_registered' does not exist.",
     NOT_REGISTERED),
    (job(), Endpoint("model_version", MODEL, "7"), f"Model version '{MODEL}' version 7 does not exist.",
     NOT_REGISTERED),
    (Endpoint("table", RAW), Endpoint("model_version", MODEL, "1"), "One side must be an external metadata object.",
     NO_JOB_RUN),
], ids=["missing-table", "missing-model-version", "no-external-metadata"])
def test_a_relationship_the_catalog_cannot_hold_is_refused(lineage, source, target, said, fix):
    """One to a table or model version that does not exist, or with no external metadata on either side."""
    fake, service = lineage
    refused_edge = edge(source, target)
    with pytest.raises(LineageSinkError) as refused:
        DatabricksLineageSink(workspace(fake, "registrar")).push(graph(refused_edge))
    message = str(refused.value)
    one_sentence(message)
    assert message.startswith(f"Unity Catalog refused the lineage relationship {refused_edge.key} ({said}): {fix}")
    assert service.relationships == []
