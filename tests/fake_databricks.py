"""A local stand-in for a Databricks workspace: real REST paths and shapes, in-memory state, recorded requests.

Usage::

    with FakeDatabricks() as fake:
        fake.add_service_principal("app-train", "train-secret")
        fake.add_table("main.raw.filings", "s3://bucket/raw/filings")
        fake.grant("catalog", "main", "app-train", "USE_CATALOG")
        ...  # point a WorkspaceClient at fake.url
        assert fake.paths("/api/") == [...]

Routes live in a table (`FakeDatabricks.routes`); add one with `fake.add_route("GET", r"/api/2.0/x/(?P<id>[^/]+)", fn)`
where `fn(fake, request, **groups)` returns `(status, json_body)` or raises `ApiError`.
Grants are kept per (securable type, full name) and per principal, in the SDK's underscore spelling; privileges
granted on a catalog or schema are inherited by what it contains, grants to the `account users` group count for
every principal, and owners and admins hold every privilege except those Databricks only ever grants explicitly.
Provisioning routes (admins only): storage credentials, external locations, catalogs, schemas, table and model
listings, SCIM service principals and their OAuth secrets (a new secret becomes the client's login secret).

The rules and the refusals follow Databricks' documentation and the SDK's error mapping (databricks-sdk 0.162,
`databricks/sdk/errors/`), each with its source next to it; none is taken from the pipeline's own error parsing.
OAuth tokens end `token_ttl_s` after they are issued by the workspace's clock, which `advance(seconds)` moves on.
Requests that match no route are answered ENDPOINT_NOT_FOUND and listed in `unserved`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

Handler = Callable[..., "tuple[int, Any]"]

_PARENT_TYPES = ("catalog", "schema")
_CRASHED = -1
ACCOUNT_USERS = "account users"
# "This privilege must always be granted explicitly ... ALL PRIVILEGES does not include the EXTERNAL USE SCHEMA
# privilege, and schema owners do not have this privilege by default."
# (https://docs.databricks.com/aws/en/external-access/admin); GRANT: "ALL PRIVILEGES does not include the EXTERNAL
# USE SCHEMA, EXTERNAL USE LOCATION, or MANAGE privileges" (https://docs.databricks.com/aws/en/sql/language-manual/
# security-grant). Owners may still manage grants; nobody holds EXTERNAL USE by ownership or admin rights.
EXPLICIT_ONLY = frozenset({"EXTERNAL_USE_SCHEMA", "EXTERNAL_USE_LOCATION"})
NOT_IN_ALL_PRIVILEGES = EXPLICIT_ONLY | {"MANAGE"}
# Which privileges apply to which securable, after "Unity Catalog privileges reference"
# (https://docs.databricks.com/aws/en/data-governance/unity-catalog/manage-privileges/privileges): a catalog or schema
# also takes the privileges of the objects it contains, which they inherit.
_CONTAINED = ("EXECUTE", "MODIFY", "READ_VOLUME", "REFRESH", "SELECT", "WRITE_VOLUME")
APPLICABLE: dict[str, frozenset[str]] = {
    "metastore": frozenset({"CREATE_CATALOG", "CREATE_CLEAN_ROOM", "CREATE_CONNECTION", "CREATE_EXTERNAL_LOCATION",
                            "CREATE_EXTERNAL_METADATA", "CREATE_PROVIDER", "CREATE_RECIPIENT", "CREATE_SHARE",
                            "CREATE_SERVICE_CREDENTIAL", "CREATE_STORAGE_CREDENTIAL", "MANAGE_ALLOWLIST",
                            "SET_SHARE_PERMISSION", "USE_MARKETPLACE_ASSETS", "USE_PROVIDER", "USE_RECIPIENT",
                            "USE_SHARE"}),
    "catalog": frozenset({"ALL_PRIVILEGES", "APPLY_TAG", "BROWSE", "CREATE_SCHEMA", "USE_CATALOG", "CREATE_FUNCTION",
                          "CREATE_TABLE", "CREATE_MATERIALIZED_VIEW", "CREATE_MODEL", "CREATE_VOLUME",
                          "EXTERNAL_USE_SCHEMA", "MANAGE", "USE_SCHEMA", *_CONTAINED}),
    "schema": frozenset({"ALL_PRIVILEGES", "APPLY_TAG", "CREATE_FUNCTION", "CREATE_TABLE", "CREATE_MODEL",
                         "CREATE_VOLUME", "CREATE_MATERIALIZED_VIEW", "MANAGE", "EXTERNAL_USE_SCHEMA", "USE_SCHEMA",
                         *_CONTAINED}),
    "table": frozenset({"ALL_PRIVILEGES", "APPLY_TAG", "MANAGE", "MODIFY", "SELECT"}),
    "function": frozenset({"ALL_PRIVILEGES", "APPLY_TAG", "EXECUTE", "MANAGE"}),
    "external_location": frozenset({"ALL_PRIVILEGES", "BROWSE", "CREATE_EXTERNAL_TABLE", "CREATE_EXTERNAL_VOLUME",
                                    "CREATE_MANAGED_STORAGE", "EXTERNAL_USE_LOCATION", "MANAGE", "READ_FILES",
                                    "WRITE_FILES"}),
    "external_metadata": frozenset({"ALL_PRIVILEGES", "BROWSE", "MANAGE", "MODIFY"}),
}
_DISPLAY_TYPE = {
    "catalog": "Catalog",
    "schema": "Schema",
    "table": "Table",
    "function": "Function",
    "external_location": "External Location",
    "metastore": "Metastore",
    "external_metadata": "External Metadata",
}


class ApiError(Exception):
    """An error answer in the Databricks JSON shape, with google.rpc details and response headers when given."""

    def __init__(self, status: int, error_code: str | int, message: str, *,
                 details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_code": self.error_code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def error_info(reason: str, metadata: dict[str, str]) -> list[dict[str, Any]]:
    """The `details` Unity Catalog attaches to a refusal: a google.rpc ErrorInfo and a RequestInfo.

    Shape as Databricks answered a missing EXTERNAL USE SCHEMA (quoted in
    https://github.com/Azure/spark-cdm-connector/issues/149) and as the SDK parses it
    (databricks/sdk/errors/details.py).
    """
    return [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
         "domain": "unity-catalog.databricks.com", "metadata": metadata},
        {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": str(uuid.uuid4()), "serving_data": ""},
    ]


@dataclass(frozen=True)
class Raw:
    """A response body sent as is (file contents), with its content type."""

    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received; header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes = field(repr=False)
    principal: str | None = None


@dataclass(frozen=True)
class Route:
    """A method and a full-match path pattern served by a handler."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    authenticated: bool = True


@dataclass
class _Injected:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int


class FakeDatabricks:
    """A threaded HTTP server on 127.0.0.1 that answers like a Databricks workspace with Unity Catalog."""

    def __init__(
        self, *, workspace_id: str = "1234567890123456", account_id: str | None = None, token_ttl_s: int = 3600
    ):
        self.workspace_id = workspace_id
        self.account_id = account_id or str(uuid.UUID(int=0x0FA4E))
        self.token_ttl_s = token_ttl_s
        self.credential_ttl_s = 3600
        self.vendor: Callable[[str, str, str, int], dict[str, str]] | None = None
        self.metastore_id = str(uuid.uuid4())
        self.external_access_enabled = True
        self.clients: dict[str, str] = {}
        self.admins: set[str] = set()
        self.tokens: dict[str, str] = {}
        self.token_expiry: dict[str, float] = {}
        self.clock_offset_s = 0.0
        self.unserved: list[str] = []
        self.model_versions: dict[str, dict[str, dict[str, Any]]] = {}
        self.tables: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.external_locations: dict[str, dict[str, Any]] = {}
        self.grants: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.storage_credentials: dict[str, dict[str, Any]] = {}
        self.catalogs: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.service_principals: dict[str, dict[str, Any]] = {}
        self.sp_secrets: dict[str, list[dict[str, Any]]] = {}
        self.vended: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.routes: list[Route] = []
        self._injected: list[_Injected] = []
        self._crash: tuple[str, re.Pattern[str], threading.Event] | None = None
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._install_default_routes()

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> "FakeDatabricks":
        """Listen on a loopback port (a free one by default) and serve in a daemon thread; state survives restarts."""
        fake = self

        class _Handler(_RequestHandler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-databricks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop kept-alive connections and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeDatabricks":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "call start() first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- clock ------------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The workspace's clock, in seconds since the epoch."""
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        """Move the workspace's clock on, as if that much time had passed (tokens issued before may end)."""
        with self._lock:
            self.clock_offset_s += seconds

    # ---- state set-up -----------------------------------------------------------------------------------------

    def add_service_principal(self, client_id: str, client_secret: str, *, admin: bool = False) -> None:
        """Register an OAuth M2M client; its application id (client_id) is the principal name in grants."""
        with self._lock:
            self.clients[client_id] = client_secret
            if admin:
                self.admins.add(client_id)

    def add_table(
        self,
        full_name: str,
        storage_location: str,
        columns: Iterable[dict[str, Any]] = (),
        *,
        owner: str = "admin",
        table_type: str = "EXTERNAL",
        data_source_format: str = "DELTA",
        properties: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Register a table directly, bypassing permission checks."""
        catalog, schema, name = _split3(full_name)
        info = {
            "name": name,
            "catalog_name": catalog,
            "schema_name": schema,
            "full_name": full_name,
            "table_id": str(uuid.uuid4()),
            "table_type": table_type,
            "data_source_format": data_source_format,
            "storage_location": storage_location,
            "columns": [dict(c) for c in columns],
            "properties": dict(properties or {}),
            "owner": owner,
            "metastore_id": self.metastore_id,
            "created_at": _now_ms(),
            "created_by": owner,
            "updated_at": _now_ms(),
            "updated_by": owner,
        }
        with self._lock:
            self.tables[full_name] = info
        return info

    def add_external_location(self, name: str, url: str, *, owner: str = "admin") -> None:
        """Register an external location covering every path under url."""
        with self._lock:
            self.external_locations[name] = {"name": name, "url": url.rstrip("/"), "owner": owner}

    def grant(self, securable_type: str, full_name: str, principal: str, *privileges: str) -> None:
        """Grant privileges (either spelling) directly, bypassing permission checks but not applicability."""
        kind = _norm_type(securable_type)
        wanted = [_norm_priv(p) for p in privileges]
        for privilege in wanted:
            require_applicable(kind, full_name, privilege)
        with self._lock:
            self.grants.setdefault((kind, full_name), {}).setdefault(principal, set()).update(wanted)

    def revoke(self, securable_type: str, full_name: str, principal: str, *privileges: str) -> None:
        """Revoke privileges directly."""
        with self._lock:
            held = self.grants.get((_norm_type(securable_type), full_name), {}).get(principal, set())
            held.difference_update(_norm_priv(p) for p in privileges)

    def add_route(self, method: str, pattern: str, handler: Handler, *, authenticated: bool = True) -> None:
        """Serve `method pattern` (a full-match regex on the path) with handler(fake, request, **groups)."""
        self.routes.insert(0, Route(method.upper(), re.compile(pattern), handler, authenticated))

    def crash_on(self, method: str, pattern: str) -> threading.Event:
        """Stop the whole server when the next matching request arrives, leaving that request unanswered."""
        crashed = threading.Event()
        with self._lock:
            self._crash = (method.upper(), re.compile(pattern), crashed)
        return crashed

    def fail_next(self, method: str, pattern: str, status: int, body: Any, *, times: int = 1) -> None:
        """Answer the next `times` matching requests with status and body instead of the route."""
        with self._lock:
            self._injected.append(_Injected(method.upper(), re.compile(pattern), status, body, times))

    # ---- assertions -------------------------------------------------------------------------------------------

    def calls(self, prefix: str = "") -> list[RecordedRequest]:
        """Recorded requests whose path starts with prefix."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def paths(self, prefix: str = "") -> list[str]:
        """`METHOD path` of recorded requests whose path starts with prefix."""
        return [f"{r.method} {r.path}" for r in self.calls(prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- privilege model --------------------------------------------------------------------------------------

    def effective(self, securable_type: str, full_name: str, principal: str) -> list[dict[str, Any]]:
        """Effective privileges of principal on a securable as the API lists them, inherited ones included."""
        securable_type = _norm_type(securable_type)
        out: list[dict[str, Any]] = []
        with self._lock:
            for kind, name in _lineage(securable_type, full_name):
                grants = self.grants.get((kind, name), {})
                for privilege in sorted(grants.get(principal, set()) | grants.get(ACCOUNT_USERS, set())):
                    entry: dict[str, Any] = {"privilege": privilege}
                    if (kind, name) != (securable_type, full_name):
                        entry["inherited_from_type"] = kind.upper()
                        entry["inherited_from_name"] = name
                    out.append(entry)
        return out

    def holds(self, principal: str, securable_type: str, full_name: str, privilege: str) -> bool:
        """Whether principal holds privilege on the securable: granted (directly, inherited or to account users),
        else by admin rights, ownership or ALL PRIVILEGES, which never confer EXTERNAL USE SCHEMA or LOCATION."""
        securable_type, privilege = _norm_type(securable_type), _norm_priv(privilege)
        held = {e["privilege"] for e in self.effective(securable_type, full_name, principal)}
        if privilege in held:
            return True
        if privilege in EXPLICIT_ONLY:
            return False
        if principal in self.admins or self._owner(securable_type, full_name) == principal:
            return True
        return "ALL_PRIVILEGES" in held and privilege not in NOT_IN_ALL_PRIVILEGES

    def require(self, principal: str | None, securable_type: str, full_name: str, *privileges: str) -> None:
        """Raise the 403 the service gives for the first privilege the principal lacks."""
        for privilege in privileges:
            if not self.holds(principal or "", securable_type, full_name, privilege):
                raise permission_denied(securable_type, full_name, privilege)

    def require_table_path(self, principal: str | None, full_name: str, *privileges: str) -> None:
        """USE CATALOG and USE SCHEMA on the parents, then privileges on the table itself."""
        catalog, schema, _ = _split3(full_name)
        self.require(principal, "catalog", catalog, "USE_CATALOG")
        self.require(principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
        self.require(principal, "table", full_name, *privileges)

    def require_external_use(self, principal: str | None, table_full_name: str) -> None:
        """Credential vending to an engine outside the workspace needs EXTERNAL USE SCHEMA on the table's schema."""
        catalog, schema, _ = _split3(table_full_name)
        self.require(principal, "schema", f"{catalog}.{schema}", "EXTERNAL_USE_SCHEMA")

    def require_external_access(self) -> None:
        """Refuse vending when the metastore's external data access is off.

        The switch: "The metastore must have external_access_enabled flag set to true (default false)" (SDK
        docstrings of generate_temporary_table_credentials and _path_credentials, databricks/sdk/service/catalog.py).
        The answer: 403 PERMISSION_DENIED with reason EXTERNAL_ACCESS_DISABLED_ON_METASTORE and a message that begins
        "External Data Access from non Databricks Compute environment is disabled for metastore", as quoted in
        Health Samurai's Aidbox Databricks-destination troubleshooting docs; the message's tail is ours.
        """
        if not self.external_access_enabled:
            raise ApiError(403, "PERMISSION_DENIED",
                           "External Data Access from non Databricks Compute environment is disabled for metastore "
                           f"'{self.metastore_id}'.",
                           details=error_info("EXTERNAL_ACCESS_DISABLED_ON_METASTORE",
                                              {"metastoreId": self.metastore_id}))

    def overlapping(self, url: str, caller: str) -> ApiError | None:
        """The refusal for a new table path that overlaps another table or a catalog's managed storage, if any.

        Wording as Databricks gives it: "[ErrorClass=INVALID_PARAMETER_VALUE.LOCATION_OVERLAP] Input path url '...'
        overlaps with other external tables or volumes within 'CreateTable' call. Conflicting tables/volumes: c.s.t."
        and "... overlaps with managed storage within 'CheckPathAccess' call." (Databricks knowledge-base article
        "INVALID_PARAMETER_VALUE.LOCATION_OVERLAP: overlaps with managed storage error", and users' reports of it)."""
        with self._lock:
            tables = [t["full_name"] for t in self.tables.values()
                      if _under(url, t["storage_location"]) or _under(t["storage_location"], url)]
            managed = [c["storage_root"] for c in self.catalogs.values() if c.get("storage_root") and (
                _under(url, c["storage_root"]) or _under(c["storage_root"], url))]
        if tables:
            return ApiError(400, "INVALID_PARAMETER_VALUE",
                            f"Input path url '{url}' overlaps with other external tables or volumes within "
                            f"'{caller}' call. Conflicting tables/volumes: {', '.join(sorted(tables))}.",
                            details=error_info("LOCATION_OVERLAP", {"url": url}))
        if managed:
            return ApiError(400, "INVALID_PARAMETER_VALUE",
                            f"Input path url '{url}' overlaps with managed storage within '{caller}' call.",
                            details=error_info("LOCATION_OVERLAP", {"url": url}))
        return None

    def location_of(self, url: str) -> dict[str, Any] | None:
        """The external location whose URL covers url, if any."""
        return next((loc for loc in self.external_locations.values() if _under(url, loc["url"])), None)

    def _owner(self, securable_type: str, full_name: str) -> str | None:
        store = {"table": self.tables, "function": self.models, "catalog": self.catalogs, "schema": self.schemas,
                 "external_location": self.external_locations}.get(securable_type, {})
        return store.get(full_name, {}).get("owner")

    # ---- credentials ------------------------------------------------------------------------------------------

    def mint_storage_credentials(self, location: str, operation: str, principal: str) -> dict[str, Any]:
        """STS credentials from `vendor(location, operation, principal, ttl_s)` when set, else recognisable fakes."""
        if self.vendor is not None:
            creds = self.vendor(location, operation, principal, self.credential_ttl_s)
            with self._lock:
                self.vended.append({"location": location, "operation": operation, "principal": principal, **creds})
            return creds
        n = next(self._counter)
        creds = {
            "access_key_id": f"ASIAFAKE{n:012d}",
            "secret_access_key": f"fake-vended-secret-{n}-{secrets.token_hex(8)}",
            "session_token": f"fake-vended-session-{n}-{secrets.token_hex(16)}",
        }
        with self._lock:
            self.vended.append({"location": location, "operation": operation, "principal": principal, **creds})
        return creds

    def _credential_response(self, location: str, operation: str, principal: str) -> dict[str, Any]:
        return {
            "aws_temp_credentials": self.mint_storage_credentials(location, operation, principal),
            "expiration_time": _now_ms() + self.credential_ttl_s * 1000,
            "url": location,
        }

    # ---- dispatch ---------------------------------------------------------------------------------------------

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str],
                  raw_body: bytes) -> tuple[int, Any, dict[str, str]]:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        body = _parse_body(headers.get("content-type", ""), raw_body)
        principal, expired = self._bearer_principal(headers.get("authorization", ""))
        request = RecordedRequest(method, path, query, headers, body, raw_body, principal)
        with self._lock:
            self.requests.append(request)
            if self._crash and self._crash[0] == method and self._crash[1].fullmatch(path):
                crashed, self._crash = self._crash[2], None
                threading.Thread(target=self.stop, name="fake-databricks-crash", daemon=True).start()
                crashed.set()
                return _CRASHED, None, {}
            for injected in self._injected:
                if injected.times > 0 and injected.method == method and injected.pattern.fullmatch(path):
                    injected.times -= 1
                    return injected.status, injected.body, {}
        allowed = False
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed = True
                continue
            if route.authenticated and expired:
                # An OAuth token past its end, as a workspace answered it (request log quoted in
                # https://github.com/databricks/databricks-sdk-go/issues/1061): HTTP 403, the reason phrase in a
                # header and a numeric error_code, which the Python SDK maps by status to PermissionDenied.
                return 403, {"error_code": 403, "message": "JWT has expired"}, {
                    "X-Databricks-Reason-Phrase": "JWT has expired"}
            if route.authenticated and principal is None:
                message = "Credential was not sent or was of an unsupported type for this API."
                return 401, {"error_code": "UNAUTHENTICATED", "message": message}, {}
            try:
                answer = route.handler(self, request, **match.groupdict())
            except ApiError as exc:
                return exc.status, exc.body(), exc.headers
            return answer if len(answer) == 3 else (*answer, {})
        if allowed:
            return 405, {"error_code": "BAD_REQUEST", "message": f"Method {method} is not allowed for {path}."}, {}
        with self._lock:
            self.unserved.append(f"{method} {path}")
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}, {}

    def _bearer_principal(self, authorization: str) -> tuple[str | None, bool]:
        """The token's principal, and whether the token has ended by the workspace's clock."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None, False
        token = token.strip()
        with self._lock:
            principal = self.tokens.get(token)
            ends = self.token_expiry.get(token)
        if principal is None:
            return None, False
        return principal, ends is not None and self.now() >= ends

    # ---- default routes ---------------------------------------------------------------------------------------

    def _install_default_routes(self) -> None:
        uc = "/api/2.1/unity-catalog"
        for method, pattern, handler, authenticated in [
            ("GET", r"/", _front_page, False),
            ("GET", r"/\.well-known/databricks-config", _host_metadata, False),
            ("GET", r"/oidc/\.well-known/oauth-authorization-server", _oidc_discovery, False),
            ("GET", r"/oidc/\.well-known/openid-configuration", _oidc_discovery, False),
            ("POST", r"/oidc/v1/token", _token, False),
            ("GET", rf"{uc}/tables/(?P<full_name>[^/]+)/exists", _table_exists, True),
            ("GET", rf"{uc}/tables/(?P<full_name>[^/]+)", _get_table, True),
            ("POST", rf"{uc}/tables", _create_table, True),
            ("POST", r"/api/2\.0/unity-catalog/temporary-table-credentials", _table_credentials, True),
            ("POST", r"/api/2\.0/unity-catalog/temporary-path-credentials", _path_credentials, True),
            ("GET", rf"{uc}/permissions/(?P<securable_type>[^/]+)/(?P<full_name>[^/]+)", _get_permissions, True),
            ("PATCH", rf"{uc}/permissions/(?P<securable_type>[^/]+)/(?P<full_name>[^/]+)", _update_permissions, True),
            (
                "GET",
                rf"{uc}/effective-permissions/(?P<securable_type>[^/]+)/(?P<full_name>[^/]+)",
                _get_effective_permissions,
                True,
            ),
            ("GET", rf"{uc}/current-metastore-assignment", _metastore_assignment, True),
            ("GET", rf"{uc}/metastore_summary", _metastore_summary, True),
            ("POST", rf"{uc}/models", _create_model, True),
            ("GET", rf"{uc}/models/(?P<full_name>[^/]+)", _get_model, True),
            # provisioning (metastore admin): storage credentials, external locations, catalogs, schemas, listings
            ("POST", rf"{uc}/storage-credentials", _create_storage_credential, True),
            ("GET", rf"{uc}/storage-credentials/(?P<name>[^/]+)", _get_storage_credential, True),
            ("PATCH", rf"{uc}/storage-credentials/(?P<name>[^/]+)", _update_storage_credential, True),
            ("DELETE", rf"{uc}/storage-credentials/(?P<name>[^/]+)", _delete_storage_credential, True),
            ("POST", rf"{uc}/external-locations", _create_external_location, True),
            ("GET", rf"{uc}/external-locations/(?P<name>[^/]+)", _get_external_location, True),
            ("PATCH", rf"{uc}/external-locations/(?P<name>[^/]+)", _update_external_location, True),
            ("DELETE", rf"{uc}/external-locations/(?P<name>[^/]+)", _delete_external_location, True),
            ("POST", rf"{uc}/catalogs", _create_catalog, True),
            ("GET", rf"{uc}/catalogs/(?P<name>[^/]+)", _get_catalog, True),
            ("DELETE", rf"{uc}/catalogs/(?P<name>[^/]+)", _delete_catalog, True),
            ("POST", rf"{uc}/schemas", _create_schema, True),
            ("GET", rf"{uc}/schemas", _list_schemas, True),
            ("GET", rf"{uc}/schemas/(?P<full_name>[^/]+)", _get_schema, True),
            ("DELETE", rf"{uc}/schemas/(?P<full_name>[^/]+)", _delete_schema, True),
            ("GET", rf"{uc}/tables", _list_tables, True),
            ("GET", rf"{uc}/models", _list_models, True),
            # workspace SCIM service principals and their OAuth secrets
            ("POST", r"/api/2\.0/preview/scim/v2/ServicePrincipals", _create_service_principal, True),
            ("GET", r"/api/2\.0/preview/scim/v2/ServicePrincipals", _list_service_principals, True),
            ("GET", r"/api/2\.0/preview/scim/v2/ServicePrincipals/(?P<sp_id>[^/]+)", _get_service_principal, True),
            ("DELETE", r"/api/2\.0/preview/scim/v2/ServicePrincipals/(?P<sp_id>[^/]+)", _delete_service_principal, True),
            ("POST", r"/api/2\.0/accounts/servicePrincipals/(?P<sp_id>[^/]+)/credentials/secrets", _create_sp_secret, True),
            ("GET", r"/api/2\.0/accounts/servicePrincipals/(?P<sp_id>[^/]+)/credentials/secrets", _list_sp_secrets, True),
        ]:
            self.routes.append(Route(method, re.compile(pattern), handler, authenticated))


class _RequestHandler(BaseHTTPRequestHandler):
    owner: FakeDatabricks
    protocol_version = "HTTP/1.1"
    # One buffered write per response (flushed by handle_one_request): separate header and body segments
    # meet delayed ACKs on keep-alive connections and cost about 40 ms per request.
    wbufsize = -1

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        super().finish()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body, extra = self.owner._dispatch(self.command, self.path, headers, raw_body)
        if status == _CRASHED:
            self.close_connection = True
            return
        if isinstance(body, Raw):
            payload, content_type = body.data, body.content_type
        else:
            payload, content_type = (b"" if body is None else json.dumps(body).encode()), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        # Every workspace API answer names the workspace; MLflow reads it to link a model version to its run.
        self.send_header("X-Databricks-Org-Id", self.owner.workspace_id)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ---- handlers ------------------------------------------------------------------------------------------------


def _front_page(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    return 200, Raw(b"<html><head><title>Databricks - Sign In</title></head><body></body></html>", "text/html")


def _host_metadata(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    return 200, {
        "oidc_endpoint": f"{fake.url}/oidc",
        "account_id": fake.account_id,
        "workspace_id": fake.workspace_id,
        "cloud": "AWS",
    }


def _oidc_discovery(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    issuer = f"{fake.url}/oidc"
    return 200, {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/v1/authorize",
        "token_endpoint": f"{issuer}/v1/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["all-apis", "offline_access", "sql"],
    }


def _token(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    form = request.body if isinstance(request.body, dict) else {}
    if form.get("grant_type") != "client_credentials":
        return 400, {"error": "unsupported_grant_type", "error_description": "Only client_credentials is supported."}
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            client_id = client_secret = None
    with fake._lock:
        known = client_id is not None and fake.clients.get(client_id) == client_secret
        if not known:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        token = f"fake-oauth-{secrets.token_urlsafe(24)}"
        fake.tokens[token] = client_id  # type: ignore[assignment]
        fake.token_expiry[token] = fake.now() + fake.token_ttl_s
    return 200, {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": fake.token_ttl_s,
        "scope": form.get("scope", "all-apis"),
    }


def _table_exists(fake: FakeDatabricks, request: RecordedRequest, full_name: str) -> tuple[int, Any]:
    catalog, schema, _ = _split3(full_name)
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
    return 200, {"table_exists": full_name in fake.tables}


def _get_table(fake: FakeDatabricks, request: RecordedRequest, full_name: str) -> tuple[int, Any]:
    catalog, schema, _ = _split3(full_name)
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
    info = fake.tables.get(full_name)
    if info is None:
        raise ApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{full_name}' does not exist.")
    if not any(fake.holds(request.principal, "table", full_name, p) for p in ("SELECT", "MODIFY", "BROWSE")):
        fake.require(request.principal, "table", full_name, "SELECT")
    return 200, info


def _create_table(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    body = request.body or {}
    required = ("name", "catalog_name", "schema_name", "table_type", "data_source_format")
    missing = [k for k in required if not body.get(k)]
    if missing:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field(s): {', '.join(missing)}.")
    if body["table_type"] != "EXTERNAL" or body["data_source_format"] != "DELTA":
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "Only EXTERNAL DELTA tables can be created through this API.")
    if not body.get("storage_location"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "storage_location is required for an external table.")
    catalog, schema = body["catalog_name"], body["schema_name"]
    full_name = f"{catalog}.{schema}.{body['name']}"
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA", "CREATE_TABLE")
    # "To create an external delta table, the caller must have the EXTERNAL_USE_SCHEMA privilege on the parent schema
    # and the EXTERNAL_USE_LOCATION privilege on the external location ... Standard UC permissions needed to create
    # tables still apply: ... CREATE_EXTERNAL_TABLE on external location." (SDK docstring of TablesAPI.create,
    # databricks/sdk/service/catalog.py)
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "EXTERNAL_USE_SCHEMA")
    url = body["storage_location"].rstrip("/")
    location = fake.location_of(url)
    if location is None:
        raise no_external_location(url)
    fake.require(request.principal, "external_location", location["name"], "CREATE_EXTERNAL_TABLE",
                 "EXTERNAL_USE_LOCATION")
    overlap = fake.overlapping(url, "CreateTable")
    if overlap is not None:
        raise overlap
    with fake._lock:
        if full_name in fake.tables:
            raise ApiError(409, "TABLE_ALREADY_EXISTS", f"Table '{full_name}' already exists.")
        info = fake.add_table(
            full_name,
            body["storage_location"],
            body.get("columns") or (),
            owner=request.principal or "",
            properties=body.get("properties"),
        )
    return 200, info


def _table_credentials(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    body = request.body or {}
    operation = body.get("operation")
    if operation not in ("READ", "READ_WRITE"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid operation: {operation!r}.")
    table = next((t for t in fake.tables.values() if t["table_id"] == body.get("table_id")), None)
    if table is None:
        raise ApiError(404, "TABLE_DOES_NOT_EXIST", f"Table with id '{body.get('table_id')}' does not exist.")
    fake.require_external_access()
    needed = ("SELECT",) if operation == "READ" else ("SELECT", "MODIFY")
    fake.require_table_path(request.principal, table["full_name"], *needed)
    fake.require_external_use(request.principal, table["full_name"])
    return 200, fake._credential_response(table["storage_location"], operation, request.principal or "")


_PATH_PRIVILEGE = {
    "PATH_READ": "READ_FILES",
    "PATH_READ_WRITE": "WRITE_FILES",
    "PATH_CREATE_TABLE": "CREATE_EXTERNAL_TABLE",
}
_TABLE_PATH_PRIVILEGES = {"PATH_READ": ("SELECT",), "PATH_READ_WRITE": ("SELECT", "MODIFY")}


def _path_credentials(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    """"The caller must have the EXTERNAL_USE_LOCATION privilege on the external location ... For requests on
    existing external tables, the caller must also have the EXTERNAL_USE_SCHEMA privilege on the parent schema"
    (SDK docstring of generate_temporary_path_credentials, databricks/sdk/service/catalog.py)."""
    body = request.body or {}
    url, operation = str(body.get("url") or "").rstrip("/"), body.get("operation")
    if not url or operation not in _PATH_PRIVILEGE:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "url and a valid operation are required.")
    location = fake.location_of(url)
    if location is None:
        raise no_external_location(url)
    fake.require_external_access()
    table = next((t for t in fake.tables.values() if _under(url, t["storage_location"])), None)
    if table is not None and operation in _TABLE_PATH_PRIVILEGES:
        fake.require_table_path(request.principal, table["full_name"], *_TABLE_PATH_PRIVILEGES[operation])
        fake.require_external_use(request.principal, table["full_name"])
    else:
        fake.require(request.principal, "external_location", location["name"], _PATH_PRIVILEGE[operation])
    fake.require(request.principal, "external_location", location["name"], "EXTERNAL_USE_LOCATION")
    if body.get("dry_run"):
        return 200, {}
    return 200, fake._credential_response(url, operation, request.principal or "")


def _may_manage(fake: FakeDatabricks, principal: str | None, securable_type: str, full_name: str) -> bool:
    return fake.holds(principal or "", securable_type, full_name, "MANAGE")


def _assignments(grants: dict[str, set[str]], principal: str | None) -> list[dict[str, Any]]:
    return [
        {"principal": p, "privileges": sorted(privs)}
        for p, privs in sorted(grants.items())
        if privs and (principal is None or p == principal)
    ]


def _get_permissions(
    fake: FakeDatabricks, request: RecordedRequest, securable_type: str, full_name: str
) -> tuple[int, Any]:
    securable_type = _norm_type(securable_type)
    wanted = (request.query.get("principal") or [None])[0]
    if wanted != request.principal and not _may_manage(fake, request.principal, securable_type, full_name):
        fake.require(request.principal, securable_type, full_name, "MANAGE")
    with fake._lock:
        grants = fake.grants.get((securable_type, full_name), {})
        return 200, {"privilege_assignments": _assignments(grants, wanted)}


def _update_permissions(
    fake: FakeDatabricks, request: RecordedRequest, securable_type: str, full_name: str
) -> tuple[int, Any]:
    securable_type = _norm_type(securable_type)
    if not _may_manage(fake, request.principal, securable_type, full_name):
        fake.require(request.principal, securable_type, full_name, "MANAGE")
    changes = (request.body or {}).get("changes") or []
    with fake._lock:
        for change in changes:
            if not change.get("principal"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Each change needs a principal.")
            for privilege in change.get("add") or ():
                require_applicable(securable_type, full_name, _norm_priv(privilege))
        for change in changes:
            fake.grant(securable_type, full_name, change["principal"], *(change.get("add") or ()))
            fake.revoke(securable_type, full_name, change["principal"], *(change.get("remove") or ()))
        if (request.body or {}).get("omit_permissions_in_response"):
            return 200, {}
        return 200, {"privilege_assignments": _assignments(fake.grants.get((securable_type, full_name), {}), None)}


def _get_effective_permissions(
    fake: FakeDatabricks, request: RecordedRequest, securable_type: str, full_name: str
) -> tuple[int, Any]:
    securable_type = _norm_type(securable_type)
    wanted = (request.query.get("principal") or [None])[0]
    if wanted != request.principal and not _may_manage(fake, request.principal, securable_type, full_name):
        fake.require(request.principal, securable_type, full_name, "MANAGE")
    with fake._lock:
        lineage = _lineage(securable_type, full_name)
        principals = {p for key, grants in fake.grants.items() if key in lineage for p in grants}
    if wanted is not None:
        principals = {wanted}
    assignments = []
    for principal in sorted(principals):
        privileges = fake.effective(securable_type, full_name, principal)
        if privileges:
            assignments.append({"principal": principal, "privileges": privileges})
    return 200, {"privilege_assignments": assignments}


def _metastore_assignment(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    return 200, {"metastore_id": fake.metastore_id, "workspace_id": int(fake.workspace_id),
                 "default_catalog_name": "main"}


def _metastore_summary(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    return 200, {"metastore_id": fake.metastore_id, "name": "metastore_aws_us_east_1", "region": "us-east-1",
                 "external_access_enabled": fake.external_access_enabled, "owner": "admin"}


def _create_model(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    body = request.body or {}
    missing = [k for k in ("name", "catalog_name", "schema_name") if not body.get(k)]
    if missing:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field(s): {', '.join(missing)}.")
    catalog, schema = body["catalog_name"], body["schema_name"]
    full_name = f"{catalog}.{schema}.{body['name']}"
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA", "CREATE_MODEL")
    with fake._lock:
        if full_name in fake.models:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"Registered model '{full_name}' already exists.")
        info = {
            "name": body["name"],
            "catalog_name": catalog,
            "schema_name": schema,
            "full_name": full_name,
            "comment": body.get("comment"),
            "owner": request.principal,
            "metastore_id": fake.metastore_id,
            "storage_location": f"s3://fake-metastore/models/{uuid.uuid4()}",
            "created_at": _now_ms(),
            "created_by": request.principal,
            "updated_at": _now_ms(),
            "updated_by": request.principal,
        }
        fake.models[full_name] = info
    return 200, info


def _get_model(fake: FakeDatabricks, request: RecordedRequest, full_name: str) -> tuple[int, Any]:
    catalog, schema, _ = _split3(full_name)
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
    info = fake.models.get(full_name)
    if info is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Registered model '{full_name}' does not exist.")
    fake.require(request.principal, "function", full_name, "EXECUTE")
    return 200, info


# ---- provisioning handlers (metastore and workspace admin only) ------------------------------------------------


def _require_admin(fake: FakeDatabricks, request: RecordedRequest, what: str) -> None:
    if request.principal not in fake.admins:
        raise ApiError(403, "PERMISSION_DENIED", f"User is not a metastore admin and cannot {what}.")


def _query(request: RecordedRequest, key: str) -> str | None:
    return (request.query.get(key) or [None])[0]


def _forced(request: RecordedRequest) -> bool:
    return (_query(request, "force") or "").lower() == "true"


def _drop_grants(fake: FakeDatabricks, securable_type: str, full_name: str) -> None:
    fake.grants.pop((securable_type, full_name), None)


def _stamp(fake: FakeDatabricks, request: RecordedRequest, info: dict[str, Any]) -> dict[str, Any]:
    info.update({"owner": request.principal, "created_at": _now_ms(), "created_by": request.principal,
                 "updated_at": _now_ms(), "updated_by": request.principal, "metastore_id": fake.metastore_id})
    return info


def _create_storage_credential(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    _require_admin(fake, request, "create storage credentials")
    body = request.body or {}
    role_arn = (body.get("aws_iam_role") or {}).get("role_arn")
    if not body.get("name") or not role_arn:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "name and aws_iam_role.role_arn are required.")
    with fake._lock:
        if body["name"] in fake.storage_credentials:
            raise ApiError(409, "STORAGE_CREDENTIAL_ALREADY_EXISTS", f"Storage Credential '{body['name']}' already exists.")
        info = _stamp(fake, request, {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "comment": body.get("comment"),
            "aws_iam_role": {"role_arn": role_arn, "external_id": fake.account_id,
                             "unity_catalog_iam_arn": "arn:aws:iam::414351767826:role/unity-catalog-prod-UCMasterRole-14S5ZJVKOTYTL"},
        })
        fake.storage_credentials[body["name"]] = info
    return 200, info


def _get_storage_credential(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _require_admin(fake, request, "read storage credentials")
    if name not in fake.storage_credentials:
        raise ApiError(404, "STORAGE_CREDENTIAL_DOES_NOT_EXIST", f"Storage Credential '{name}' does not exist.")
    return 200, fake.storage_credentials[name]


def _update_storage_credential(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _, info = _get_storage_credential(fake, request, name)
    body = request.body or {}
    with fake._lock:
        if body.get("aws_iam_role"):
            info["aws_iam_role"]["role_arn"] = body["aws_iam_role"]["role_arn"]
        if "comment" in body:
            info["comment"] = body["comment"]
        info["updated_at"] = _now_ms()
    return 200, info


def _delete_storage_credential(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _get_storage_credential(fake, request, name)
    with fake._lock:
        users = [loc["name"] for loc in fake.external_locations.values() if loc.get("credential_name") == name]
        if users and not _forced(request):
            raise ApiError(400, "INVALID_STATE", f"Storage Credential '{name}' is used by external locations {users}.")
        del fake.storage_credentials[name]
    return 200, {}


def _create_external_location(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    _require_admin(fake, request, "create external locations")
    body = request.body or {}
    missing = [k for k in ("name", "url", "credential_name") if not body.get(k)]
    if missing:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field(s): {', '.join(missing)}.")
    with fake._lock:
        if body["credential_name"] not in fake.storage_credentials:
            raise ApiError(404, "STORAGE_CREDENTIAL_DOES_NOT_EXIST",
                           f"Storage Credential '{body['credential_name']}' does not exist.")
        if body["name"] in fake.external_locations:
            raise ApiError(409, "EXTERNAL_LOCATION_ALREADY_EXISTS", f"External Location '{body['name']}' already exists.")
        url = body["url"].rstrip("/")
        if any(_under(url, loc["url"]) or _under(loc["url"], url) for loc in fake.external_locations.values()):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"URL '{url}' overlaps an existing external location.")
        info = _stamp(fake, request, {"name": body["name"], "url": url, "credential_name": body["credential_name"],
                                      "comment": body.get("comment"), "read_only": bool(body.get("read_only"))})
        fake.external_locations[body["name"]] = info
    return 200, info


def _get_external_location(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _require_admin(fake, request, "read external locations")
    if name not in fake.external_locations:
        raise ApiError(404, "EXTERNAL_LOCATION_DOES_NOT_EXIST", f"External Location '{name}' does not exist.")
    return 200, fake.external_locations[name]


def _update_external_location(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _, info = _get_external_location(fake, request, name)
    body = request.body or {}
    with fake._lock:
        for key in ("url", "credential_name", "comment"):
            if key in body:
                info[key] = body[key].rstrip("/") if key == "url" else body[key]
    return 200, info


def _delete_external_location(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _, info = _get_external_location(fake, request, name)
    with fake._lock:
        dependants = [t["full_name"] for t in fake.tables.values() if _under(t["storage_location"], info["url"])]
        if dependants and not _forced(request):
            raise ApiError(400, "INVALID_STATE", f"External Location '{name}' is used by tables {dependants}.")
        del fake.external_locations[name]
        _drop_grants(fake, "external_location", name)
    return 200, {}


def _create_catalog(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    _require_admin(fake, request, "create catalogs")
    body = request.body or {}
    if not body.get("name"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "name is required.")
    with fake._lock:
        if body["name"] in fake.catalogs:
            raise ApiError(409, "CATALOG_ALREADY_EXISTS", f"Catalog '{body['name']}' already exists.")
        info = _stamp(fake, request, {"name": body["name"], "full_name": body["name"], "comment": body.get("comment"),
                                      "storage_root": body.get("storage_root"),
                                      "properties": dict(body.get("properties") or {})})
        fake.catalogs[body["name"]] = info
    return 200, info


def _get_catalog(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    if name not in fake.catalogs:
        raise ApiError(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{name}' does not exist.")
    fake.require(request.principal, "catalog", name, "USE_CATALOG")
    return 200, fake.catalogs[name]


def _delete_catalog(fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
    _require_admin(fake, request, "delete catalogs")
    _get_catalog(fake, request, name)
    with fake._lock:
        schemas = [s for s in fake.schemas if s.startswith(f"{name}.")]
        if schemas and not _forced(request):
            raise ApiError(400, "INVALID_STATE", f"Catalog '{name}' is not empty; it contains schemas {schemas}.")
        for schema in schemas:
            _drop_schema(fake, schema)
        del fake.catalogs[name]
        _drop_grants(fake, "catalog", name)
    return 200, {}


def _create_schema(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    body = request.body or {}
    if not body.get("name") or not body.get("catalog_name"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "name and catalog_name are required.")
    catalog = body["catalog_name"]
    if catalog not in fake.catalogs:
        raise ApiError(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{catalog}' does not exist.")
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG", "CREATE_SCHEMA")
    full_name = f"{catalog}.{body['name']}"
    with fake._lock:
        if full_name in fake.schemas:
            raise ApiError(409, "SCHEMA_ALREADY_EXISTS", f"Schema '{full_name}' already exists.")
        info = _stamp(fake, request, {"name": body["name"], "catalog_name": catalog, "full_name": full_name,
                                      "comment": body.get("comment"), "properties": dict(body.get("properties") or {}),
                                      "storage_root": body.get("storage_root")})
        fake.schemas[full_name] = info
    return 200, info


def _list_schemas(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    catalog = _query(request, "catalog_name") or ""
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    with fake._lock:
        return 200, {"schemas": [s for name, s in sorted(fake.schemas.items()) if name.startswith(f"{catalog}.")]}


def _get_schema(fake: FakeDatabricks, request: RecordedRequest, full_name: str) -> tuple[int, Any]:
    if full_name not in fake.schemas:
        raise ApiError(404, "SCHEMA_DOES_NOT_EXIST", f"Schema '{full_name}' does not exist.")
    fake.require(request.principal, "catalog", full_name.split(".")[0], "USE_CATALOG")
    fake.require(request.principal, "schema", full_name, "USE_SCHEMA")
    return 200, fake.schemas[full_name]


def _drop_schema(fake: FakeDatabricks, full_name: str) -> None:
    for table in [t for t in fake.tables if t.startswith(f"{full_name}.")]:
        del fake.tables[table]
        _drop_grants(fake, "table", table)
    for model in [m for m in fake.models if m.startswith(f"{full_name}.")]:
        del fake.models[model]
        _drop_grants(fake, "function", model)
    fake.schemas.pop(full_name, None)
    _drop_grants(fake, "schema", full_name)


def _delete_schema(fake: FakeDatabricks, request: RecordedRequest, full_name: str) -> tuple[int, Any]:
    _require_admin(fake, request, "delete schemas")
    _get_schema(fake, request, full_name)
    with fake._lock:
        contents = [n for n in list(fake.tables) + list(fake.models) if n.startswith(f"{full_name}.")]
        if contents and not _forced(request):
            raise ApiError(400, "SCHEMA_NOT_EMPTY", f"Schema '{full_name}' is not empty; it contains {contents}.")
        _drop_schema(fake, full_name)
    return 200, {}


def _list_tables(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    catalog, schema = _query(request, "catalog_name") or "", _query(request, "schema_name") or ""
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
    with fake._lock:
        return 200, {"tables": [t for n, t in sorted(fake.tables.items()) if n.startswith(f"{catalog}.{schema}.")]}


def _list_models(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    catalog, schema = _query(request, "catalog_name") or "", _query(request, "schema_name") or ""
    fake.require(request.principal, "catalog", catalog, "USE_CATALOG")
    fake.require(request.principal, "schema", f"{catalog}.{schema}", "USE_SCHEMA")
    with fake._lock:
        return 200, {"registered_models": [m for n, m in sorted(fake.models.items())
                                           if n.startswith(f"{catalog}.{schema}.")]}


_SCIM_FILTER = re.compile(r'^\s*(displayName|applicationId|id)\s+eq\s+"([^"]*)"\s*$', re.I)


def _create_service_principal(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    _require_admin(fake, request, "create service principals")
    body = request.body or {}
    if not body.get("displayName"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "displayName is required.")
    with fake._lock:
        sp_id = str(next(fake._counter) + 7_000_000_000)
        info = {"id": sp_id, "applicationId": body.get("applicationId") or str(uuid.uuid4()),
                "displayName": body["displayName"], "active": body.get("active", True),
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"]}
        fake.service_principals[sp_id] = info
    return 201, info


def _list_service_principals(fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
    _require_admin(fake, request, "list service principals")
    matches = list(fake.service_principals.values())
    text = _query(request, "filter")
    if text:
        match = _SCIM_FILTER.match(text)
        if match is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Unsupported filter: {text}")
        key, value = match.groups()
        attribute = {"displayname": "displayName", "applicationid": "applicationId", "id": "id"}[key.lower()]
        matches = [sp for sp in matches if sp.get(attribute) == value]
    start = max(1, int(_query(request, "startIndex") or 1))
    count = int(_query(request, "count") or 10000)
    page = matches[start - 1:start - 1 + count]
    return 200, {"totalResults": len(matches), "startIndex": start, "itemsPerPage": len(page), "Resources": page,
                 "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]}


def _get_service_principal(fake: FakeDatabricks, request: RecordedRequest, sp_id: str) -> tuple[int, Any]:
    _require_admin(fake, request, "read service principals")
    if sp_id not in fake.service_principals:
        raise ApiError(404, "NOT_FOUND", f"Service principal {sp_id} not found.")
    return 200, fake.service_principals[sp_id]


def _delete_service_principal(fake: FakeDatabricks, request: RecordedRequest, sp_id: str) -> tuple[int, Any]:
    _, info = _get_service_principal(fake, request, sp_id)
    with fake._lock:
        del fake.service_principals[sp_id]
        fake.sp_secrets.pop(sp_id, None)
        fake.clients.pop(info["applicationId"], None)
    return 204, None


def _create_sp_secret(fake: FakeDatabricks, request: RecordedRequest, sp_id: str) -> tuple[int, Any]:
    _, info = _get_service_principal(fake, request, sp_id)
    secret = f"fake-sp-oauth-secret-{secrets.token_hex(16)}"
    record = {"id": str(uuid.uuid4()), "status": "ACTIVE", "create_time": str(_now_ms()),
              "secret_hash": secrets.token_hex(4)}
    with fake._lock:
        fake.sp_secrets.setdefault(sp_id, []).append(record)
        # The newest OAuth secret is the one the fake's token endpoint accepts for this client.
        fake.clients[info["applicationId"]] = secret
    return 200, {**record, "secret": secret}


def _list_sp_secrets(fake: FakeDatabricks, request: RecordedRequest, sp_id: str) -> tuple[int, Any]:
    _get_service_principal(fake, request, sp_id)
    return 200, {"secrets": list(fake.sp_secrets.get(sp_id, []))}


# ---- refusals ------------------------------------------------------------------------------------------------


def permission_denied(securable_type: str, full_name: str, privilege: str) -> ApiError:
    """403 for a missing privilege, as Unity Catalog answered a missing EXTERNAL USE SCHEMA (quoted in
    https://github.com/Azure/spark-cdm-connector/issues/149):
    {"error_code":"PERMISSION_DENIED","message":"User does not have EXTERNAL USE SCHEMA on Schema 'icebase.telemetry'.",
     "details":[{ErrorInfo reason PERMISSION_DENIED, metadata principalName, msg, resourceType, resourceName}, ...]}"""
    kind = _DISPLAY_TYPE.get(_norm_type(securable_type), securable_type)
    spelled = _norm_priv(privilege).replace("_", " ")
    return ApiError(403, "PERMISSION_DENIED", f"User does not have {spelled} on {kind} '{full_name}'.",
                    details=error_info("PERMISSION_DENIED", {"principalName": "User", "msg": spelled,
                                                             "resourceType": kind, "resourceName": full_name}))


def no_external_location(url: str) -> ApiError:
    """404 for a path that no external location covers. No verbatim Databricks text for this case was found: the code
    follows the <OBJECT>_DOES_NOT_EXIST codes Databricks lists (e.g. "TABLE_DOES_NOT_EXIST: Table '<name>' does not
    exist", https://docs.databricks.com/aws/en/delta-sharing/audit-logs), the SDK maps 404 to NotFound, and the
    message is ours."""
    return ApiError(404, "EXTERNAL_LOCATION_DOES_NOT_EXIST", f"No external location covers '{url}'.")


def require_applicable(securable_type: str, full_name: str, privilege: str) -> None:
    """400 for a privilege that does not apply to the securable type.

    Message as Databricks words it: "Privilege USE CONNECTION is not applicable to this entity
    [sqlserver_finance:CONNECTION/CONNECTION_SQLSERVER]. If this seems unexpected, please check the privilege version
    of the metastore in use [1.0]." (https://github.com/databricks/terraform-provider-databricks/issues/5398) and
    "Privilege UPDATE is not applicable to this entity [CATALOG/CATALOG_STANDARD]"; the error code is not quoted there:
    INVALID_PARAMETER_VALUE is our choice (the SDK maps it to InvalidParameterValue, a BadRequest)."""
    kind = _norm_type(securable_type)
    if privilege not in APPLICABLE.get(kind, frozenset()):
        entity = kind.upper()
        raise ApiError(400, "INVALID_PARAMETER_VALUE",
                       f"Privilege {privilege.replace('_', ' ')} is not applicable to this entity "
                       f"[{full_name}:{entity}/{entity}_STANDARD]. If this seems unexpected, please check the "
                       "privilege version of the metastore in use [1.0].")


# ---- helpers -------------------------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _split3(full_name: str) -> tuple[str, str, str]:
    parts = full_name.split(".")
    if len(parts) != 3 or not all(parts):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid three-level name '{full_name}'.")
    return parts[0], parts[1], parts[2]


def _norm_type(securable_type: str) -> str:
    kind = securable_type.lower()
    return {"registered_model": "function", "model": "function"}.get(kind, kind)


def _norm_priv(privilege: str) -> str:
    return privilege.strip().upper().replace(" ", "_")


def _lineage(securable_type: str, full_name: str) -> list[tuple[str, str]]:
    """The securable itself, then the schema and catalog it inherits from."""
    parts = full_name.split(".")
    chain = [(securable_type, full_name)]
    if securable_type in ("table", "function") and len(parts) == 3:
        chain += [("schema", ".".join(parts[:2])), ("catalog", parts[0])]
    elif securable_type == "schema" and len(parts) == 2:
        chain.append(("catalog", parts[0]))
    return chain


def _under(url: str, root: str) -> bool:
    root = root.rstrip("/")
    return url == root or url.startswith(root + "/")


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if "x-www-form-urlencoded" in content_type:
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    return text
