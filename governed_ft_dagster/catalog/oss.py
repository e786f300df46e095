"""CatalogClient for the open-source Unity Catalog server, over its REST API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence
from urllib.parse import quote

import requests

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

API = "/api/2.1/unity-catalog"
SCIM_USERS = "/api/1.0/unity-control/scim2/Users"
_OPERATION_PRIVILEGE = {"READ": Privilege.SELECT, "READ_WRITE": Privilege.MODIFY,
                        "PATH_READ": Privilege.READ_FILES, "PATH_READ_WRITE": Privilege.WRITE_FILES,
                        "PATH_CREATE_TABLE": Privilege.CREATE_TABLE}


class OssCatalogClient(CatalogClient):
    """Talks to one OSS catalog server with one principal's token."""

    def __init__(self, url: str, token: str, principal: str, *, timeout_s: float = 15.0):
        self.url = url.rstrip("/")
        self.principal = principal
        self._token = token
        self._timeout = timeout_s
        self._session = requests.Session()

    def access_token(self) -> str:
        """The principal's bearer token (for the Spark connector, which takes it as a setting)."""
        return self._token

    def __repr__(self) -> str:
        return f"OssCatalogClient(url={self.url!r}, principal={self.principal!r})"

    def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                 securable: str = "", privilege: Privilege | str | None = None) -> Any:
        try:
            response = self._session.request(
                method, f"{self.url}{path}", json=body, params=params, timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}",
                         "Accept": "application/json, application/scim+json"},
            )
        except requests.RequestException as exc:
            raise CatalogUnavailableError(
                f"the catalog at {self.url} did not answer ({type(exc).__name__}); start it with `governed-ft stack up`"
            ) from None
        if response.status_code in (401, 403):
            detail = _message(response)
            if privilege is None:
                raise CatalogError(f"the catalog refused principal '{self.principal}' on {securable or path}: {detail}")
            raise CatalogPermissionError(self.principal, securable or path, getattr(privilege, "value", privilege), detail)
        if response.status_code == 404:
            raise NotFound(f"{securable or path} does not exist in the catalog at {self.url}")
        if response.status_code >= 400:
            raise CatalogError(f"the catalog answered {response.status_code} to {method} {path}: {_message(response)}")
        return response.json() if response.content else {}

    def get_table(self, full_name: str) -> TableInfo:
        data = self._request("GET", f"{API}/tables/{quote(full_name)}", securable=f"table {full_name}",
                             privilege=Privilege.SELECT)
        return _table_info(data)

    def table_exists(self, full_name: str) -> bool:
        try:
            self.get_table(full_name)
        except NotFound:
            return False
        return True

    def temporary_table_credentials(self, full_name: str, operation: TableOperation) -> VendedCredentials:
        table = self.get_table(full_name)
        data = self._request("POST", f"{API}/temporary-table-credentials",
                             body={"table_id": table.table_id, "operation": operation},
                             securable=f"table {full_name}", privilege=_OPERATION_PRIVILEGE[operation])
        return _credentials(data, table.storage_location, operation)

    def temporary_path_credentials(self, url: str, operation: PathOperation) -> VendedCredentials:
        data = self._request("POST", f"{API}/temporary-path-credentials", body={"url": url, "operation": operation},
                             securable=f"path {url}", privilege=_OPERATION_PRIVILEGE[operation])
        return _credentials(data, url, operation)

    def register_external_table(self, full_name: str, storage_location: str, columns: Sequence[ColumnInfo],
                                properties: dict[str, str] | None = None, comment: str | None = None) -> TableInfo:
        catalog, schema, name = _split(full_name, 3)
        try:
            existing = self.get_table(full_name)
        except NotFound:
            existing = None
        if existing is not None:
            if existing.storage_location.rstrip("/") != storage_location.rstrip("/"):
                raise CatalogError(
                    f"table {full_name} is already registered at {existing.storage_location}, not {storage_location}; "
                    "drop it or register under another name"
                )
            return existing
        body = {
            "name": name, "catalog_name": catalog, "schema_name": schema, "table_type": "EXTERNAL",
            "data_source_format": "DELTA", "storage_location": storage_location,
            "columns": [_column_body(c) for c in columns], "properties": properties or {},
        }
        if comment:
            body["comment"] = comment
        data = self._request("POST", f"{API}/tables", body=body, securable=f"schema {catalog}.{schema}",
                             privilege=Privilege.CREATE_TABLE)
        return _table_info(data)

    def direct_privileges(self, securable_type: SecurableType, full_name: str, principal: str) -> set[Privilege]:
        data = self._request("GET", f"{API}/permissions/{securable_type}/{quote(full_name)}",
                             params={"principal": principal}, securable=f"{securable_type} {full_name}")
        held: set[Privilege] = set()
        for assignment in data.get("privilege_assignments") or []:
            if assignment.get("principal") == principal:
                held.update(Privilege.parse(p) for p in assignment.get("privileges") or [] if _known(p))
        return held

    def effective_privileges(self, securable_type: SecurableType, full_name: str, principal: str) -> set[Privilege]:
        held = set()
        for ancestor_type, ancestor in _lineage_of_securable(securable_type, full_name):
            try:
                held |= self.direct_privileges(ancestor_type, ancestor, principal)
            except NotFound:
                continue
        return held

    def update_grants(self, securable_type: SecurableType, full_name: str, principal: str,
                      add: Sequence[Privilege] = (), remove: Sequence[Privilege] = ()) -> None:
        change: dict[str, Any] = {"principal": principal}
        if add:
            change["add"] = [p.value for p in add]
        if remove:
            change["remove"] = [p.value for p in remove]
        self._request("PATCH", f"{API}/permissions/{securable_type}/{quote(full_name)}",
                      body={"changes": [change]}, securable=f"{securable_type} {full_name}")

    def create_registered_model(self, full_name: str, comment: str | None = None) -> str:
        catalog, schema, name = _split(full_name, 3)
        try:
            self._request("GET", f"{API}/models/{quote(full_name)}", securable=f"registered_model {full_name}")
            return full_name
        except NotFound:
            pass
        body = {"name": name, "catalog_name": catalog, "schema_name": schema}
        if comment:
            body["comment"] = comment
        self._request("POST", f"{API}/models", body=body, securable=f"schema {catalog}.{schema}",
                      privilege=Privilege.CREATE_MODEL)
        return full_name

    def ensure_catalog(self, name: str, comment: str = "") -> bool:
        """Create the catalog unless it exists; return whether it was created."""
        try:
            self._request("GET", f"{API}/catalogs/{quote(name)}", securable=f"catalog {name}")
            return False
        except NotFound:
            self._request("POST", f"{API}/catalogs", body={"name": name, "comment": comment}, securable=f"catalog {name}")
            return True

    def ensure_schema(self, catalog: str, name: str, comment: str = "") -> bool:
        """Create the schema unless it exists; return whether it was created."""
        full_name = f"{catalog}.{name}"
        try:
            self._request("GET", f"{API}/schemas/{quote(full_name)}", securable=f"schema {full_name}")
            return False
        except NotFound:
            self._request("POST", f"{API}/schemas", body={"name": name, "catalog_name": catalog, "comment": comment},
                          securable=f"schema {full_name}")
            return True

    def ensure_storage_credential(self, name: str, role_arn: str, comment: str = "") -> bool:
        """Create the storage credential unless it exists; return whether it was created."""
        try:
            self._request("GET", f"{API}/credentials/{quote(name)}", securable=f"credential {name}")
            return False
        except NotFound:
            self._request("POST", f"{API}/credentials", securable=f"credential {name}", body={
                "name": name, "comment": comment, "purpose": "STORAGE", "aws_iam_role": {"role_arn": role_arn}})
            return True

    def ensure_external_location(self, name: str, url: str, credential: str, comment: str = "") -> bool:
        """Create the external location unless it exists at url; return whether it was created."""
        try:
            existing = self._request("GET", f"{API}/external-locations/{quote(name)}",
                                     securable=f"external_location {name}")
        except NotFound:
            self._request("POST", f"{API}/external-locations", securable=f"external_location {name}", body={
                "name": name, "url": url, "credential_name": credential, "comment": comment})
            return True
        if str(existing.get("url", "")).rstrip("/") != url.rstrip("/"):
            raise CatalogError(f"external location {name} points at {existing.get('url')}, not {url}; delete it "
                               "or start from an empty state folder, then bootstrap again")
        return False

    def list_names(self, kind: str, **params: str) -> list[str]:
        """Names of catalogs or schemas (first page is enough for this project)."""
        data = self._request("GET", f"{API}/{kind}", params=params)
        return sorted(item["name"] for item in data.get(kind, []) or [])

    def ensure_user(self, email: str, display_name: str) -> bool:
        """Create a SCIM user unless one with that e-mail exists; return whether it was created."""
        found = self._request("GET", SCIM_USERS, params={"filter": f'emails.value eq "{email}"'})
        if any(_user_email(u) == email for u in found.get("Resources", []) or []):
            return False
        self._request("POST", SCIM_USERS, body={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "displayName": display_name, "emails": [{"value": email, "primary": True}],
        })
        return True

    def list_user_emails(self) -> list[str]:
        found = self._request("GET", SCIM_USERS)
        return sorted(e for e in (_user_email(u) for u in found.get("Resources", []) or []) if e)


