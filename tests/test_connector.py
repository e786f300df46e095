"""The catalog's Spark connector (unitycatalog-spark 0.2.1): where the job uses it, and the limit that keeps the
hand-written path on Databricks.

- Local deployment, the real open-source catalog 0.4.1: the real job reads the raw table and writes the curated table
  by name through the connector, creating and registering it (owned by preprocess), then overwriting it; a principal
  without SELECT is refused by the catalog before Spark starts reading.
- Databricks (the fake workspace, `/api/2.1/unity-catalog`) with moto enforcing: the connector reads with the
  credentials it vends, but never renews them: a table it loaded is refused once they end (ExpiredToken), while
  `RenewingCredentials` vends again and reads on. Its bearer token is fixed when the catalog starts: once the token
  ends, the connector is refused, while the job's catalog client gets a new OAuth token from its secret.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("pyspark")
pytest.importorskip("delta")

from conftest import free_port  # noqa: E402
from governed_ft_dagster.catalog.base import CatalogPermissionError, Principal, RenewingCredentials  # noqa: E402
from governed_ft_dagster.catalog.connector import CONNECTOR_CLASS, catalog_conf, table_access  # noqa: E402
from governed_ft_dagster.catalog.endpoint import CredentialEndpoint  # noqa: E402
from governed_ft_dagster.governance import principal_email  # noqa: E402
from governed_ft_dagster.preprocess import spark as P  # noqa: E402
from governed_ft_dagster.settings import load_settings  # noqa: E402
from governed_ft_dagster.stack import jars  # noqa: E402
from governed_ft_dagster.stack.errors import StackError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JOB_SCRIPT = REPO / "job_scripts" / "preprocess_risk_factors.py"
CATALOG = "governed_ft"
RAW, CURATED = f"{CATALOG}.raw.risk_factors", f"{CATALOG}.curated.risk_factor_instructions"
BODY = ("Our suppliers operate in regions exposed to extreme weather, political unrest and power shortages, and any "
        "disruption at a single facility can delay shipments for several quarters while alternatives are qualified. ")
SECTION = "\n\n".join(["Item 1A. Risk Factors", "Supply disruptions could reduce our revenue.", BODY * 2,
                       "Cyber attacks may harm our reputation and operations.",
                       BODY.replace("suppliers", "data centers") * 2])


def raw_row(n: int) -> dict:
    return {"cik": f"{n:010d}", "ticker": f"T{n}", "entity_name": f"Company {n}", "form_type": "10-K",
            "is_amendment": False, "fiscal_year": 2024, "fiscal_period": "FY", "quarter": None,
            "accession_number": f"{n:010d}-24-000001", "filing_date": "2024-02-01", "report_date": "2023-12-31",
            "source_url": "https://example.invalid/doc.htm", "status": "extracted",
            "risk_factors_text": SECTION.replace("revenue", f"revenue in market {n}").replace("reputation",
                                                                                         f"reputation {n}"),
            "text_sha256": "", "extractor_version": "test", "extracted_at": "2024-02-02T00:00:00Z"}


@pytest.fixture(scope="module")
def connector_jars(tmp_path_factory) -> Path:
    """A state folder holding the connector's jar group (from GOVERNED_FT_JAR_MIRROR or Maven)."""
    home = tmp_path_factory.mktemp("uc-spark-jars")
    mirror = load_settings().jar_mirror
    try:
        jars.fetch_group(home, "uc-spark", mirror=mirror)
    except StackError as exc:
        if mirror is not None:
            pytest.fail(f"GOVERNED_FT_JAR_MIRROR={mirror} is set but the connector's jars cannot be installed: {exc}")
        pytest.skip(f"the catalog's Spark connector is not available here: {exc}")
    return home


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._port}"
    server.stop()


