"""Create the catalog, schemas, principals, grants and per-principal tokens of the local stack."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key

from governed_ft_dagster.catalog.base import Principal, Privilege
from governed_ft_dagster.catalog.oss import OssCatalogClient
from governed_ft_dagster.governance import GRANTS, LOCATION_GRANTS, SCHEMAS, location_name, principal_email
from governed_ft_dagster.stack.errors import StackError
from governed_ft_dagster.stack.local import LocalStack

ISSUER = "internal"
LOCAL_ROLE_ARN = "arn:aws:iam::000000000000:role/governed-ft-local-unused"


@dataclass
class BootstrapReport:
    """What one bootstrap run created or changed; empty lists mean nothing changed."""

    created: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    tokens_written: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.granted or self.revoked or self.tokens_written)


def token_path(home: Path, principal: Principal) -> Path:
    return home / "tokens" / f"{principal.value}.token"


def read_token(home: Path, principal: Principal) -> str:
    """The principal's token, or a StackError naming the fix."""
    try:
        return token_path(home, principal).read_text().strip()
    except FileNotFoundError:
        raise StackError(f"no token for principal '{principal.value}'; run `governed-ft bootstrap`") from None


def _signing_material(conf: Path) -> tuple[bytes, bytes, str]:
    try:
        return (conf / "private_key.der").read_bytes(), (conf / "public_key.der").read_bytes(), \
            (conf / "key_id.txt").read_text().strip()
    except FileNotFoundError:
        raise StackError(f"the catalog's signing key is not in {conf}; run `governed-ft stack up` first") from None


def sign_token(conf: Path, email: str) -> str:
    """An access token for a catalog user, signed with the server's own key as its tests do."""
    private_der, _, key_id = _signing_material(conf)
    key = load_der_private_key(private_der, password=None)
    now = dt.datetime.now(dt.timezone.utc)
    claims = {"iss": ISSUER, "sub": email, "email": email, "iat": now, "jti": str(uuid.uuid4()), "type": "ACCESS"}
    return jwt.encode(claims, key, algorithm="RS512", headers={"kid": key_id})


def token_is_current(conf: Path, token: str, email: str) -> bool:
    """Whether a stored token verifies against the server's current key for that user."""
    _, public_der, key_id = _signing_material(conf)
    try:
        if jwt.get_unverified_header(token).get("kid") != key_id:
            return False
        claims = jwt.decode(token, load_der_public_key(public_der), algorithms=["RS512"], issuer=ISSUER)
    except jwt.PyJWTError:
        return False
    return claims.get("sub") == email


def apply_governance(admin: OssCatalogClient, catalog: str, report: BootstrapReport) -> None:
    """Make each principal's privileges on the governed securables exactly those of the design."""
    wanted: dict[tuple[str, str, str], set[Privilege]] = {}
    for grant in GRANTS:
        key = (grant.securable_type, grant.full_name(catalog), principal_email(grant.principal))
        wanted.setdefault(key, set()).add(grant.privilege)
    for prefix, grants in LOCATION_GRANTS.items():
        for principal, privileges in grants.items():
            key = ("external_location", location_name(catalog, prefix), principal_email(principal))
            wanted.setdefault(key, set()).update(privileges)
    securables = {(t, n) for t, n, _ in wanted} | {("catalog", catalog)} | {("schema", f"{catalog}.{s}") for s in SCHEMAS}
    securables |= {("external_location", location_name(catalog, prefix)) for prefix in LOCATION_GRANTS}
    for securable_type, full_name in sorted(securables):
        if securable_type == "table" and not admin.table_exists(full_name):
            report.pending.extend(
                f"{', '.join(sorted(p.value for p in privs))} on {full_name} to {email}"
                for (t, n, email), privs in wanted.items() if (t, n) == (securable_type, full_name)
            )
            continue
        for principal in Principal:
            email = principal_email(principal)
            want = wanted.get((securable_type, full_name, email), set())
            have = admin.direct_privileges(securable_type, full_name, email)  # type: ignore[arg-type]
            add, remove = sorted(want - have, key=str), sorted(have - want, key=str)
            if add or remove:
                admin.update_grants(securable_type, full_name, email, add=add, remove=remove)  # type: ignore[arg-type]
                report.granted.extend(f"{p.value} on {full_name} to {email}" for p in add)
                report.revoked.extend(f"{p.value} on {full_name} from {email}" for p in remove)


def bootstrap(stack: LocalStack) -> BootstrapReport:
    """Idempotently create everything the pipeline expects in the local catalog."""
    settings = stack.settings
    admin = OssCatalogClient(settings.uc_url, stack.admin_token(), principal="admin")
    report = BootstrapReport()
    catalog = settings.catalog_name
    if admin.ensure_catalog(catalog, "Governed fine-tuning data and models"):
        report.created.append(f"catalog {catalog}")
    for schema in SCHEMAS:
        if admin.ensure_schema(catalog, schema):
            report.created.append(f"schema {catalog}.{schema}")
    # The catalog vends nothing for file:// paths, but checks path grants on external locations, which need a
    # storage credential; this one is never used to reach storage.
    credential = f"{catalog}_local_storage"
    if admin.ensure_storage_credential(credential, LOCAL_ROLE_ARN, "file:// locations of the local stack"):
        report.created.append(f"storage credential {credential}")
    for prefix in LOCATION_GRANTS:
        name, url = location_name(catalog, prefix), (stack.warehouse / prefix).as_uri()
        (stack.warehouse / prefix).mkdir(parents=True, exist_ok=True)
        if admin.ensure_external_location(name, url, credential, f"the {prefix}/ prefix of the warehouse"):
            report.created.append(f"external location {name}")
    for principal in Principal:
        email = principal_email(principal)
        if admin.ensure_user(email, f"governed-ft {principal.value}"):
            report.created.append(f"principal {email}")
    apply_governance(admin, catalog, report)
    conf = stack.server_paths.conf
    for principal in Principal:
        path = token_path(stack.home, principal)
        email = principal_email(principal)
        if path.exists() and token_is_current(conf, path.read_text().strip(), email):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(sign_token(conf, email))
        tmp.replace(path)
        report.tokens_written.append(principal.value)
    return report
