"""DatabricksCatalogClient against a local fake workspace speaking the real REST paths, and secrets via moto."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import time
from typing import Iterator

import boto3
import pytest
import requests

from governed_ft_dagster.catalog.base import (
    CatalogError,
    CatalogPermissionError,
    CatalogUnavailableError,
    ColumnInfo,
    Privilege,
)
from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient, secret_from_aws

from fake_databricks import FakeDatabricks

UC = "/api/2.1/unity-catalog"
RAW = "main.raw.filings"
CURATED = "main.curated.train_set"
RAW_LOCATION = "s3://lake/raw/filings"
CURATED_LOCATION = "s3://lake/curated/train_set"
SECRETS = {role: f"PLANTED-{role}-secret-9f3b2c" for role in ("ingest", "preprocess", "train", "registrar", "admin")}
COLUMNS = [
    {"name": "cik", "type_name": "STRING", "type_text": "string", "position": 0, "nullable": False},
    {"name": "text", "type_name": "STRING", "type_text": "string", "position": 1, "nullable": True},
]


@pytest.fixture
def fake() -> Iterator[FakeDatabricks]:
    with FakeDatabricks() as server:
        for role, secret in SECRETS.items():
            server.add_service_principal(f"app-{role}", secret, admin=role == "admin")
            server.grant("catalog", "main", f"app-{role}", "USE CATALOG")
        server.add_table(RAW, RAW_LOCATION, COLUMNS)
        server.add_table(CURATED, CURATED_LOCATION, COLUMNS)
        server.add_external_location("lake_raw", "s3://lake/raw")
        server.add_external_location("lake_curated", "s3://lake/curated")
        server.grant("external_location", "lake_curated", "app-preprocess", "CREATE_EXTERNAL_TABLE",
                     "EXTERNAL_USE_LOCATION")
        server.grant("schema", "main.raw", "app-ingest", "USE_SCHEMA", "SELECT", "MODIFY", "CREATE_TABLE",
                     "EXTERNAL_USE_SCHEMA")
        server.grant("schema", "main.raw", "app-preprocess", "USE_SCHEMA", "SELECT", "EXTERNAL_USE_SCHEMA")
        server.grant("schema", "main.curated", "app-preprocess", "USE_SCHEMA", "SELECT", "MODIFY", "CREATE_TABLE",
                     "EXTERNAL_USE_SCHEMA")
        server.grant("schema", "main.curated", "app-train", "USE_SCHEMA", "SELECT", "EXTERNAL_USE_SCHEMA")
        server.grant("schema", "main.models", "app-registrar", "USE_SCHEMA", "CREATE_MODEL")
        yield server


def client(
    fake: FakeDatabricks, role: str, secret: str | None = None, retry_timeout_s: float = 5
) -> DatabricksCatalogClient:
    secret = secret or SECRETS[role]
    return DatabricksCatalogClient(
        fake.url, role, f"app-{role}", secret, catalog="main", timeout_s=5, retry_timeout_s=retry_timeout_s
    )


def dead_client(secret: str) -> DatabricksCatalogClient:
    return DatabricksCatalogClient(f"http://127.0.0.1:{closed_port()}", "train", "app-train", secret, catalog="main")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_oauth_m2m_token_then_bearer_on_every_api_call(fake: FakeDatabricks) -> None:
    preprocess = client(fake, "preprocess")
    preprocess.get_table("raw.filings")
    preprocess.table_exists("raw.filings")

    assert fake.paths() == [
        "GET /oidc/.well-known/oauth-authorization-server",
        "GET /.well-known/databricks-config",
        "GET /oidc/.well-known/oauth-authorization-server",
        "POST /oidc/v1/token",
        f"GET {UC}/tables/{RAW}",
        f"GET {UC}/tables/{RAW}/exists",
    ]
    (token_request,) = fake.calls("/oidc/v1/token")
    assert token_request.body == {"grant_type": "client_credentials", "scope": "all-apis"}
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"app-preprocess:{SECRETS['preprocess']}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {basic}"
    (token,) = [t for t, client_id in fake.tokens.items() if client_id == "app-preprocess"]
    for api_call in fake.calls("/api/"):
        assert api_call.headers["authorization"] == f"Bearer {token}"
        assert api_call.principal == "app-preprocess"
        assert api_call.headers["x-databricks-workspace-id"] == fake.workspace_id


def test_get_table_maps_the_table_info(fake: FakeDatabricks) -> None:
    info = client(fake, "preprocess").get_table(RAW)

    assert info.full_name == RAW
    assert info.table_id == fake.tables[RAW]["table_id"]
    assert info.storage_location == RAW_LOCATION
    assert (info.data_source_format, info.table_type) == ("DELTA", "EXTERNAL")
    assert info.columns == (
        ColumnInfo("cik", "STRING", "string", 0, nullable=False),
        ColumnInfo("text", "STRING", "string", 1, nullable=True),
    )


def test_table_credentials_are_vended_by_table_id_after_tables_get(fake: FakeDatabricks) -> None:
    preprocess = client(fake, "preprocess")
    before = dt.datetime.now(dt.timezone.utc)
    creds = preprocess.temporary_table_credentials("raw.filings", "READ")

    assert fake.paths("/api/") == [f"GET {UC}/tables/{RAW}", "POST /api/2.0/unity-catalog/temporary-table-credentials"]
    vend = fake.calls("/api/2.0/")[0]
    assert vend.body == {"table_id": fake.tables[RAW]["table_id"], "operation": "READ"}
    (vended,) = fake.vended
    assert (vended["principal"], vended["operation"]) == ("app-preprocess", "READ")
    assert creds.location == RAW_LOCATION
    assert creds.operation == "READ"
    assert creds.aws_access_key_id == vended["access_key_id"]
    assert creds.aws_secret_access_key == vended["secret_access_key"]
    assert creds.aws_session_token == vended["session_token"]
    assert creds.expiration is not None and creds.expiration.tzinfo is not None
    assert 3500 < (creds.expiration - before).total_seconds() <= 3601
    assert not creds.expires_within(60)


def test_train_is_refused_read_on_the_raw_table(fake: FakeDatabricks) -> None:
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "train").temporary_table_credentials(RAW, "READ")

    message = str(refused.value)
    assert "'train'" in message and f"needed for vending READ credentials for table {RAW}" in message
    assert "`GRANT USE SCHEMA ON SCHEMA main.raw TO `app-train``" in message
    assert refused.value.principal == "train"
    assert refused.value.privileges == ("USE SCHEMA",)
    assert refused.value.securable == "schema main.raw"
    assert fake.vended == []


def test_refusal_at_credential_vending_names_the_missing_privilege(fake: FakeDatabricks) -> None:
    fake.grant("schema", "main.raw", "app-train", "USE_SCHEMA")
    fake.grant("catalog", "main", "app-train", "BROWSE")
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "train").temporary_table_credentials(RAW, "READ")

    assert fake.paths("/api/") == [f"GET {UC}/tables/{RAW}", "POST /api/2.0/unity-catalog/temporary-table-credentials"]
    assert "User does not have SELECT on Table 'main.raw.filings'" in str(refused.value)
    assert fake.vended == []


def test_preprocess_may_read_raw_but_not_write_it(fake: FakeDatabricks) -> None:
    preprocess = client(fake, "preprocess")
    assert preprocess.temporary_table_credentials(RAW, "READ").aws_access_key_id
    assert preprocess.temporary_table_credentials(CURATED, "READ_WRITE").operation == "READ_WRITE"

    with pytest.raises(CatalogPermissionError) as refused:
        preprocess.temporary_table_credentials(RAW, "READ_WRITE")
    assert refused.value.privileges == ("MODIFY",)
    assert "'preprocess'" in str(refused.value) and RAW in str(refused.value)


def test_grants_update_sends_the_exact_path_and_body(fake: FakeDatabricks) -> None:
    admin = client(fake, "admin")
    admin.update_grants("table", RAW, "app-train", add=[Privilege.SELECT])
    admin.update_grants("schema", "curated", "app-train", remove=[Privilege.USE_SCHEMA])
    admin.update_grants("registered_model", "models.edgar_ft", "app-train", add=[Privilege.EXECUTE])
    admin.update_grants("table", RAW, "app-train")

    patches = [r for r in fake.calls("/api/") if r.method == "PATCH"]
    assert [r.path for r in patches] == [
        f"{UC}/permissions/table/{RAW}",
        f"{UC}/permissions/schema/main.curated",
        f"{UC}/permissions/function/main.models.edgar_ft",
    ]
    assert [r.body for r in patches] == [
        {"changes": [{"principal": "app-train", "add": ["SELECT"]}]},
        {"changes": [{"principal": "app-train", "remove": ["USE_SCHEMA"]}]},
        {"changes": [{"principal": "app-train", "add": ["EXECUTE"]}]},
    ]
    assert fake.grants[("table", RAW)]["app-train"] == {"SELECT"}
    assert fake.grants[("schema", "main.curated")]["app-train"] == {"SELECT", "EXTERNAL_USE_SCHEMA"}


def test_grants_update_by_a_non_manager_is_refused(fake: FakeDatabricks) -> None:
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "train").update_grants("table", RAW, "app-train", add=[Privilege.SELECT])
    assert "MANAGE" in str(refused.value) and RAW in str(refused.value)


def test_effective_privileges_include_inherited_ones(fake: FakeDatabricks) -> None:
    admin = client(fake, "admin")
    held = admin.effective_privileges("table", CURATED, "app-train")

    assert held == {Privilege.USE_CATALOG, Privilege.USE_SCHEMA, Privilege.SELECT, Privilege.EXTERNAL_USE_SCHEMA}
    (call,) = fake.calls(f"{UC}/effective-permissions/")
    assert call.path == f"{UC}/effective-permissions/table/{CURATED}"
    assert call.query == {"principal": ["app-train"]}

    admin.require("app-train", [("table", CURATED, Privilege.SELECT)])
    with pytest.raises(CatalogPermissionError, match="MODIFY"):
        admin.require("app-train", [("table", CURATED, Privilege.MODIFY)])


def test_metastore_privileges_outside_the_sdk_enum_are_read_and_granted(fake: FakeDatabricks) -> None:
    admin, registrar = client(fake, "admin"), client(fake, "registrar")
    metastore = registrar.metastore_id()
    assert metastore == fake.metastore_id
    assert Privilege.CREATE_EXTERNAL_METADATA not in registrar.effective_privileges("metastore", metastore,
                                                                                    "app-registrar")
    admin.update_grants("metastore", metastore, "app-registrar", add=[Privilege.CREATE_EXTERNAL_METADATA])
    assert fake.grants[("metastore", metastore)]["app-registrar"] == {"CREATE_EXTERNAL_METADATA"}
    registrar.require("app-registrar", [("metastore", metastore, Privilege.CREATE_EXTERNAL_METADATA)])


def test_effective_privileges_expand_all_privileges_and_skip_unknown_ones(fake: FakeDatabricks) -> None:
    fake.grant("schema", "main.models", "app-registrar", "ALL_PRIVILEGES")
    fake.grant("catalog", "main", "app-registrar", "BROWSE")
    held = client(fake, "registrar").effective_privileges("registered_model", "main.models.edgar_ft", "app-registrar")

    # ALL PRIVILEGES never includes EXTERNAL USE SCHEMA or EXTERNAL USE LOCATION (Databricks' GRANT reference).
    assert held == set(Privilege) - {Privilege.EXTERNAL_USE_SCHEMA, Privilege.EXTERNAL_USE_LOCATION}
    (call,) = fake.calls(f"{UC}/effective-permissions/")
    assert call.path == f"{UC}/effective-permissions/function/main.models.edgar_ft"


def test_register_external_table_creates_once_and_checks_the_location(fake: FakeDatabricks) -> None:
    preprocess = client(fake, "preprocess")
    columns = [ColumnInfo("cik", "string", "string", 0, nullable=False), ColumnInfo("n", "bigint", "bigint", 1)]
    info = preprocess.register_external_table(
        "curated.features", "s3://lake/curated/features", columns, {"quality": "gold"}, comment="features"
    )

    assert info.storage_location == "s3://lake/curated/features" and info.table_id
    (create,) = [r for r in fake.calls("/api/") if r.method == "POST"]
    assert create.path == f"{UC}/tables"
    assert create.body == {
        "name": "features",
        "catalog_name": "main",
        "schema_name": "curated",
        "table_type": "EXTERNAL",
        "data_source_format": "DELTA",
        "storage_location": "s3://lake/curated/features",
        "properties": {"quality": "gold", "comment": "features"},
        "columns": [
            {
                "name": "cik",
                "type_name": "STRING",
                "type_text": "string",
                "type_json": json.dumps({"name": "cik", "type": "string", "nullable": False, "metadata": {}}),
                "position": 0,
                "nullable": False,
            },
            {
                "name": "n",
                "type_name": "LONG",
                "type_text": "bigint",
                "type_json": json.dumps({"name": "n", "type": "long", "nullable": True, "metadata": {}}),
                "position": 1,
                "nullable": True,
            },
        ],
    }

    fake.clear_requests()
    again = preprocess.register_external_table("main.curated.features", "s3://lake/curated/features/", columns)
    assert again.table_id == info.table_id
    assert fake.paths("/api/") == [f"GET {UC}/tables/main.curated.features"]

    with pytest.raises(CatalogError, match="already registered at s3://lake/curated/features"):
        preprocess.register_external_table("curated.features", "s3://lake/elsewhere", columns)


def test_register_external_table_without_create_table_is_refused(fake: FakeDatabricks) -> None:
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "train").register_external_table("curated.sneaky", "s3://lake/curated/sneaky", [])
    assert refused.value.securable == "schema main.curated"
    assert refused.value.privileges == ("CREATE TABLE",)


def test_create_registered_model_is_idempotent(fake: FakeDatabricks) -> None:
    registrar = client(fake, "registrar")
    assert registrar.create_registered_model("models.edgar_ft", comment="EDGAR fine-tune") == "main.models.edgar_ft"
    assert registrar.create_registered_model("main.models.edgar_ft") == "main.models.edgar_ft"

    assert fake.paths("/api/") == [
        f"GET {UC}/models/main.models.edgar_ft",
        f"POST {UC}/models",
        f"GET {UC}/models/main.models.edgar_ft",
    ]
    create = fake.calls(f"{UC}/models")[1]
    assert create.body == {
        "catalog_name": "main",
        "schema_name": "models",
        "name": "edgar_ft",
        "comment": "EDGAR fine-tune",
    }

    fake.grant("schema", "main.models", "app-train", "USE_SCHEMA")
    with pytest.raises(CatalogPermissionError) as refused:
        client(fake, "train").create_registered_model("models.other")
    assert (refused.value.securable, refused.value.privileges) == ("schema main.models", ("CREATE MODEL",))


def test_temporary_path_credentials(fake: FakeDatabricks) -> None:
    fake.add_external_location("landing", "s3://lake/landing")
    fake.grant("external_location", "landing", "app-ingest", "READ_FILES")
    ingest = client(fake, "ingest")
    with pytest.raises(CatalogPermissionError) as refused:
        ingest.temporary_path_credentials("s3://lake/landing/2024", "PATH_READ")
    assert (refused.value.securable, refused.value.privileges) == (
        "external_location landing", ("EXTERNAL USE LOCATION",))
    fake.grant("external_location", "landing", "app-ingest", "EXTERNAL_USE_LOCATION")
    creds = ingest.temporary_path_credentials("s3://lake/landing/2024", "PATH_READ")

    assert creds.location == "s3://lake/landing/2024" and creds.aws_session_token
    vend = fake.calls("/api/2.0/unity-catalog/temporary-path-credentials")[0]
    assert vend.body == {"url": "s3://lake/landing/2024", "operation": "PATH_READ"}
    with pytest.raises(CatalogPermissionError) as refused:
        ingest.temporary_path_credentials("s3://lake/landing/2024", "PATH_READ_WRITE")
    assert refused.value.privileges == ("WRITE FILES",)


def test_table_exists_and_missing_tables(fake: FakeDatabricks) -> None:
    preprocess = client(fake, "preprocess")
    assert preprocess.table_exists(RAW) is True
    assert preprocess.table_exists("raw.nope") is False
    with pytest.raises(CatalogError, match="main.raw.nope was not found") as missing:
        preprocess.get_table("raw.nope")
    assert not isinstance(missing.value, CatalogPermissionError)


def test_unreachable_host_fails_fast(fake: FakeDatabricks) -> None:
    dead = dead_client(SECRETS["train"])
    started = time.monotonic()
    with pytest.raises(CatalogUnavailableError) as unavailable:
        dead.temporary_table_credentials(RAW, "READ")

    assert time.monotonic() - started < 10
    assert dead.host in str(unavailable.value) and "connection refused" in str(unavailable.value)


def test_outage_after_sign_in_becomes_unavailable_after_the_retry_budget(fake: FakeDatabricks) -> None:
    train = client(fake, "train", retry_timeout_s=1)
    train.get_table(CURATED)
    fake.stop()
    started = time.monotonic()
    with pytest.raises(CatalogUnavailableError, match="is unreachable"):
        train.get_table(CURATED)
    assert time.monotonic() - started < 10


def test_host_without_databricks_config_metadata_still_signs_in(fake: FakeDatabricks) -> None:
    not_found = {"error_code": "ENDPOINT_NOT_FOUND", "message": "No API found"}
    fake.fail_next("GET", r"/\.well-known/databricks-config", 404, not_found)
    assert client(fake, "train").get_table(CURATED).table_id == fake.tables[CURATED]["table_id"]
    assert "x-databricks-workspace-id" not in fake.calls("/api/")[0].headers


def test_wrong_secret_is_a_catalog_error(fake: FakeDatabricks) -> None:
    with pytest.raises(CatalogError, match="invalid_client") as refused:
        client(fake, "train", secret="PLANTED-wrong-secret-1d4e").get_table(CURATED)
    assert not isinstance(refused.value, CatalogUnavailableError)


def test_no_secret_appears_in_errors_reprs_or_logs(fake: FakeDatabricks, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    planted = "PLANTED-wrong-secret-1d4e"
    errors: list[BaseException] = []

    def capture(call: object) -> None:
        with pytest.raises(CatalogError) as caught:
            call()  # type: ignore[operator]
        errors.append(caught.value)

    dead = dead_client(planted)
    capture(lambda: dead.get_table(RAW))
    capture(lambda: client(fake, "train", secret=planted).get_table(RAW))
    train = client(fake, "train")
    capture(lambda: train.temporary_table_credentials(RAW, "READ"))
    capture(lambda: train.get_table("curated.nope"))
    capture(lambda: train.update_grants("table", RAW, "app-train", add=[Privilege.SELECT]))
    echoed = {"error_code": "INVALID_PARAMETER_VALUE", "message": f"bad {SECRETS['train']}"}
    fake.fail_next("GET", rf"{UC}/tables/.*", 400, echoed)
    capture(lambda: train.get_table(CURATED))
    creds = train.temporary_table_credentials(CURATED, "READ")
    fake.fail_next("POST", r".*/temporary-table-credentials", 500, {"error_code": "INTERNAL_ERROR", "message": "boom"})
    capture(lambda: train.temporary_table_credentials(CURATED, "READ"))

    tokens = list(fake.tokens)
    vended = [v for entry in fake.vended for v in (entry["secret_access_key"], entry["session_token"])]
    forbidden = [planted, *SECRETS.values(), *tokens, *vended]
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(dead), repr(train), str(train), repr(creds), str(creds), caplog.text]
    assert len(errors) == 7 and tokens and vended
    assert "temporary-table-credentials" in caplog.text and '"secret_access_key": "***"' in caplog.text
    for text in texts:
        for secret in forbidden:
            assert secret not in text
    assert all(e.__cause__ is None and e.__suppress_context__ for e in errors)


def test_secret_from_aws_reads_moto_in_server_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        requests.post(f"http://{host}:{port}/moto-api/reset", timeout=10).raise_for_status()
        endpoint = f"http://{host}:{port}"
        sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=endpoint)
        planted = "PLANTED-aws-secret-77aa"
        document = {"client_id": "app-train", "client_secret": planted}
        sm.create_secret(Name="governed-ft/train", SecretString=json.dumps(document))
        sm.create_secret(Name="governed-ft/broken", SecretString=f"not json {planted}")
        sm.create_secret(Name="governed-ft/partial", SecretString=json.dumps({"client_id": "app-x", "extra": planted}))

        assert secret_from_aws("governed-ft/train", "us-east-1", endpoint) == ("app-train", planted)
        with pytest.raises(CatalogError) as missing:
            secret_from_aws("governed-ft/nope", "us-east-1", endpoint)
        assert "governed-ft/nope" in str(missing.value) and "create-secret" in str(missing.value)
        with pytest.raises(CatalogError, match="not a JSON object") as broken:
            secret_from_aws("governed-ft/broken", "us-east-1", endpoint)
        with pytest.raises(CatalogError, match="lacks client_secret") as partial:
            secret_from_aws("governed-ft/partial", "us-east-1", endpoint)
        for error in (missing.value, broken.value, partial.value):
            assert planted not in str(error) and planted not in repr(error)

        built = DatabricksCatalogClient.from_aws_secret(
            "https://dbc-1.cloud.databricks.com",
            "train",
            "governed-ft/train",
            "us-east-1",
            catalog="main",
            endpoint_url=endpoint,
        )
        assert built.client_id == "app-train" and planted not in repr(built)
    finally:
        server.stop()