@pytest.fixture(scope="module")
def spark(in_process_spark_jars, connector_jars, moto_server, tmp_path_factory):
    """One Spark with Delta, S3A and the connector on its classpath; s3:// through S3A (the connector vends for s3://
    only), with vended credentials only, at moto."""
    from aws_fixtures import REGION
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    classpath = in_process_spark_jars
    warehouse = tmp_path_factory.mktemp("connector-spark-warehouse")
    conf = {"spark.jars": ",".join(map(str, classpath)), "spark.sql.warehouse.dir": str(warehouse),
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={warehouse}",
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.shuffle.partitions": "2", "spark.databricks.delta.snapshotPartitions": "2",
            "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
            "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
            "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",
            "spark.hadoop.fs.s3a.endpoint": moto_server, "spark.hadoop.fs.s3a.endpoint.region": REGION,
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false", "spark.hadoop.fs.s3a.attempts.maximum": "1",
            "spark.hadoop.fs.s3a.retry.limit": "1"}
    builder = SparkSession.builder.master("local[2]").appName("test-connector")
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def as_principal(spark, url: str, token: str):
    """A session of its own whose catalog `governed_ft` is the connector acting as the token's principal."""
    session = spark.newSession()
    for key, value in catalog_conf(CATALOG, url, token).items():
        session.conf.set(key, value)
    return session


def load_job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_job_connector", JOB_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- local deployment: the real open-source catalog ---------------------------------------------------------


@pytest.fixture
def local_catalog(running_stack):
    """The local stack up, with the connector's jar group, and bootstrapped."""
    from governed_ft_dagster.stack.bootstrap import bootstrap

    assert jars.group_status(running_stack.home, "uc-spark").complete
    bootstrap(running_stack)
    return running_stack


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    from governed_ft_dagster.training.base_model import build_tiny_base

    return str(build_tiny_base([raw_row(n)["risk_factors_text"] for n in range(4)],
                               tmp_path_factory.mktemp("connector-base") / "model"))


def test_the_job_uses_the_connector_for_the_open_source_catalog_only() -> None:
    assert table_access("oss") == "connector" and table_access("databricks") == "vended"
    assert table_access("databricks", "connector") == "connector"
    conf = catalog_conf(CATALOG, "https://dbc-1.cloud.databricks.com/api/2.1/unity-catalog", "t0k")
    assert conf == {f"spark.sql.catalog.{CATALOG}": CONNECTOR_CLASS,
                    f"spark.sql.catalog.{CATALOG}.uri": "https://dbc-1.cloud.databricks.com",
                    f"spark.sql.catalog.{CATALOG}.token": "t0k"}


