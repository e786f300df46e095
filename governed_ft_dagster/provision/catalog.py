"""The stack's Unity Catalog objects and exact grants through databricks-sdk: plan, apply, destroy."""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.errors import DatabricksError, NotFound, PermissionDenied, Unauthenticated
from databricks.sdk.service import catalog as uc

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import (
    GRANTS,
    LINEAGE_WRITERS,
    LOCATION_GRANTS,
    PRODUCTION_MODEL_NAME,
    SCHEMAS,
    external_access_grants,
)
from governed_ft_dagster.catalog.databricks import SECRET_SHAPE, secret_document
from governed_ft_dagster.provision import ProvisionError
from governed_ft_dagster.provision.aws import SECRET_PLACEHOLDER, Change
from governed_ft_dagster.provision.policies import StackConfig

if TYPE_CHECKING:
    from governed_ft_dagster.provision.aws import AwsProvisioner

# The design's path grants, plus EXTERNAL_USE_LOCATION that vending to engines outside the workspace needs.
DATABRICKS_LOCATION_GRANTS: dict[str, dict[Principal, tuple[str, ...]]] = {
    prefix: {role: tuple(sorted({p.sdk_name for p in privileges} | {"EXTERNAL_USE_LOCATION"}))
             for role, privileges in grants.items()}
    for prefix, grants in LOCATION_GRANTS.items()
}
# Writing external lineage starts with creating external metadata, a metastore privilege.
LINEAGE_PRIVILEGE = "CREATE_EXTERNAL_METADATA"
# Model versions live in the catalog's managed storage, inside the ml/ prefix of the governed bucket.
MANAGED_STORAGE_PREFIX = "ml/uc-managed"
SP_CREATED_TAG = "governed-ft:databricks-sp"
_UC = "/api/2.1/unity-catalog"
_GRANT_TYPE = {"catalog": "catalog", "schema": "schema", "table": "table", "registered_model": "function"}
_SDK_DEBUG_SUFFIX = re.compile(r"\.?\s*Config: .*\Z", re.S)
_AUTO_SCHEMAS = ("information_schema", "default")
_SECRET_IN_JSON = re.compile(r'("(?:secret|client_secret)"\s*:\s*")[^"]*(")')


