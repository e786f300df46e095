"""Unity Catalog on Databricks through databricks-sdk, acting as one service principal over OAuth M2M."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import DatabricksError, NotFound, PermissionDenied, ResourceConflict, Unauthenticated
from databricks.sdk.service import catalog as uc

from governed_ft_dagster.catalog.refusals import Refusal, refusal_error, sdk_refusal
from governed_ft_dagster.catalog.base import (
    CatalogClient,
    CatalogError,
    CatalogPermissionError,
    CatalogUnavailableError,
    ColumnInfo,
    PathOperation,
    Privilege,
    SecurableType,
    TableInfo,
    TableOperation,
    VendedCredentials,
)

logger = logging.getLogger(__name__)

# Unity Catalog's REST securable types; registered models are FUNCTION securables in the grants API.
_SDK_SECURABLE = {
    "metastore": "metastore",
    "catalog": "catalog",
    "schema": "schema",
    "table": "table",
    "registered_model": "function",
    "external_location": "external_location",
}
_NAME_DEPTH = {"catalog": 1, "schema": 2, "table": 3, "registered_model": 3}
_TABLE_PRIVILEGE = {"READ": Privilege.SELECT.value, "READ_WRITE": Privilege.MODIFY.value}
_PATH_PRIVILEGE = {
    "PATH_READ": Privilege.READ_FILES.value,
    "PATH_READ_WRITE": Privilege.WRITE_FILES.value,
    "PATH_CREATE_TABLE": "CREATE EXTERNAL TABLE",
}
_MANAGE = "MANAGE"
_UC = "/api/2.1/unity-catalog"
_TYPE_ALIASES = {
    "BIGINT": "LONG",
    "INTEGER": "INT",
    "SMALLINT": "SHORT",
    "TINYINT": "BYTE",
    "BOOL": "BOOLEAN",
    "REAL": "FLOAT",
    "DEC": "DECIMAL",
    "NUMERIC": "DECIMAL",
}
# Spark's JSON name of each primitive type, for the type_json Databricks expects on created columns.
_SPARK_JSON_TYPE = {
    "STRING": "string",
    "LONG": "long",
    "INT": "integer",
    "SHORT": "short",
    "BYTE": "byte",
    "DOUBLE": "double",
    "FLOAT": "float",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_NTZ": "timestamp_ntz",
    "BINARY": "binary",
}
# Shorter strings are not replaced verbatim: that would garble every message that contains them.
_MIN_SECRET_LEN = 8
_SDK_DEBUG_SUFFIX = re.compile(r"\s*Config: .*\Z", re.S)
_SECRET_FIELDS = re.compile(
    r"""(?ix)
    (["']?(?:access_token|refresh_token|id_token|client_secret|secret_access_key|session_token|access_key_id)["']?
      \s*[:=]\s*["']?)[^"'\s,}&]+
    | (bearer\s+)[A-Za-z0-9._~+/=-]+
    """
)


class _Secret:
    """A string that never shows itself in str, repr or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class _RedactingFilter(logging.Filter):
    """Scrubs known secrets and credential fields from databricks-sdk log records (its debug round trips)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) >= _MIN_SECRET_LEN:
            with self._lock:
                self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        with self._lock:
            known = sorted(self._secrets, key=len, reverse=True)
        for secret in known:
            text = text.replace(secret, "***")
        return _SECRET_FIELDS.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as is
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_REDACTOR = _RedactingFilter()
for _name in ("databricks.sdk", "databricks.sdk.oauth", __name__):
    logging.getLogger(_name).addFilter(_REDACTOR)


class DatabricksCatalogClient(CatalogClient):
    """Unity Catalog on a Databricks workspace, acting as the service principal `client_id` for role `principal`."""

    def __init__(
        self,
        host: str,
        principal: str,
        client_id: str,
        client_secret: str,
        *,
        catalog: str,
        timeout_s: float = 30,
        retry_timeout_s: float = 60,
        discovery_url: str | None = None,
    ):
        if not host:
            raise CatalogError(
                "no Databricks host given; set it to the workspace URL, e.g. https://dbc-1234.cloud.databricks.com"
            )
        if not client_id or not client_secret:
            raise CatalogError(
                f"principal '{principal}' has no OAuth client id or secret; "
                "pass the service principal's application id and an OAuth secret (see secret_from_aws)"
            )
        self.host = _normalise_host(host)
        self.principal = principal
        self.client_id = client_id
        self.catalog = catalog
        self.timeout_s = timeout_s
        self.retry_timeout_s = retry_timeout_s
        self.discovery_url = discovery_url or f"{self.host}/oidc/.well-known/oauth-authorization-server"
        self._client_secret = _Secret(client_secret)
        _REDACTOR.add(client_secret)
        self._workspace: WorkspaceClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_aws_secret(
        cls,
        host: str,
        principal: str,
        secret_id: str,
        region: str,
        *,
        catalog: str,
        endpoint_url: str | None = None,
        **kwargs: Any,
    ) -> "DatabricksCatalogClient":
        """Build a client whose OAuth client id and secret live in AWS Secrets Manager."""
        client_id, client_secret = secret_from_aws(secret_id, region, endpoint_url)
        return cls(host, principal, client_id, client_secret, catalog=catalog, **kwargs)

    def access_token(self) -> str:
        """The principal's current OAuth access token (for the Spark connector, which takes it as a setting)."""
        try:
            header = self._ws().config.authenticate().get("Authorization", "")
        except Exception as exc:  # noqa: BLE001 - the SDK raises several types for a refused client
            raise CatalogError(f"principal '{self.principal}' could not obtain an OAuth token from {self.host}: "
                               f"{self._scrub(str(exc))}") from None
        token = header.partition(" ")[2]
        if token:
            _REDACTOR.add(token)
        return token

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(host={self.host!r}, principal={self.principal!r}, "
            f"client_id={self.client_id!r}, catalog={self.catalog!r})"
        )

    # ---- CatalogClient ---------------------------------------------------------------------------------------

    def get_table(self, full_name: str) -> TableInfo:
        """Return the table's id, storage location, format and columns."""
        full = self._qualify("table", full_name)
        with self._translate(f"table {full}", Privilege.SELECT.value, f"reading table {full}"):
            info = self._ws().tables.get(full)
        return _table_info(info, full)

    def table_exists(self, full_name: str) -> bool:
        """Whether the table is registered."""
        full = self._qualify("table", full_name)
        with self._translate(f"schema {_parent(full)}", Privilege.USE_SCHEMA.value, f"looking up table {full}"):
            return bool(self._ws().tables.exists(full).table_exists)

    def temporary_table_credentials(self, full_name: str, operation: TableOperation) -> VendedCredentials:
        """Vend credentials for a table (looks up its id first)."""
        if operation not in _TABLE_PRIVILEGE:
            raise CatalogError(f"unknown table operation {operation!r}; use one of {sorted(_TABLE_PRIVILEGE)}")
        full = self._qualify("table", full_name)
        with self._translate(f"table {full}", _TABLE_PRIVILEGE[operation],
                             f"vending {operation} credentials for table {full}"):
            ws = self._ws()
            info = ws.tables.get(full)
            if not info.table_id:
                raise CatalogError(
                    f"Databricks returned no table_id for table {full}; check that it is a Unity Catalog table"
                )
            response = ws.temporary_table_credentials.generate_temporary_table_credentials(
                operation=uc.TableOperation(operation), table_id=info.table_id
            )
        return self._vended(response, response.url or info.storage_location or "", operation, f"table {full}")

    def temporary_path_credentials(self, url: str, operation: PathOperation) -> VendedCredentials:
        """Vend credentials for a storage path."""
        if operation not in _PATH_PRIVILEGE:
            raise CatalogError(f"unknown path operation {operation!r}; use one of {sorted(_PATH_PRIVILEGE)}")
        with self._translate(f"external_location {url}", _PATH_PRIVILEGE[operation],
                             f"vending {operation} credentials for {url}"):
            response = self._ws().temporary_path_credentials.generate_temporary_path_credentials(
                url=url, operation=uc.PathOperation(operation)
            )
        return self._vended(response, response.url or url, operation, f"path {url}")

    def register_external_table(
        self,
        full_name: str,
        storage_location: str,
        columns: Sequence[ColumnInfo],
        properties: dict[str, str] | None = None,
        comment: str | None = None,
    ) -> TableInfo:
        """Register an external Delta table, or return it when it already exists at that location."""
        full = self._qualify("table", full_name)
        catalog, schema, name = full.split(".")
        existing = self._find_table(full)
        if existing is None:
            props = dict(properties or {})
            if comment:
                # The SDK's tables.create has no comment field; Spark reads a table comment from this property.
                props["comment"] = comment
            sdk_columns = [_sdk_column(c) for c in columns]
            with self._translate(f"schema {catalog}.{schema}", Privilege.CREATE_TABLE.value,
                                 f"registering table {full} at {storage_location}"):
                try:
                    created = self._ws().tables.create(
                        name=name,
                        catalog_name=catalog,
                        schema_name=schema,
                        table_type=uc.TableType.EXTERNAL,
                        data_source_format=uc.DataSourceFormat.DELTA,
                        storage_location=storage_location,
                        columns=sdk_columns,
                        properties=props or None,
                    )
                except ResourceConflict:
                    created = None
            if created is not None:
                return _table_info(created, full)
            existing = self._find_table(full)
            if existing is None:
                raise CatalogError(
                    f"table {full} was reported as existing but cannot be read back; retry the registration"
                )
        if _same_location(existing.storage_location, storage_location):
            return existing
        raise CatalogError(
            f"table {full} is already registered at {existing.storage_location}, not {storage_location}; "
            "drop the old registration or choose another table name"
        )

    def effective_privileges(self, securable_type: SecurableType, full_name: str, principal: str) -> set[Privilege]:
        """Privileges the principal holds on the securable, inherited ones included; ALL PRIVILEGES expands to all."""
        kind, full = self._securable(securable_type, full_name)
        # Raw REST: the SDK's enum drops privileges it does not know, such as CREATE_EXTERNAL_METADATA.
        with self._translate(f"{securable_type} {full}", _MANAGE, f"reading privileges on {securable_type} {full}"):
            response = self._ws().api_client.do("GET", f"{_UC}/effective-permissions/{kind}/{full}",
                                                query={"principal": principal})
        held: set[Privilege] = set()
        for assignment in response.get("privilege_assignments") or ():
            if assignment.get("principal") not in (None, principal):
                continue
            for effective in assignment.get("privileges") or ():
                try:
                    held.add(Privilege.parse(str(effective.get("privilege") or "")))
                except ValueError:
                    continue  # a privilege outside the pipeline's vocabulary (e.g. BROWSE)
        if Privilege.ALL_PRIVILEGES in held:
            held.update(p for p in Privilege if not p.explicit_only)
        return held

    def update_grants(
        self,
        securable_type: SecurableType,
        full_name: str,
        principal: str,
        add: Sequence[Privilege] = (),
        remove: Sequence[Privilege] = (),
    ) -> None:
        """Grant and revoke privileges of one principal on one securable."""
        if not add and not remove:
            return
        kind, full = self._securable(securable_type, full_name)
        change: dict[str, Any] = {"principal": principal}
        if add:
            change["add"] = [p.sdk_name for p in add]
        if remove:
            change["remove"] = [p.sdk_name for p in remove]
        with self._translate(f"{securable_type} {full}", _MANAGE, f"changing grants on {securable_type} {full}"):
            self._ws().api_client.do("PATCH", f"{_UC}/permissions/{kind}/{full}", body={"changes": [change]})

    def metastore_id(self) -> str:
        """The id of the metastore assigned to the workspace."""
        with self._translate("the workspace's metastore assignment", "USE CATALOG"):
            return str(self._ws().metastores.current().metastore_id)

    def create_registered_model(self, full_name: str, comment: str | None = None) -> str:
        """Create the registered model unless it exists; return its full name."""
        full = self._qualify("registered_model", full_name)
        catalog, schema, name = full.split(".")
        with self._translate(f"registered_model {full}", Privilege.EXECUTE.value, f"reading registered model {full}"):
            try:
                self._ws().registered_models.get(full)
                return full
            except NotFound:
                pass
        with self._translate(f"schema {catalog}.{schema}", Privilege.CREATE_MODEL.value,
                             f"creating registered model {full}"):
            try:
                self._ws().registered_models.create(
                    catalog_name=catalog, schema_name=schema, name=name, comment=comment
                )
            except ResourceConflict:
                pass
        return full

    # ---- internals -------------------------------------------------------------------------------------------

    def _ws(self) -> WorkspaceClient:
        """The WorkspaceClient, built on first use after a fast reachability check."""
        with self._lock:
            if self._workspace is not None:
                return self._workspace
            self._check_discovery()
            try:
                config = Config(
                    host=self.host,
                    client_id=self.client_id,
                    client_secret=self._client_secret.reveal(),
                    auth_type="oauth-m2m",
                    discovery_url=self.discovery_url,
                    http_timeout_seconds=self.timeout_s,
                    retry_timeout_seconds=max(1, math.ceil(self.retry_timeout_s)),
                )
            except ValueError as exc:
                raise CatalogError(
                    f"cannot set up OAuth M2M for principal '{self.principal}' (client id {self.client_id}) "
                    f"at {self.host}: {self._scrub(str(exc))}; check the host, client id and secret"
                ) from None
            self._workspace = WorkspaceClient(config=config)
            return self._workspace

    def _check_discovery(self) -> None:
        """Fetch the OIDC discovery document once, without retries, so a dead host fails in seconds."""
        try:
            response = requests.get(self.discovery_url, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise CatalogUnavailableError(self._unavailable(exc)) from None
        try:
            document = response.json() if response.ok else {}
        except ValueError:
            document = {}
        if not isinstance(document, dict) or not document.get("token_endpoint"):
            raise CatalogError(
                f"{self.discovery_url} returned no OAuth discovery document (HTTP {response.status_code}); "
                "check that host is a Databricks workspace URL or pass discovery_url explicitly"
            )

    @contextmanager
    def _translate(self, securable: str, privilege: str | Sequence[str], operation: str = "") -> Iterator[None]:
        """Turn SDK and transport failures into catalog errors naming the principal, securable and fix."""
        operation = operation or f"{privilege if isinstance(privilege, str) else ', '.join(privilege)} on {securable}"
        try:
            yield
        except CatalogError:
            raise
        except PermissionDenied as exc:
            raise self._refused(exc, operation, securable, privilege) from None
        except Unauthenticated as exc:
            refusal = self._refusal(exc)
            if refusal.cause != "unknown":
                raise self._refused(exc, operation) from None
            raise CatalogError(
                f"Databricks at {self.host} rejected the token of principal '{self.principal}' "
                f"(client id {self.client_id}): {self._scrub(str(exc))}; "
                "check that the service principal exists in the workspace"
            ) from None
        except NotFound as exc:
            if self._refusal(exc).cause != "unknown":
                raise self._refused(exc, operation, securable) from None
            raise CatalogError(
                f"{securable} was not found in Unity Catalog at {self.host} ({self._scrub(str(exc))}); "
                "check the name or register it first"
            ) from None
        except DatabricksError as exc:
            if self._refusal(exc).cause != "unknown":
                raise self._refused(exc, operation, securable) from None
            code = exc.error_code or type(exc).__name__
            raise CatalogError(
                f"Databricks request on {securable} for principal '{self.principal}' failed: "
                f"{code}: {self._scrub(str(exc))}"
            ) from None
        except (requests.ConnectionError, requests.Timeout, TimeoutError, ConnectionError) as exc:
            raise CatalogUnavailableError(self._unavailable(exc)) from None
        except ValueError as exc:
            # The SDK raises a bare ValueError when the OAuth token endpoint refuses the client.
            raise CatalogError(
                f"OAuth M2M sign-in of principal '{self.principal}' (client id {self.client_id}) "
                f"at {self.host} failed: {self._scrub(str(exc))}; "
                "check the client secret and that the service principal is in the workspace"
            ) from None

    def _refusal(self, exc: DatabricksError) -> Refusal:
        return sdk_refusal(exc, self._scrub(str(exc)))

    def _refused(self, exc: DatabricksError, operation: str, securable: str = "",
                 privilege: str | Sequence[str] = ()) -> CatalogError:
        """The refusal as one sentence; an unrecognised refusal names the privilege the operation needs."""
        return refusal_error(self._refusal(exc), principal=self.principal, grantee=self.client_id,
                             operation=operation, host=self.host, error_code=exc.error_code,
                             fallback_securable=securable, fallback_privilege=privilege)

    def _unavailable(self, exc: BaseException) -> str:
        """One sentence naming the host, what went wrong and the fix."""
        cause = exc.__cause__ or exc.__context__ or exc
        text = f"{exc} {cause}".lower()
        if "refused" in text:
            reason = "connection refused"
        elif "name or service not known" in text or "nodename nor servname" in text or "failed to resolve" in text:
            reason = "host name does not resolve"
        elif "timed out" in text or isinstance(exc, (requests.Timeout, TimeoutError)):
            reason = f"no answer within {self.timeout_s:g}s per request and {self.retry_timeout_s:g}s overall"
        else:
            reason = type(cause).__name__
        return (
            f"Databricks workspace {self.host} is unreachable ({reason}); "
            "check the host URL and network access (VPN, firewall, private link) and retry"
        )

    def _scrub(self, text: str) -> str:
        """The text without secrets and without the SDK's appended `Config: ...` debug dump."""
        text = _SDK_DEBUG_SUFFIX.sub("", text)
        secret = self._client_secret.reveal()
        if len(secret) >= _MIN_SECRET_LEN:
            text = text.replace(secret, "***")
        return _REDACTOR.scrub(text)

    def _vended(self, response: Any, location: str, operation: str, what: str) -> VendedCredentials:
        aws = response.aws_temp_credentials
        if aws is None or not aws.access_key_id:
            raise CatalogError(
                f"Databricks vended no AWS credentials for {what}; only S3 storage is supported, "
                "so store the data on S3 or extend DatabricksCatalogClient for this cloud"
            )
        expiration = (
            dt.datetime.fromtimestamp(response.expiration_time / 1000, tz=dt.timezone.utc)
            if response.expiration_time
            else None
        )
        return VendedCredentials(
            location=location,
            operation=operation,
            expiration=expiration,
            aws_access_key_id=aws.access_key_id,
            aws_secret_access_key=aws.secret_access_key,
            aws_session_token=aws.session_token,
        )

    def _find_table(self, full: str) -> TableInfo | None:
        with self._translate(f"table {full}", Privilege.SELECT.value):
            try:
                return _table_info(self._ws().tables.get(full), full)
            except NotFound:
                return None

    def _securable(self, securable_type: SecurableType, full_name: str) -> tuple[str, str]:
        if securable_type not in _SDK_SECURABLE:
            raise CatalogError(f"unknown securable type {securable_type!r}; use one of {sorted(_SDK_SECURABLE)}")
        if securable_type in ("external_location", "metastore"):
            return _SDK_SECURABLE[securable_type], full_name
        return _SDK_SECURABLE[securable_type], self._qualify(securable_type, full_name)

    def _qualify(self, securable_type: str, name: str) -> str:
        """Prefix the configured catalog when the name lacks it."""
        depth = _NAME_DEPTH[securable_type]
        parts = name.split(".")
        if not all(parts):
            raise CatalogError(f"{name!r} is not a valid {securable_type} name")
        if len(parts) == depth:
            return name
        if len(parts) == depth - 1:
            return f"{self.catalog}.{name}"
        raise CatalogError(
            f"{name!r} is not a valid {securable_type} name; use {'.'.join(['catalog', 'schema', 'name'][:depth])}"
        )


def secret_from_aws(secret_id: str, region: str, endpoint_url: str | None = None) -> tuple[str, str]:
    """Read `{"client_id", "client_secret"}` JSON from AWS Secrets Manager."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    client = boto3.client(
        "secretsmanager",
        region_name=region,
        endpoint_url=endpoint_url,
        config=BotoConfig(connect_timeout=10, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
    )
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        if code == "ResourceNotFoundException":
            raise CatalogError(
                f"AWS Secrets Manager in {region} has no secret '{secret_id}'; create it with "
                f"`aws secretsmanager create-secret --region {region} --name {secret_id} "
                "--secret-string '{\"client_id\": \"<application id>\", \"client_secret\": \"<oauth secret>\"}'` "
                "or point secret_id at the existing one"
            ) from None
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            said = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
            raise CatalogError(
                f"reading secret '{secret_id}' in {region} was refused ({code}{': ' + said if said else ''}); "
                "grant secretsmanager:GetSecretValue on it to this AWS identity"
            ) from None
        raise CatalogError(
            f"reading secret '{secret_id}' from AWS Secrets Manager in {region} failed ({code})"
        ) from None
    except NoCredentialsError:
        raise CatalogError(
            f"no AWS credentials to read secret '{secret_id}'; give the job an AWS role or set AWS_PROFILE"
        ) from None
    except EndpointConnectionError:
        raise CatalogUnavailableError(
            f"AWS Secrets Manager ({endpoint_url or region}) is unreachable while reading secret '{secret_id}'; "
            "check the region, endpoint_url and network access"
        ) from None
    except BotoCoreError as exc:
        raise CatalogError(f"reading secret '{secret_id}' in {region} failed ({type(exc).__name__})") from None

    raw = response.get("SecretString")
    if raw is None and response.get("SecretBinary") is not None:
        raw = bytes(response["SecretBinary"]).decode("utf-8", errors="replace")
    document = secret_document(raw)
    if document is None:
        raise CatalogError(f"secret '{secret_id}' is not a JSON object; store it as {SECRET_SHAPE}")
    missing = [key for key in ("client_id", "client_secret") if not document.get(key)]
    if missing:
        raise CatalogError(f"secret '{secret_id}' lacks {', '.join(missing)}; add it to the secret's JSON")
    _REDACTOR.add(str(document["client_secret"]))
    return str(document["client_id"]), str(document["client_secret"])


SECRET_SHAPE = '{"client_id": "<application id>", "client_secret": "<oauth secret>"}'


def secret_document(raw: str | None) -> dict[str, Any] | None:
    """A principal's secret as its JSON object, or None when it is not one."""
    try:
        document = json.loads(raw or "")
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _normalise_host(host: str) -> str:
    host = host.strip().rstrip("/")
    return host if "://" in host else f"https://{host}"


def _parent(full: str) -> str:
    return full.rsplit(".", 1)[0]


def _same_location(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _sdk_column(column: ColumnInfo) -> uc.ColumnInfo:
    """A pipeline column as the SDK's ColumnInfo, with a Spark type_json for primitive types."""
    key = column.type_name.strip().upper()
    key = _TYPE_ALIASES.get(key, key)
    try:
        type_name = uc.ColumnTypeName(key)
    except ValueError:
        raise CatalogError(
            f"column {column.name!r} has type {column.type_name!r}, which Unity Catalog does not know; "
            f"use one of {', '.join(t.value for t in uc.ColumnTypeName)}"
        ) from None
    spark_type = _SPARK_JSON_TYPE.get(key) or (column.type_text.lower() if key == "DECIMAL" else None)
    type_json = (
        json.dumps({"name": column.name, "type": spark_type, "nullable": column.nullable, "metadata": {}})
        if spark_type
        else None
    )
    return uc.ColumnInfo(
        name=column.name,
        type_name=type_name,
        type_text=column.type_text,
        type_json=type_json,
        position=column.position,
        nullable=column.nullable,
        comment=column.comment,
    )


def _table_info(info: uc.TableInfo, full: str) -> TableInfo:
    columns = tuple(
        ColumnInfo(
            name=c.name or "",
            type_name=c.type_name.value if c.type_name else "",
            type_text=c.type_text or "",
            position=c.position if c.position is not None else i,
            nullable=c.nullable if c.nullable is not None else True,
            comment=c.comment,
        )
        for i, c in enumerate(info.columns or ())
    )
    return TableInfo(
        full_name=info.full_name or full,
        table_id=info.table_id or "",
        storage_location=info.storage_location or "",
        data_source_format=info.data_source_format.value if info.data_source_format else "",
        table_type=info.table_type.value if info.table_type else "",
        columns=columns,
        properties=dict(info.properties or {}),
    )


__all__ = ["DatabricksCatalogClient", "secret_from_aws"]
