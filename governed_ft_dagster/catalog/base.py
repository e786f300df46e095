"""The catalog interface every deployment implements, and its value types."""

from __future__ import annotations

import abc
import datetime as dt
import re
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Literal, Sequence


class Principal(str, Enum):
    """The four job principals of the governance model."""

    INGEST = "ingest"
    PREPROCESS = "preprocess"
    TRAIN = "train"
    REGISTRAR = "registrar"


class Privilege(str, Enum):
    """Privileges as the OSS catalog spells them; `sdk_name` is the Databricks enum spelling."""

    USE_CATALOG = "USE CATALOG"
    USE_SCHEMA = "USE SCHEMA"
    CREATE_TABLE = "CREATE TABLE"
    CREATE_MODEL = "CREATE MODEL"
    SELECT = "SELECT"
    MODIFY = "MODIFY"
    EXECUTE = "EXECUTE"
    WRITE_FILES = "WRITE FILES"
    READ_FILES = "READ FILES"
    CREATE_EXTERNAL_TABLE = "CREATE EXTERNAL TABLE"
    EXTERNAL_USE_SCHEMA = "EXTERNAL USE SCHEMA"
    EXTERNAL_USE_LOCATION = "EXTERNAL USE LOCATION"
    CREATE_EXTERNAL_METADATA = "CREATE EXTERNAL METADATA"
    ALL_PRIVILEGES = "ALL PRIVILEGES"

    @property
    def sdk_name(self) -> str:
        return self.value.replace(" ", "_")

    @property
    def explicit_only(self) -> bool:
        """Databricks confers it only by an explicit grant: never through ownership or ALL PRIVILEGES
        (https://docs.databricks.com/aws/en/external-access/admin)."""
        return self.value in _EXPLICIT_ONLY

    @classmethod
    def parse(cls, text: str) -> "Privilege":
        return cls(text.strip().upper().replace("_", " "))


SecurableType = Literal["metastore", "catalog", "schema", "table", "registered_model", "external_location"]
TableOperation = Literal["READ", "READ_WRITE"]
PathOperation = Literal["PATH_READ", "PATH_READ_WRITE", "PATH_CREATE_TABLE"]


@dataclass(frozen=True)
class ColumnInfo:
    """One column of a catalog table."""

    name: str
    type_name: str
    type_text: str
    position: int
    nullable: bool = True
    comment: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """What the catalog knows of a table."""

    full_name: str
    table_id: str
    storage_location: str
    data_source_format: str
    table_type: str
    columns: tuple[ColumnInfo, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VendedCredentials:
    """Temporary credentials the catalog vended for one table or path."""

    location: str
    operation: str
    expiration: dt.datetime | None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return self.location.startswith("file:") or self.location.startswith("/")

    def expires_within(self, seconds: float, now: dt.datetime | None = None) -> bool:
        if self.expiration is None:
            return False
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.expiration - now).total_seconds() < seconds


RENEW_WITHIN_S = 15 * 60


class RenewingCredentials:
    """Credentials for one table or path, vended now and again whenever they come within renew_within_s of expiry;
    safe to share between threads (one vend at a time)."""

    def __init__(self, vend: Callable[[], VendedCredentials], renew_within_s: float = RENEW_WITHIN_S):
        self._vend, self.renew_within_s = vend, renew_within_s
        self._lock = threading.Lock()
        self._creds = vend()
        self.vends = 1

    def current(self) -> VendedCredentials:
        with self._lock:
            if self._creds.expires_within(self.renew_within_s):
                self._creds = self._vend()
                self.vends += 1
            return self._creds

    @property
    def latest(self) -> VendedCredentials:
        """The last vended credentials, without renewing them."""
        return self._creds


@dataclass(frozen=True)
class Grant:
    """A privilege granted to a principal on a securable."""

    securable_type: SecurableType
    full_name: str
    principal: str
    privilege: Privilege


class CatalogError(RuntimeError):
    """A catalog request failed; the message says what and how to fix it."""


class CatalogUnavailableError(CatalogError):
    """The catalog could not be reached."""


# How GRANT names each kind of securable (registered models are granted as functions).
_SQL_SECURABLE = {"catalog": "CATALOG", "schema": "SCHEMA", "table": "TABLE", "registered_model": "FUNCTION",
                  "function": "FUNCTION", "external_location": "EXTERNAL LOCATION", "metastore": "METASTORE",
                  "external_metadata": "EXTERNAL METADATA", "model": "FUNCTION"}


_EXPLICIT_ONLY = (Privilege.EXTERNAL_USE_SCHEMA.value, Privilege.EXTERNAL_USE_LOCATION.value)


