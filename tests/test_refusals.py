"""Reading Databricks refusals written by Databricks, not by the fake: texts quoted in public reports, documentation
and SDK sources, each cited where it is used. A text nothing in it is recognised still names principal and operation."""

from __future__ import annotations

import pytest

from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError
from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient
from governed_ft_dagster.catalog.refusals import Refusal, read_refusal, refusal_error

from fake_databricks import FakeDatabricks

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"

QUOTED = [
    # generateTemporaryTableCredentials without EXTERNAL USE SCHEMA, quoted in
    # https://github.com/Azure/spark-cdm-connector/issues/149
    pytest.param(
        "User does not have EXTERNAL USE SCHEMA on Schema 'icebase.telemetry'.", "PERMISSION_DENIED",
        [{"@type": ERROR_INFO, "reason": "PERMISSION_DENIED", "domain": "unity-catalog.databricks.com",
          "metadata": {"principalName": "User", "msg": "EXTERNAL USE SCHEMA", "resourceType": "Schema",
                       "resourceName": "icebase.telemetry"}},
         {"@type": REQUEST_INFO, "request_id": "bd9d1fb5-f1a5-4b74-a0fa-03aa01e3c900", "serving_data": ""}],
        Refusal("privilege", "EXTERNAL USE SCHEMA", "schema", "icebase.telemetry"), id="external-use-schema"),
    # The same refusal without details, as Spark on Databricks printed it
    # (https://github.com/ibis-project/ibis/issues/9038)
    pytest.param(
        "PERMISSION_DENIED: User does not have USE SCHEMA on Schema 'comms_media_dev.default'.", None, None,
        Refusal("privilege", "USE SCHEMA", "schema", "comms_media_dev.default"), id="use-schema"),
    # With the SQLSTATE Databricks SQL appends (https://github.com/DataDog/documentation/pull/36005)
    pytest.param(
        "User does not have USE SCHEMA on Schema 'system.billing'. SQLSTATE: 42501", None, None,
        Refusal("privilege", "USE SCHEMA", "schema", "system.billing"), id="use-schema-sqlstate"),
    # A SQL warehouse's refusal that names no securable
    # (https://github.com/databricks-solutions/databricks-apps-cookbook/issues/18)
    pytest.param(
        "[INSUFFICIENT_PERMISSIONS] Insufficient privileges:\nUser does not have USE CATALOG on Catalog", None, None,
        Refusal("privilege", "USE CATALOG", "catalog", ""), id="use-catalog-no-name"),
    # A metastore privilege, its name redacted with mismatched quotes by the reporter
    # (https://github.com/databricks/terraform-databricks-examples/issues/189)
    pytest.param(
        "User does not have CREATE EXTERNAL LOCATION on Metastore \"*****'.", None, None,
        Refusal("privilege", "CREATE EXTERNAL LOCATION", "metastore", "*****"), id="metastore"),
    # An expired OAuth token: HTTP 403 with a numeric error_code (request log quoted in
    # https://github.com/databricks/databricks-sdk-go/issues/1061)
    pytest.param("JWT has expired", 403, None, Refusal("token_expired"), id="jwt-expired"),
    # https://github.com/databricks/databricks-vscode/issues/583
    pytest.param("Token is expiring within 30 seconds. (token expired)", 403, None, Refusal("token_expired"),
                 id="token-expiring"),
    # https://github.com/databrickslabs/splunk-integration/issues/55 ("a 401 with 'Token is expired'")
    pytest.param("Token is expired", None, None, Refusal("token_expired"), id="token-is-expired"),
    # Vending to an engine outside Databricks denied, before the metastore switch existed
    # (https://github.com/unitycatalog/unitycatalog/issues/2)
    pytest.param(
        "Request to generate access credential for table '<redacted>' from outside of Databricks Unity Catalog "
        "enabled compute environment is denied for security. Please contact Databricks support for integrations with "
        "Unity Catalog.", "UNAUTHENTICATED",
        [{"@type": ERROR_INFO, "reason": "UNITY_CATALOG_EXTERNAL_GENERATE_TABLE_CREDENTIALS_DENIED",
          "domain": "unity-catalog.databricks.com", "metadata": {"tableId": "<redacted>"}}],
        Refusal("external_access_off"), id="external-table-credentials-denied"),
    # The path variant (https://github.com/unitycatalog/unitycatalog/issues/560)
    pytest.param(
        "Request to generate access credential for path 'abfss://containerXYZ@storageAccXYZ.dfs.core.windows.net/prod' "
        "from outside of Databricks Unity Catalog enabled compute environment is denied for security. Please contact "
        "Databricks support for integrations with Unity Catalog.", "UNAUTHENTICATED",
        [{"@type": ERROR_INFO, "reason": "UNITY_CATALOG_EXTERNAL_GENERATE_PATH_CREDENTIALS_DENIED",
          "domain": "unity-catalog.databricks.com",
          "metadata": {"path": "abfss://containerXYZ@storageAccXYZ.dfs.core.windows.net/somedir"}}],
        Refusal("external_access_off"), id="external-path-credentials-denied"),
    # The metastore switch off, as Health Samurai's Aidbox docs quote it (Databricks destination, troubleshooting)
    pytest.param(
        "External Data Access from non Databricks Compute environment is disabled for metastore …",
        "PERMISSION_DENIED", None, Refusal("external_access_off"), id="external-access-disabled"),
    # https://github.com/databricks/terraform-provider-databricks/issues/5398
    pytest.param(
        "Privilege USE CONNECTION is not applicable to this entity "
        "[sqlserver_finance:CONNECTION/CONNECTION_SQLSERVER]. If this seems unexpected, please check the privilege "
        "version of the metastore in use [1.0].", None, None,
        Refusal("not_applicable", "USE CONNECTION", securable="sqlserver_finance:CONNECTION/CONNECTION_SQLSERVER"),
        id="not-applicable"),
    # Databricks knowledge-base article "INVALID_PARAMETER_VALUE.LOCATION_OVERLAP: overlaps with managed storage
    # error", as translated in https://qiita.com/taka_yayoi/items/1fd38f0fa0b0bafef846
    pytest.param(
        "[RequestId=96dd6185-e0dc-4fe0-94ad-bd8ab05fbd8e ErrorClass=INVALID_PARAMETER_VALUE.LOCATION_OVERLAP] Input "
        "path url '://path' overlaps with managed storage", "INVALID_PARAMETER_VALUE", None,
        Refusal("location_overlap", securable_type="path", securable="://path", conflicts="managed storage"),
        id="overlap-managed-storage"),
    # A reported CheckPathAccess overlap (https://www.volcengine.com/article/1146972)
    pytest.param(
        "Input path url 's3://databricks-managed-location/project123' overlaps with managed storage within "
        "'CheckPathAccess' call. .", None, None,
        Refusal("location_overlap", securable_type="path", securable="s3://databricks-managed-location/project123",
                conflicts="managed storage"), id="overlap-check-path-access"),
]