class NotFound(CatalogError):
    """The securable does not exist."""


def _message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return str(data.get("message") or data.get("error_code") or data)[:300]


def _known(privilege: str) -> bool:
    try:
        Privilege.parse(privilege)
    except ValueError:
        return False
    return True


def _split(full_name: str, parts: int) -> list[str]:
    pieces = full_name.split(".")
    if len(pieces) != parts:
        raise CatalogError(f"'{full_name}' is not a {parts}-part name (catalog.schema.name)")
    return pieces


def _lineage_of_securable(securable_type: str, full_name: str) -> list[tuple[str, str]]:
    if securable_type in ("external_location", "metastore"):
        return [(securable_type, full_name)]
    pieces = full_name.split(".")
    chain: list[tuple[str, str]] = [("catalog", pieces[0])]
    if len(pieces) >= 2:
        chain.append(("schema", ".".join(pieces[:2])))
    if len(pieces) == 3:
        chain.append((securable_type, full_name))
    return chain


def _column_body(column: ColumnInfo) -> dict:
    return {
        "name": column.name, "type_name": column.type_name, "type_text": column.type_text,
        "type_json": json.dumps({"name": column.name, "type": column.type_text, "nullable": column.nullable, "metadata": {}}),
        "position": column.position, "nullable": column.nullable, "comment": column.comment,
    }


def _table_info(data: dict) -> TableInfo:
    columns = tuple(
        ColumnInfo(c["name"], c.get("type_name", ""), c.get("type_text", ""), c.get("position", i), c.get("nullable", True),
                   c.get("comment"))
        for i, c in enumerate(data.get("columns") or [])
    )
    full_name = ".".join(data[k] for k in ("catalog_name", "schema_name", "name"))
    return TableInfo(full_name, data["table_id"], data.get("storage_location", ""), data.get("data_source_format", ""),
                     data.get("table_type", ""), columns, dict(data.get("properties") or {}))


def _credentials(data: dict, location: str, operation: str) -> VendedCredentials:
    aws = data.get("aws_temp_credentials") or {}
    expiration = data.get("expiration_time")
    return VendedCredentials(
        location=data.get("url") or location,
        operation=operation,
        expiration=dt.datetime.fromtimestamp(expiration / 1000, dt.timezone.utc) if expiration else None,
        aws_access_key_id=aws.get("access_key_id"),
        aws_secret_access_key=aws.get("secret_access_key"),
        aws_session_token=aws.get("session_token"),
    )


def _user_email(user: dict) -> str | None:
    emails = user.get("emails") or []
    return emails[0].get("value") if emails else None