@pytest.mark.catalog(CATALOG)
def test_local_job_reads_and_writes_by_name_through_the_connector(spark, local_catalog, tokenizer_dir) -> None:
    from governed_ft_dagster.catalog.base import Privilege
    from governed_ft_dagster.catalog.oss import OssCatalogClient
    from governed_ft_dagster.stack.bootstrap import read_token, token_path

    home, url = local_catalog.home, local_catalog.settings.uc_url
    warehouse = local_catalog.warehouse.as_uri()
    # The ingest principal creates the raw table through the connector too (registered with it as the owner).
    ingest = as_principal(spark, url, read_token(home, Principal.INGEST))
    rows = [raw_row(n) for n in range(3)]
    ingest.createDataFrame(rows[:2], P.RAW_SCHEMA).createOrReplaceTempView("raw_rows")
    ingest.sql(f"CREATE TABLE {RAW} USING DELTA LOCATION '{warehouse}/raw/tables/risk_factors' "
               f"AS SELECT * FROM raw_rows")  # versions 0 (create) and 1 (rows)
    ingest.createDataFrame(rows[2:], P.RAW_SCHEMA).createOrReplaceTempView("more_rows")
    ingest.sql(f"INSERT INTO {RAW} SELECT * FROM more_rows")  # version 2
    OssCatalogClient(url, read_token(home, Principal.INGEST), principal_email(Principal.INGEST)).update_grants(
        "table", RAW, principal_email(Principal.PREPROCESS), add=[Privilege.SELECT])

    job = load_job()

    def args(principal: Principal, run_id: str, *extra: str):
        return job.parse_args([
            "--catalog-kind", "oss", "--catalog-url", url, "--catalog-principal", principal_email(principal),
            "--catalog-name", CATALOG, "--catalog-token-file", str(token_path(home, principal)),
            "--source-table", RAW, "--target-table", CURATED,
            "--target-location", f"{warehouse}/curated/risk_factor_instructions", "--tokenizer-dir", tokenizer_dir,
            "--run-id", run_id, "--grant-select-to", principal_email(Principal.TRAIN), *extra])

    first = job.run(spark.newSession(), args(Principal.PREPROCESS, "run-c1", "--source-version", "1"))
    assert first["table_access"] == "connector" and first["table_registered"] is True
    assert first["source_version"] == 1 and first["rows_in"] == 2 and first["rows_out"] > 0
    assert first["delta_version"] == 1  # the connector's CTAS: create, then write
    assert first["grants"] == [f"SELECT on {CURATED} to {principal_email(Principal.TRAIN)}"]

    admin = OssCatalogClient(url, local_catalog.admin_token(), "admin")
    registered = admin.get_table(CURATED)
    assert registered.storage_location.rstrip("/").endswith("/curated/risk_factor_instructions")
    assert Privilege.SELECT in admin.effective_privileges("table", CURATED, principal_email(Principal.TRAIN))

    second = job.run(spark.newSession(), args(Principal.PREPROCESS, "run-c2"))
    assert second["table_registered"] is False and second["source_version"] == 2 and second["rows_in"] == 3
    assert second["delta_version"] == 2 and second["grants"] == []
    assert admin.get_table(CURATED).table_id == registered.table_id  # overwritten, never re-registered

    reader = as_principal(spark, url, read_token(home, Principal.TRAIN))
    curated = reader.table(CURATED)
    assert tuple(curated.columns) == P.OUTPUT_COLUMNS and curated.schema["messages"].dataType == P.MESSAGES_TYPE
    assert {r.run_id for r in curated.collect()} == {"run-c2"} and curated.count() == second["rows_out"]
    history = {r.version: r for r in reader.sql(f"DESCRIBE HISTORY {CURATED}").collect()}
    assert history[2].operation == "WRITE" and json.loads(history[2].userMetadata)["governed_ft.run_id"] == "run-c2"
    assert json.loads(history[2].userMetadata)["governed_ft.source_version"] == "2"

    # A principal without SELECT on the raw table is refused by the catalog before Spark starts.
    with pytest.raises(CatalogPermissionError, match=r"principal '.*train.*' lacks SELECT on .*raw\.risk_factors"):
        job.resolve_tables(args(Principal.TRAIN, "run-c3"))


# ---- Databricks (fake workspace) and S3 (moto enforcing): the limit -----------------------------------------


@pytest.fixture
def world(moto_server, monkeypatch) -> Iterator:
    from aws_fixtures import build_enforced_world, enforcing
    from fake_databricks import _path_credentials, _table_credentials

    world = build_enforced_world(moto_server, monkeypatch)
    # Databricks serves the credential APIs to external engines under /api/2.1/unity-catalog, where the connector
    # sends them (the SDK uses /api/2.0).
    world.databricks.add_route("POST", r"/api/2\.1/unity-catalog/temporary-table-credentials", _table_credentials)
    world.databricks.add_route("POST", r"/api/2\.1/unity-catalog/temporary-path-credentials", _path_credentials)
    try:
        with enforcing(moto_server):
            yield world
    finally:
        world.databricks.stop()