@pytest.mark.parametrize("message, code, details, expected", QUOTED)
def test_quoted_refusals_are_read_for_what_they_say(message, code, details, expected):
    read = read_refusal(message, code, details)
    assert (read.cause, read.privilege, read.securable_type, read.securable, read.conflicts) == (
        expected.cause, expected.privilege, expected.securable_type, expected.securable, expected.conflicts)
    assert read.detail == message.strip()


def explained(refusal: Refusal, **kwargs) -> CatalogError:
    return refusal_error(refusal, principal="train", grantee="app-train", operation="vending READ credentials for "
                         "table main.curated.t", host="https://dbc-1.cloud.databricks.com", **kwargs)


def test_each_cause_becomes_one_sentence_with_the_principal_and_the_fix():
    sentences = {
        "privilege": explained(read_refusal(QUOTED[0].values[0], "PERMISSION_DENIED", QUOTED[0].values[2])),
        "expired": explained(read_refusal("JWT has expired", 403)),
        "off": explained(read_refusal(QUOTED[10].values[0], "PERMISSION_DENIED")),
        "applicable": explained(read_refusal(QUOTED[11].values[0])),
        "overlap": explained(read_refusal(QUOTED[13].values[0])),
    }
    for sentence in map(str, sentences.values()):
        assert "'train'" in sentence and "\n" not in sentence and "vending READ credentials for table " in sentence
    assert isinstance(sentences["privilege"], CatalogPermissionError)
    assert "`GRANT EXTERNAL USE SCHEMA ON SCHEMA icebase.telemetry TO `app-train``" in str(sentences["privilege"])
    assert "clock" in str(sentences["expired"]) and "client id app-train" in str(sentences["expired"])
    assert "Catalog Explorer (Metastore details, External data access)" in str(sentences["off"])
    assert "USE CONNECTION does not apply to sqlserver_finance" in str(sentences["applicable"])
    assert "overlaps managed storage" in str(sentences["overlap"])


UNRECOGNISED = [
    # The open-source catalog's bare refusal (https://github.com/unitycatalog/unitycatalog/issues/1160)
    ("Access denied.", "PERMISSION_DENIED"),
    # A workspace that answers in a shape nothing here knows
    ("Request rejected by policy 7f3a.", "REQUEST_LIMIT_EXCEEDED"),
]


@pytest.mark.parametrize("message, code", UNRECOGNISED)
def test_a_refusal_nothing_recognises_still_names_the_principal_and_the_operation(message, code):
    assert read_refusal(message, code).cause == "unknown"
    sentence = str(explained(read_refusal(message, code), error_code=code))
    assert sentence == (f"Databricks at https://dbc-1.cloud.databricks.com refused principal 'train' (client id "
                        f"app-train) for vending READ credentials for table main.curated.t ({code}: {message}); check "
                        "that principal's grants for it")


def test_an_unrecognised_refusal_through_the_client_names_principal_operation_and_the_privilege_it_needs():
    with FakeDatabricks() as fake:
        fake.add_service_principal("app-train", "train-secret-7c1d")
        fake.add_table("main.curated.t", "s3://lake/curated/t")
        fake.grant("catalog", "main", "app-train", "USE_CATALOG")
        fake.grant("schema", "main.curated", "app-train", "USE_SCHEMA", "EXTERNAL_USE_SCHEMA")
        fake.grant("table", "main.curated.t", "app-train", "SELECT")
        fake.fail_next("POST", r"/api/2\.0/unity-catalog/temporary-table-credentials", 403,
                       {"error_code": "PERMISSION_DENIED", "message": "Access denied."})
        client = DatabricksCatalogClient(fake.url, "train", "app-train", "train-secret-7c1d", catalog="main",
                                         timeout_s=5, retry_timeout_s=5)
        with pytest.raises(CatalogPermissionError) as refused:
            client.temporary_table_credentials("curated.t", "READ")
    assert str(refused.value) == (
        "principal 'train' lacks SELECT on table main.curated.t (needed for vending READ credentials for table "
        "main.curated.t); grant it with `GRANT SELECT ON TABLE main.curated.t TO `app-train`` or run the job as a "
        "principal that has it (catalog said: Access denied.)")