def grant_statement(privileges: str, securable: str, grantee: str) -> str:
    """The GRANT statement for privileges on a securable named `<type> <name>`, e.g. `schema main.raw`."""
    kind, _, name = securable.partition(" ")
    keyword = _SQL_SECURABLE.get(kind.lower().replace(" ", "_"))
    if keyword is None:
        return f"GRANT {privileges} ON {securable} TO `{grantee}`"
    target = keyword if keyword == "METASTORE" else f"{keyword} {name}"
    return f"GRANT {privileges} ON {target} TO `{grantee}`"


class CatalogPermissionError(CatalogError):
    """The catalog refused a principal for lack of a privilege on a securable."""

    def __init__(self, principal: str, securable: str, privilege: str | Sequence[str], detail: str = "",
                 needed_for: str = "", grantee: str = ""):
        self.principal = principal
        self.securable = securable
        self.privileges = (privilege,) if isinstance(privilege, str) else tuple(privilege)
        missing = ", ".join(self.privileges)
        purpose = f" (needed for {needed_for})" if needed_for and needed_for != securable else ""
        explicit = [p for p in self.privileges if p.replace("_", " ") in _EXPLICIT_ONLY]
        note = f" explicitly (ownership and ALL PRIVILEGES never include {' or '.join(explicit)})" if explicit else ""
        message = (
            f"principal '{principal}' lacks {missing} on {securable}{purpose}; "
            f"grant it{note} with `{grant_statement(missing, securable, grantee or principal)}` "
            "or run the job as a principal that has it"
        )
        if detail:
            message += f" (catalog said: {detail})"
        super().__init__(message)


class StorageRefusedError(CatalogError):
    """The storage refused a request made with the credentials the catalog vended for a table or path."""

    def __init__(self, principal: str, securable: str, operation: str, path: str):
        self.principal, self.securable, self.operation, self.path = principal, securable, operation, path
        super().__init__(f"the storage refused principal '{principal}' at {path}: the credentials the catalog "
                         f"vended for {operation} on {securable} do not reach it")


_S3A_REFUSAL = re.compile(r"AccessDeniedException: (s3a?://[^\s:]+)")


def refused_s3_path(error_text: str) -> str | None:
    """The s3:// path that S3A reports the storage refused (its AccessDeniedException) in an error text, else None."""
    match = _S3A_REFUSAL.search(error_text)
    return "s3://" + match.group(1).split("://", 1)[1] if match else None


class CatalogClient(abc.ABC):
    """Operations the pipeline needs from the catalog, acting as one principal."""

    principal: str

    @abc.abstractmethod
    def get_table(self, full_name: str) -> TableInfo:
        """Return the table's id, storage location, format and columns."""

    @abc.abstractmethod
    def table_exists(self, full_name: str) -> bool:
        """Whether the table is registered."""

    @abc.abstractmethod
    def temporary_table_credentials(self, full_name: str, operation: TableOperation) -> VendedCredentials:
        """Vend credentials for a table (looks up its id first)."""

    @abc.abstractmethod
    def temporary_path_credentials(self, url: str, operation: PathOperation) -> VendedCredentials:
        """Vend credentials for a storage path."""

    @abc.abstractmethod
    def register_external_table(
        self,
        full_name: str,
        storage_location: str,
        columns: Sequence[ColumnInfo],
        properties: dict[str, str] | None = None,
        comment: str | None = None,
    ) -> TableInfo:
        """Register an external Delta table, or return it when it already exists at that location."""

    @abc.abstractmethod
    def effective_privileges(self, securable_type: SecurableType, full_name: str, principal: str) -> set[Privilege]:
        """Privileges the principal holds on the securable, inherited ones included."""

    @abc.abstractmethod
    def update_grants(
        self,
        securable_type: SecurableType,
        full_name: str,
        principal: str,
        add: Sequence[Privilege] = (),
        remove: Sequence[Privilege] = (),
    ) -> None:
        """Grant and revoke privileges of one principal on one securable."""

    @abc.abstractmethod
    def create_registered_model(self, full_name: str, comment: str | None = None) -> str:
        """Create the registered model unless it exists; return its full name."""

    def require(self, principal: str, requirements: Sequence[tuple[SecurableType, str, Privilege]],
                display: str | None = None) -> None:
        """Fail with one error naming the missing privilege before any data is touched."""
        by_securable: dict[tuple[str, str], set[Privilege]] = {}
        for securable_type, full_name, privilege in requirements:
            key = (securable_type, full_name)
            if key not in by_securable:
                by_securable[key] = self.effective_privileges(securable_type, full_name, principal)
            held = by_securable[key]
            if privilege not in held and (Privilege.ALL_PRIVILEGES not in held or privilege.explicit_only):
                raise CatalogPermissionError(display or principal, f"{securable_type} {full_name}", privilege.value,
                                             grantee=principal)