def probe_table(world) -> tuple[str, str, int]:
    """A small raw Delta table written by the operator and registered, SELECT granted to preprocess."""
    from deltalake import write_deltalake
    import pyarrow as pa

    from aws_fixtures import DATA_BUCKET, REGION

    location = f"s3://{DATA_BUCKET}/raw/tables/connector_probe"
    options = {"AWS_ACCESS_KEY_ID": world.admin["aws_access_key_id"], "AWS_REGION": REGION,
               "AWS_SECRET_ACCESS_KEY": world.admin["aws_secret_access_key"], "AWS_ENDPOINT_URL": world.moto_url,
               "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    write_deltalake(location, pa.table({"n": list(range(5)), "s": [f"r{i}" for i in range(5)]}),
                    storage_options=options)
    name = f"{CATALOG}.raw.connector_probe"
    world.databricks.add_table(name, location, [
        {"name": "n", "type_text": "bigint", "type_name": "LONG", "type_json": '"long"', "position": 0,
         "nullable": True},
        {"name": "s", "type_text": "string", "type_name": "STRING", "type_json": '"string"', "position": 1,
         "nullable": True}], owner=world.application_ids["ingest"])
    world.databricks.grant("table", name, world.application_ids["preprocess"], "SELECT")
    return name, location, 5


def preprocess_client(world):
    from governed_ft_dagster.catalog.connect import connect

    return connect(world.catalog_resource().job_access(Principal.PREPROCESS))


def test_connector_credentials_end_while_the_renewing_path_reads_on(spark, world) -> None:
    import aws_fixtures
    from aws_fixtures import REGION

    job = load_job()
    name, location, rows = probe_table(world)
    world.databricks.credential_ttl_s = 600  # within the 15-minute renewal window
    client = preprocess_client(world)
    session = as_principal(spark, world.databricks.url, client.access_token())

    loaded = session.read.table(name)
    assert loaded.count() == rows  # through the catalog's own vend, the storage enforcing
    sent = [r.body for r in world.databricks.calls("/api/2.1/unity-catalog/temporary-table-credentials")]
    assert [b["operation"] for b in sent] == ["READ_WRITE", "READ"]  # it asks READ_WRITE first, then READ
    assert [v["operation"] for v in world.databricks.vended] == ["READ"]

    aws_fixtures.REFUSALS.clear()
    assert world.expire() >= 1
    with pytest.raises(Exception) as refused:
        loaded.count()  # the same loaded table: the connector's credentials, never renewed
    # S3 answers an expired session with 400 ExpiredToken; a HEAD carries no body, so S3A reports a bad request.
    assert "ExpiredToken" in str(refused.value) or "AWSBadRequestException" in str(refused.value)
    assert any(kind == "expired" for _, kind, _ in aws_fixtures.REFUSALS)

    renewing = RenewingCredentials(lambda: client.temporary_table_credentials(name, "READ"))
    before = renewing.current()
    world.expire({before.aws_access_key_id})
    after = renewing.current()  # within 15 minutes of its end: vended again
    assert after.aws_access_key_id != before.aws_access_key_id
    path_session = spark.newSession()
    conf = spark._jsc.hadoopConfiguration()
    with CredentialEndpoint() as endpoint:
        scope = endpoint.serve(renewing)
        before_job = {key: conf.get(key) for key in job.s3a_settings(after, scope, world.moto_url, REGION)}
        try:
            job.configure_s3a(path_session, after, scope, world.moto_url, REGION)
            assert path_session.read.format("delta").load(job.spark_path(location)).count() == rows
        finally:  # the shared session's S3A settings as they were (the connector's tests go on with them)
            for key, value in before_job.items():
                conf.unset(key) if value is None else conf.set(key, value)


def test_connector_token_is_fixed_when_the_catalog_starts(spark, world) -> None:
    name, _, rows = probe_table(world)
    world.databricks.token_ttl_s = 5  # the job's client takes a new OAuth token once its token comes near its end
    client = preprocess_client(world)
    token = client.access_token()
    session = as_principal(spark, world.databricks.url, token)
    assert session.read.table(name).count() == rows

    world.databricks.advance(world.databricks.token_ttl_s + 1)  # the token the connector holds has ended
    with pytest.raises(Exception, match="403|JWT has expired"):
        session.read.table(name).count()
    session.conf.set(f"spark.sql.catalog.{CATALOG}.token", client.access_token())  # too late: already started
    with pytest.raises(Exception, match="403|JWT has expired"):
        session.read.table(name).count()
    # The hand-written path's client vends on with a new OAuth token from its secret.
    assert client.temporary_table_credentials(name, "READ").aws_access_key_id