class _OAuthSecretFilter(logging.Filter):
    """Masks the OAuth secret in databricks-sdk's debug dump of the create-secret response."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as is
            return True
        masked = _SECRET_IN_JSON.sub(r"\1***\2", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


logging.getLogger("databricks.sdk").addFilter(_OAuthSecretFilter())


@dataclass(frozen=True)
class GrantChange:
    """The privileges one principal gains and loses on one securable."""

    securable_type: str
    full_name: str
    role: str
    principal: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"securable_type": self.securable_type, "full_name": self.full_name, "role": self.role,
                "principal": self.principal, "add": list(self.add), "remove": list(self.remove)}


@dataclass
class CatalogReport:
    """The outcome of one catalog command."""

    command: str
    stack: str
    catalog: str
    host: str
    changes: list[Change] = field(default_factory=list)
    grants: list[GrantChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.grants) or any(c.action in ("create", "update", "delete") for c in self.changes)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for change in self.changes:
            if change.action in ("create", "update", "delete"):
                counts[change.action] = counts.get(change.action, 0) + 1
        parts = [f"{n} to {a}" if self.command == "plan" else f"{n} {a}d" for a, n in counts.items()]
        added = sum(len(g.add) for g in self.grants)
        removed = sum(len(g.remove) for g in self.grants)
        if added or removed:
            parts.append(f"{added} privilege(s) granted, {removed} revoked" if self.command != "plan"
                         else f"{added} privilege(s) to grant, {removed} to revoke")
        return ", ".join(parts) or "nothing"

    def grant_lines(self) -> list[str]:
        lines = []
        for g in self.grants:
            who = f"{g.role} ({g.principal})"
            if g.add:
                lines.append(f"grant  {', '.join(g.add)} on {g.securable_type} {g.full_name} to {who}")
            if g.remove:
                lines.append(f"revoke {', '.join(g.remove)} on {g.securable_type} {g.full_name} from {who}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "stack": self.stack, "catalog": self.catalog, "host": self.host,
                "changed": self.changed, "objects": [c.as_dict(with_spec=False) for c in self.changes],
                "grants": [g.as_dict() for g in self.grants], "notes": self.notes}


@dataclass
class _Identity:
    """Who a role is in the workspace: its service principal and where that was learnt."""

    role: Principal
    display_name: str
    application_id: str | None = None
    sp_id: str | None = None
    created_by_stack: bool = False

    @property
    def label(self) -> str:
        return self.application_id or f"<new {self.display_name}>"


class AwsSecretStore:
    """The principals' secrets and the storage role's trust, through the AWS provisioner's clients and errors."""

    def __init__(self, aws: "AwsProvisioner"):
        self.aws = aws

    def read(self, name: str) -> dict[str, Any] | None:
        """The secret's JSON object, or None when the secret does not exist; the value is never logged."""
        from botocore.exceptions import ClientError

        with self.aws._aws_errors():
            try:
                raw = self.aws.client("secretsmanager").get_secret_value(SecretId=name).get("SecretString")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return None
                raise
        value = secret_document(raw)
        if value is None:
            raise ProvisionError(f"secret {name} is not a JSON object; store it as {SECRET_SHAPE} "
                                 "or delete it and re-run apply")
        return value

    def write(self, name: str, value: dict[str, str]) -> None:
        with self.aws._aws_errors():
            self.aws.client("secretsmanager").put_secret_value(SecretId=name, SecretString=json.dumps(value))

    def tags(self, name: str) -> dict[str, str]:
        with self.aws._aws_errors():
            described = self.aws.client("secretsmanager").describe_secret(SecretId=name)
        return {t["Key"]: t["Value"] for t in described.get("Tags", [])}

    def tag(self, name: str, tags: dict[str, str]) -> None:
        with self.aws._aws_errors():
            self.aws.client("secretsmanager").tag_resource(
                SecretId=name, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def untag(self, name: str, keys: list[str]) -> None:
        with self.aws._aws_errors():
            self.aws.client("secretsmanager").untag_resource(SecretId=name, TagKeys=keys)

    def role_trust(self, role_name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self.aws._aws_errors():
            try:
                document = self.aws.client("iam").get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                    return None
                raise
        if isinstance(document, str):
            from urllib.parse import unquote

            document = json.loads(unquote(document))
        return document


def workspace_client(host: str | None, profile: str | None, *, timeout_s: int = 30,
                     retry_timeout_s: int = 60) -> WorkspaceClient:
    """A WorkspaceClient with the SDK's usual authentication (token, OAuth M2M, profile), failing fast."""
    if not host and not profile:
        raise ProvisionError("no Databricks workspace given; pass --host or set DATABRICKS_HOST (or use --profile)")
    if host:
        url = host if "://" in host else f"https://{host}"
        try:
            requests.get(url.rstrip("/") + "/.well-known/databricks-config", timeout=timeout_s)
        except requests.RequestException as exc:
            raise ProvisionError(
                f"Databricks workspace {url} is unreachable ({type(exc).__name__}); check --host and network access"
            ) from None
    try:
        config = Config(host=host or None, profile=profile or None, http_timeout_seconds=timeout_s,
                        retry_timeout_seconds=retry_timeout_s)
    except ValueError as exc:
        raise ProvisionError(
            f"cannot authenticate to Databricks ({_scrub(str(exc))[:300]}); set DATABRICKS_TOKEN, or "
            "DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET of a workspace and metastore admin, or pass --profile"
        ) from None
    return WorkspaceClient(config=config)


class CatalogProvisioner:
    """Plans, applies and destroys the stack's Unity Catalog objects as a workspace and metastore admin."""

    def __init__(self, cfg: StackConfig, workspace: WorkspaceClient, aws: "AwsProvisioner", *, catalog: str,
                 storage_role_arn: str | None = None, secrets: AwsSecretStore | None = None,
                 model_name: str = PRODUCTION_MODEL_NAME):
        self.cfg = cfg
        self.ws = workspace
        self.catalog = catalog
        self.model_name = model_name
        self.secrets = secrets or AwsSecretStore(aws)
        self.storage_role_arn = storage_role_arn or cfg.role_arn(cfg.storage_role_name)
        self.own_storage_role = storage_role_arn in (None, "", cfg.role_arn(cfg.storage_role_name))
        self.marker = f"managed by governed-ft stack {cfg.name}"
        base = cfg.name.replace("-", "_")
        self.credential_name = f"{base}_storage"
        self.location_names = {prefix: f"{base}_{prefix}" for prefix in SCHEMAS}
        self._metastore: str | None = None

    # ---- public commands -----------------------------------------------------------------------------------

    def plan(self) -> CatalogReport:
        """What apply would do, and the exact grant diff; read-only."""
        return self._reconcile(apply=False)

    def apply(self) -> CatalogReport:
        """Create what is missing, then make the grants exactly the table; idempotent."""
        return self._reconcile(apply=True)

    def destroy(self, *, force: bool = False) -> CatalogReport:
        """Revoke the principals' grants, then delete schemas, catalog, locations, credential and created principals."""
        report = self._report("destroy")
        identities = self._identities(apply=False, report=report)
        known = [i for i in identities.values() if i.application_id]
        for (kind, full_name), _ in self._desired_grants(identities).items():
            if not self._securable_exists(kind, full_name):
                continue
            current = self._current_grants(kind, full_name)
            for identity in known:
                held = sorted(current.get(identity.application_id or "", set()))
                if held:
                    report.grants.append(GrantChange(kind, full_name, identity.role.value, identity.application_id or "",
                                                     remove=tuple(held)))
        self._update_grants(report.grants)
        for schema in SCHEMAS:
            report.changes.append(self._destroy_schema(f"{self.catalog}.{schema}", force))
        report.changes.append(self._destroy_catalog(force))
        for prefix, name in self.location_names.items():
            report.changes.append(self._destroy_named(
                "external-location", name, lambda n: self.ws.external_locations.get(n),
                lambda n: self.ws.external_locations.delete(n, force=force), force))
        report.changes.append(self._destroy_named(
            "storage-credential", self.credential_name, lambda n: self.ws.storage_credentials.get(n),
            lambda n: self.ws.storage_credentials.delete(n, force=force), force))
        for identity in identities.values():
            report.changes.append(self._destroy_identity(identity))
        return report

    # ---- reconcile -------------------------------------------------------------------------------------------

    def _report(self, command: str) -> CatalogReport:
        return CatalogReport(command, self.cfg.name, self.catalog, str(self.ws.config.host))

    def _reconcile(self, *, apply: bool) -> CatalogReport:
        report = self._report("apply" if apply else "plan")
        self._check_external_access()
        credential = self._storage_credential(apply, report)
        self._check_trust(credential, apply, report)
        for prefix, name in self.location_names.items():
            self._external_location(prefix, name, apply, report)
        catalog_exists = self._catalog(apply, report)
        for schema in SCHEMAS:
            self._schema(schema, catalog_exists or apply, apply, report)
        identities = self._identities(apply=apply, report=report)
        report.grants = self._grant_diff(identities, report)
        if apply:
            self._update_grants(report.grants)
        return report

    def _storage_credential(self, apply: bool, report: CatalogReport) -> uc.StorageCredentialInfo | None:
        name = self.credential_name
        current = self._get(f"storage credential {name}", lambda: self.ws.storage_credentials.get(name))
        role = uc.AwsIamRoleRequest(role_arn=self.storage_role_arn)
        if current is None:
            report.changes.append(Change("storage-credential", name, "create", [self.storage_role_arn]))
            if apply:
                with self._errors(f"creating storage credential {name}"):
                    current = self.ws.storage_credentials.create(name=name, aws_iam_role=role, comment=self.marker)
            return current
        ours = current.comment == self.marker
        current_arn = current.aws_iam_role.role_arn if current.aws_iam_role else None
        if current_arn == self.storage_role_arn:
            report.changes.append(Change("storage-credential", name, "no-change" if ours else "adopt"))
            return current
        if not ours:
            raise ProvisionError(
                f"storage credential {name} already exists for {current_arn} and was not created by stack "
                f"{self.cfg.name}; choose another --stack name or delete it"
            )
        report.changes.append(Change("storage-credential", name, "update", [f"role {current_arn} -> {self.storage_role_arn}"]))
        if apply:
            with self._errors(f"updating storage credential {name}"):
                current = self.ws.storage_credentials.update(name, aws_iam_role=role)
        return current

    def _check_trust(self, credential: uc.StorageCredentialInfo | None, apply: bool, report: CatalogReport) -> None:
        """The storage role must trust the credential's external id before locations can be validated."""
        if not self.own_storage_role:
            return
        trust = self.secrets.role_trust(self.cfg.storage_role_name)
        if trust is None:
            raise ProvisionError(
                f"IAM role {self.cfg.storage_role_name} does not exist; run `governed-ft aws apply --stack "
                f"{self.cfg.name} --region {self.cfg.region}` first"
            )
        external_id = credential.aws_iam_role.external_id if credential and credential.aws_iam_role else None
        if not external_id:
            if credential is None:
                report.notes.append("the storage credential's external id is known once it exists; "
                                    "apply creates it and then says whether the role must be updated")
            return
        trusted = {
            value
            for statement in trust.get("Statement", [])
            for value in _as_list(statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId", []))
        }
        if external_id in trusted:
            return
        fix = (f"storage role {self.cfg.storage_role_name} trusts external id {', '.join(sorted(trusted)) or 'none'} "
               f"but storage credential {self.credential_name} uses {external_id}; run `governed-ft aws apply "
               f"--stack {self.cfg.name} --region {self.cfg.region} --uc-external-id {external_id}`, then re-run "
               "`governed-ft catalog apply`")
        if apply:
            raise ProvisionError(fix)
        report.notes.append(fix)

    def _external_location(self, prefix: str, name: str, apply: bool, report: CatalogReport) -> None:
        url = self.cfg.data_url(prefix)
        current = self._get(f"external location {name}", lambda: self.ws.external_locations.get(name))
        if current is None:
            report.changes.append(Change("external-location", name, "create", [url]))
            if apply:
                with self._errors(f"creating external location {name} ({url})"):
                    self.ws.external_locations.create(name=name, url=url, credential_name=self.credential_name,
                                                      comment=self.marker)
            return
        ours = current.comment == self.marker
        drift = []
        if (current.url or "").rstrip("/") != url:
            drift.append(f"url {current.url} -> {url}")
        if current.credential_name != self.credential_name:
            drift.append(f"credential {current.credential_name} -> {self.credential_name}")
        if not drift:
            report.changes.append(Change("external-location", name, "no-change" if ours else "adopt"))
            return
        if not ours:
            raise ProvisionError(
                f"external location {name} already exists ({current.url}) and was not created by stack "
                f"{self.cfg.name}; choose another --stack name or delete it"
            )
        report.changes.append(Change("external-location", name, "update", drift))
        if apply:
            with self._errors(f"updating external location {name}"):
                self.ws.external_locations.update(name, url=url, credential_name=self.credential_name)

    def _catalog(self, apply: bool, report: CatalogReport) -> bool:
        current = self._get(f"catalog {self.catalog}", lambda: self.ws.catalogs.get(self.catalog))
        if current is None:
            root = self.cfg.data_url(MANAGED_STORAGE_PREFIX)
            report.changes.append(Change("catalog", self.catalog, "create", [f"managed storage {root}"]))
            if apply:
                with self._errors(f"creating catalog {self.catalog}"):
                    self.ws.catalogs.create(name=self.catalog, comment=self.marker, storage_root=root)
            return False
        report.changes.append(Change("catalog", self.catalog, "no-change" if current.comment == self.marker else "adopt"))
        return True

    def _schema(self, schema: str, look: bool, apply: bool, report: CatalogReport) -> None:
        full = f"{self.catalog}.{schema}"
        current = self._get(f"schema {full}", lambda: self.ws.schemas.get(full)) if look else None
        if current is None:
            report.changes.append(Change("schema", full, "create"))
            if apply:
                with self._errors(f"creating schema {full}"):
                    self.ws.schemas.create(name=schema, catalog_name=self.catalog, comment=self.marker)
            return
        report.changes.append(Change("schema", full, "no-change" if current.comment == self.marker else "adopt"))

    # ---- service principals ----------------------------------------------------------------------------------

    def _identities(self, *, apply: bool, report: CatalogReport) -> dict[Principal, _Identity]:
        """Each role's service principal: the secret's client id, else the stack's display name, else a new one."""
        out = {}
        for role in Principal:
            secret_name = self.cfg.secret_name(role)
            value = self.secrets.read(secret_name)
            if value is None:
                raise ProvisionError(
                    f"secret {secret_name} does not exist; run `governed-ft aws apply --stack {self.cfg.name} "
                    f"--region {self.cfg.region}` first"
                )
            identity = _Identity(role, f"{self.cfg.name}-{role.value}")
            client_id = str(value.get("client_id") or "")
            if client_id:
                sp = self._find_sp("applicationId", client_id)
                if sp is None and report.command != "destroy":
                    raise ProvisionError(
                        f"secret {secret_name} names client id {client_id}, but the workspace has no service principal "
                        "with that application id; add it to the workspace or reset the secret to "
                        '{"client_id": "", "client_secret": ""} so apply creates one'
                    )
                identity.application_id, identity.sp_id = client_id, sp.id if sp else None
            else:
                sp = self._find_sp("displayName", identity.display_name)
                if sp is not None:
                    identity.application_id, identity.sp_id = sp.application_id, sp.id
            identity.created_by_stack = bool(identity.application_id) and (
                self.secrets.tags(secret_name).get(SP_CREATED_TAG) == identity.application_id)
            if report.command != "destroy":
                self._ensure_identity(identity, value, apply, report)
            out[role] = identity
        return out

    def _ensure_identity(self, identity: _Identity, value: dict[str, Any], apply: bool, report: CatalogReport) -> None:
        secret_name = self.cfg.secret_name(identity.role)
        details = []
        if identity.application_id is None:
            details.append("create service principal")
            if apply:
                with self._errors(f"creating service principal {identity.display_name}"):
                    sp = self.ws.service_principals.create(display_name=identity.display_name, active=True)
                identity.application_id, identity.sp_id = sp.application_id, sp.id
                identity.created_by_stack = True
                self.secrets.tag(secret_name, {SP_CREATED_TAG: sp.application_id or ""})
        if value.get("client_secret") and not value.get("client_id"):
            raise ProvisionError(
                f"secret {secret_name} holds a client_secret but no client_id; add the service principal's "
                "application id as client_id, or reset it to the empty placeholder so apply fills it"
            )
        if not value.get("client_secret"):
            details.append(f"store a new OAuth secret in {secret_name}")
            if apply:
                with self._errors(f"creating an OAuth secret for service principal {identity.display_name}"):
                    minted = self.ws.service_principal_secrets_proxy.create(identity.sp_id or "")
                self.secrets.write(secret_name, {"client_id": identity.application_id or "",
                                                 "client_secret": minted.secret or ""})
        action = "create" if "create service principal" in details else "update" if details else "no-change"
        if action == "no-change" and not identity.created_by_stack:
            action = "adopt"
        report.changes.append(Change("service-principal", f"{identity.display_name} ({identity.label})", action,
                                     details))

    def _find_sp(self, attribute: str, value: str) -> Any:
        with self._errors("listing service principals"):
            return next(iter(self.ws.service_principals.list(filter=f'{attribute} eq "{value}"')), None)

    def _destroy_identity(self, identity: _Identity) -> Change:
        label = f"{identity.display_name} ({identity.label})"
        if not identity.created_by_stack:
            return Change("service-principal", label, "keep", ["not created by this stack"])
        secret_name = self.cfg.secret_name(identity.role)
        if identity.sp_id:
            with self._errors(f"deleting service principal {identity.display_name}"):
                try:
                    self.ws.service_principals.delete(identity.sp_id)
                except NotFound:
                    pass
        self.secrets.write(secret_name, dict(SECRET_PLACEHOLDER))
        self.secrets.untag(secret_name, [SP_CREATED_TAG])
        return Change("service-principal", label, "delete", [f"{secret_name} reset to the empty placeholder"])

    # ---- grants ----------------------------------------------------------------------------------------------

    def _desired_grants(self, identities: dict[Principal, _Identity]) -> dict[tuple[str, str], dict[Principal, set[str]]]:
        """Per securable, the privileges each role must hold; roles absent from a securable must hold none."""
        desired: dict[tuple[str, str], dict[Principal, set[str]]] = {}
        for grant in (*GRANTS, *external_access_grants()):
            key = (_GRANT_TYPE[grant.securable_type], grant.full_name(self.catalog))
            desired.setdefault(key, {}).setdefault(grant.principal, set()).add(grant.privilege.sdk_name)
        metastore = desired.setdefault(("metastore", self._metastore_id()), {})
        for role in LINEAGE_WRITERS:
            metastore.setdefault(role, set()).add(LINEAGE_PRIVILEGE)
        for prefix, grants in DATABRICKS_LOCATION_GRANTS.items():
            key = ("external_location", self.location_names[prefix])
            for role, privileges in grants.items():
                desired.setdefault(key, {}).setdefault(role, set()).update(privileges)
        for schema in SCHEMAS:
            desired.setdefault(("schema", f"{self.catalog}.{schema}"), {})
        desired.setdefault(("function", f"{self.catalog}.{self.model_name}"), {})
        return desired

    def _grant_diff(self, identities: dict[Principal, _Identity], report: CatalogReport) -> list[GrantChange]:
        out = []
        for (kind, full_name), wanted in self._desired_grants(identities).items():
            exists = self._securable_exists(kind, full_name)
            if not exists and kind in ("table", "function"):
                if kind == "table":
                    report.notes.append(f"table {full_name} does not exist yet; its owner grants SELECT when it "
                                        "creates it, and the next apply checks it")
                continue
            current = self._current_grants(kind, full_name) if exists else {}
            for role in Principal:
                identity = identities[role]
                held = current.get(identity.application_id or "", set()) if identity.application_id else set()
                want = wanted.get(role, set())
                add, remove = tuple(sorted(want - held)), tuple(sorted(held - want))
                if add or remove:
                    out.append(GrantChange(kind, full_name, role.value, identity.label, add, remove))
        return out

    def _metastore_id(self) -> str:
        if self._metastore is None:
            with self._errors("reading the workspace's metastore assignment"):
                self._metastore = str(self.ws.metastores.current().metastore_id)
        return self._metastore

    def _check_external_access(self) -> None:
        with self._errors("reading the metastore summary"):
            summary = self.ws.metastores.summary()
        if not summary.external_access_enabled:
            raise ProvisionError(
                f"metastore {summary.name or summary.metastore_id} has external data access turned off, so the "
                "catalog vends no credentials to the EMR and SageMaker jobs; a metastore admin turns it on in "
                "Catalog Explorer (Metastore details, External data access), then run apply again"
            )

    def _securable_exists(self, kind: str, full_name: str) -> bool:
        if kind == "metastore":
            return True
        getter: Callable[[], Any] = {
            "catalog": lambda: self.ws.catalogs.get(full_name),
            "schema": lambda: self.ws.schemas.get(full_name),
            "external_location": lambda: self.ws.external_locations.get(full_name),
            "table": lambda: self.ws.tables.get(full_name),
            "function": lambda: self.ws.registered_models.get(full_name),
        }[kind]
        return self._get(f"{kind} {full_name}", getter) is not None

    def _current_grants(self, kind: str, full_name: str) -> dict[str, set[str]]:
        # Raw REST: the SDK's enum drops privileges it does not know, such as CREATE_EXTERNAL_METADATA.
        with self._errors(f"reading grants on {kind} {full_name}"):
            response = self.ws.api_client.do("GET", f"{_UC}/permissions/{kind}/{full_name}")
        out: dict[str, set[str]] = {}
        for assignment in response.get("privilege_assignments") or []:
            out.setdefault(assignment.get("principal") or "", set()).update(
                str(p) for p in assignment.get("privileges") or [])
        return out

    def _update_grants(self, changes: list[GrantChange]) -> None:
        """One PATCH per securable, principals and privileges sorted."""
        by_securable: dict[tuple[str, str], list[GrantChange]] = {}
        for change in changes:
            by_securable.setdefault((change.securable_type, change.full_name), []).append(change)
        for (kind, full_name), items in by_securable.items():
            body = []
            for item in sorted(items, key=lambda i: i.principal):
                entry: dict[str, Any] = {"principal": item.principal}
                if item.add:
                    entry["add"] = list(item.add)
                if item.remove:
                    entry["remove"] = list(item.remove)
                body.append(entry)
            with self._errors(f"updating grants on {kind} {full_name}"):
                self.ws.api_client.do("PATCH", f"{_UC}/permissions/{kind}/{full_name}", body={"changes": body})

    # ---- destroy helpers -------------------------------------------------------------------------------------

    def _destroy_schema(self, full: str, force: bool) -> Change:
        current = self._get(f"schema {full}", lambda: self.ws.schemas.get(full))
        if current is None:
            return Change("schema", full, "keep", ["does not exist"])
        if current.comment != self.marker:
            return Change("schema", full, "keep", ["not created by this stack"])
        catalog, schema = full.split(".", 1)
        with self._errors(f"listing schema {full}"):
            contents = [t.full_name for t in self.ws.tables.list(catalog_name=catalog, schema_name=schema)]
            contents += [m.full_name for m in self.ws.registered_models.list(catalog_name=catalog, schema_name=schema)]
        if contents and not force:
            return Change("schema", full, "keep", [f"holds {len(contents)} table(s) or model(s); --force deletes them"])
        with self._errors(f"deleting schema {full}"):
            self.ws.schemas.delete(full, force=bool(contents))
        return Change("schema", full, "delete", [f"with {len(contents)} table(s) or model(s)"] if contents else [])

    def _destroy_catalog(self, force: bool) -> Change:
        current = self._get(f"catalog {self.catalog}", lambda: self.ws.catalogs.get(self.catalog))
        if current is None:
            return Change("catalog", self.catalog, "keep", ["does not exist"])
        if current.comment != self.marker:
            return Change("catalog", self.catalog, "keep", ["not created by this stack"])
        with self._errors(f"listing catalog {self.catalog}"):
            others = [s.name for s in self.ws.schemas.list(catalog_name=self.catalog) if s.name not in _AUTO_SCHEMAS]
        if others and not force:
            return Change("catalog", self.catalog, "keep", [f"holds schemas {', '.join(others)}; --force deletes them"])
        # `default` and `information_schema` come with every new catalog; force drops them with it.
        with self._errors(f"deleting catalog {self.catalog}"):
            self.ws.catalogs.delete(self.catalog, force=True)
        return Change("catalog", self.catalog, "delete")

    def _destroy_named(self, kind: str, name: str, get: Callable[[str], Any], delete: Callable[[str], Any],
                       force: bool) -> Change:
        current = self._get(f"{kind} {name}", lambda: get(name))
        if current is None:
            return Change(kind, name, "keep", ["does not exist"])
        if current.comment != self.marker:
            return Change(kind, name, "keep", ["not created by this stack"])
        try:
            with self._errors(f"deleting {kind} {name}"):
                delete(name)
        except ProvisionError as exc:
            if force:
                raise
            return Change(kind, name, "keep", [f"{exc}; --force deletes it anyway"])
        return Change(kind, name, "delete")

    # ---- SDK plumbing ----------------------------------------------------------------------------------------

    def _get(self, what: str, call: Callable[[], Any]) -> Any:
        """The object, or None when Databricks says it does not exist."""
        with self._errors(f"reading {what}"):
            try:
                return call()
            except NotFound:
                return None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Databricks failures as one sentence naming the step and the fix."""
        host = self.ws.config.host
        try:
            yield
        except ProvisionError:
            raise
        except PermissionDenied as exc:
            raise ProvisionError(
                f"Databricks at {host} refused {what}: {_scrub(str(exc))}; run as a workspace admin who is also "
                "metastore admin (or holds CREATE STORAGE CREDENTIAL, CREATE EXTERNAL LOCATION and CREATE CATALOG)"
            ) from None
        except Unauthenticated as exc:
            raise ProvisionError(
                f"Databricks at {host} rejected the credentials while {what}: {_scrub(str(exc))}; "
                "check DATABRICKS_TOKEN or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET or --profile"
            ) from None
        except DatabricksError as exc:
            code = exc.error_code or type(exc).__name__
            raise ProvisionError(f"Databricks at {host} failed {what}: {code}: {_scrub(str(exc))}") from None
        except (requests.ConnectionError, requests.Timeout, TimeoutError, ConnectionError) as exc:
            raise ProvisionError(
                f"Databricks workspace {host} is unreachable while {what} ({type(exc).__name__}); "
                "check --host and network access"
            ) from None
        except ValueError as exc:
            raise ProvisionError(
                f"Databricks sign-in at {host} failed while {what}: {_scrub(str(exc))[:300]}; "
                "check the admin credentials"
            ) from None


def _scrub(text: str) -> str:
    """The SDK's message without its appended `Config: ...` dump."""
    return _SDK_DEBUG_SUFFIX.sub("", text)


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


__all__ = ["DATABRICKS_LOCATION_GRANTS", "AwsSecretStore", "CatalogProvisioner", "CatalogReport", "GrantChange",
           "workspace_client"]
