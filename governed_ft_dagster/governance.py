"""The governance model: principals, the securables they touch and exactly the grants they get."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from governed_ft_dagster.catalog.base import Principal, Privilege, SecurableType

SCHEMAS = ("raw", "curated", "ml")
RAW_TABLE = "raw.risk_factors"
CURATED_TABLE = "curated.risk_factor_instructions"
MODEL_SCHEMA = "ml"
# The registered model of adapters over Ministral-3-3B-Instruct-2512, the production base; every other base model
# gets a name of its own (registered_model_name), so a stand-in never shares the production model's versions.
PRODUCTION_MODEL_NAME = "ml.ministral_3b_sec_risk_factors"
MODEL_NAME_SUFFIX = "_sec_risk_factors"
_MODEL_NAME = re.compile(rf"^{MODEL_SCHEMA}\.[a-z][a-z0-9_]{{0,120}}$")


class ModelNameError(ValueError):
    """A registered model name the project cannot use."""


def check_model_name(name: str) -> str:
    """The name, when it is a registered model in the ml schema (where the registrar may create models)."""
    if not _MODEL_NAME.match(name):
        raise ModelNameError(f"{name!r} is not a registered model name the registrar may create: write it as "
                             f"{MODEL_SCHEMA}.<name> with lower-case letters, digits and underscores")
    return name


def registered_model_name(base_model: str, *, production_base: str, tiny_family: str | None = None) -> str:
    """The registered model for adapters over this base: the production name for the production base (a hub id or
    a folder staged from it), ml.tiny_<family>_sec_risk_factors for a tiny stand-in, else one named after the base."""
    if tiny_family:
        stem = f"tiny_{tiny_family}"
    elif base_model == production_base:
        return PRODUCTION_MODEL_NAME
    else:
        stem = PurePosixPath(base_model.rstrip("/")).name or base_model
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "base"
    if not slug[0].isalpha():
        slug = f"m_{slug}"
    return check_model_name(f"{MODEL_SCHEMA}.{slug[:100]}{MODEL_NAME_SUFFIX}")


@dataclass(frozen=True)
class GrantSpec:
    """One privilege on one securable for one principal role."""

    principal: Principal
    securable_type: SecurableType
    name: str
    privilege: Privilege

    def full_name(self, catalog: str) -> str:
        return catalog if self.securable_type == "catalog" else f"{catalog}.{self.name}"


def _grants() -> tuple[GrantSpec, ...]:
    p, s = Principal, Privilege
    rows: list[GrantSpec] = []
    for principal in p:
        rows.append(GrantSpec(principal, "catalog", "", s.USE_CATALOG))
    rows += [
        GrantSpec(p.INGEST, "schema", "raw", s.USE_SCHEMA),
        GrantSpec(p.INGEST, "schema", "raw", s.CREATE_TABLE),
        GrantSpec(p.INGEST, "schema", "raw", s.MODIFY),
        GrantSpec(p.PREPROCESS, "schema", "raw", s.USE_SCHEMA),
        GrantSpec(p.PREPROCESS, "table", RAW_TABLE, s.SELECT),
        GrantSpec(p.PREPROCESS, "schema", "curated", s.USE_SCHEMA),
        GrantSpec(p.PREPROCESS, "schema", "curated", s.CREATE_TABLE),
        GrantSpec(p.PREPROCESS, "schema", "curated", s.MODIFY),
        GrantSpec(p.TRAIN, "schema", "curated", s.USE_SCHEMA),
        GrantSpec(p.TRAIN, "table", CURATED_TABLE, s.SELECT),
        GrantSpec(p.TRAIN, "schema", "ml", s.USE_SCHEMA),
        GrantSpec(p.REGISTRAR, "schema", "ml", s.USE_SCHEMA),
        GrantSpec(p.REGISTRAR, "schema", "ml", s.CREATE_MODEL),
    ]
    return tuple(rows)


GRANTS: tuple[GrantSpec, ...] = _grants()


# Who creates, and therefore owns, each governed table; the registrar creates, and owns, every registered model.
OWNERS: dict[str, Principal] = {
    RAW_TABLE: Principal.INGEST,
    CURATED_TABLE: Principal.PREPROCESS,
}
MODEL_OWNER = Principal.REGISTRAR


def owner(securable: str) -> Principal | None:
    """The principal that creates, and so owns, a governed table or registered model."""
    if securable in OWNERS:
        return OWNERS[securable]
    return MODEL_OWNER if securable.startswith(f"{MODEL_SCHEMA}.") else None
# What path vending needs, on one external location per storage prefix so no principal reaches another's prefix:
# ingest lands JSON and creates the raw table; preprocess creates and writes the curated table (it reads the raw
# table with table credentials, which SELECT covers); train writes the LoRA adapter under ml/ and reads its own
# earlier artifacts; registrar reads the adapter so the registry can copy it into the model version.
LOCATION_GRANTS: dict[str, dict[Principal, tuple[Privilege, ...]]] = {
    "raw": {Principal.INGEST: (Privilege.CREATE_EXTERNAL_TABLE, Privilege.READ_FILES, Privilege.WRITE_FILES)},
    "curated": {Principal.PREPROCESS: (Privilege.CREATE_EXTERNAL_TABLE, Privilege.READ_FILES,
                                       Privilege.WRITE_FILES)},
    "ml": {Principal.TRAIN: (Privilege.READ_FILES, Privilege.WRITE_FILES), Principal.REGISTRAR: (Privilege.READ_FILES,)},
}
ARTIFACT_WRITERS: tuple[Principal, ...] = tuple(
    p for p, privileges in LOCATION_GRANTS["ml"].items() if Privilege.WRITE_FILES in privileges)
LINEAGE_WRITERS: tuple[Principal, ...] = (Principal.REGISTRAR,)


def location_name(catalog: str, prefix: str) -> str:
    """The external location that covers one storage prefix."""
    return f"{catalog}_{prefix}"


def external_access_grants() -> tuple[GrantSpec, ...]:
    """EXTERNAL USE SCHEMA wherever a principal reads or writes table data, which vending to outside engines needs."""
    rows: dict[tuple[Principal, str], None] = {}
    for grant in GRANTS:
        if grant.securable_type == "table" and grant.privilege == Privilege.SELECT:
            rows[(grant.principal, grant.name.split(".")[0])] = None
        elif grant.securable_type == "schema" and grant.privilege == Privilege.MODIFY:
            rows[(grant.principal, grant.name)] = None
    return tuple(GrantSpec(p, "schema", schema, Privilege.EXTERNAL_USE_SCHEMA) for p, schema in rows)


def grants_for(principal: Principal) -> tuple[GrantSpec, ...]:
    return tuple(g for g in GRANTS if g.principal == principal)


def principal_email(principal: Principal, domain: str = "governed-ft.local") -> str:
    """The local catalog identifies users by e-mail address."""
    return f"{principal.value}@{domain}"


class Operation(str, Enum):
    """What the pipeline asks of the catalog on a principal's behalf."""

    VEND_READ = "vend READ"
    VEND_READ_WRITE = "vend READ_WRITE"
    CREATE_TABLE = "create table"
    CREATE_MODEL_VERSION = "create model version"
    WRITE_ARTIFACT = "write model artifact"
    WRITE_LINEAGE = "write lineage"


@dataclass(frozen=True)
class Action:
    """One operation on one securable, named relative to the catalog (empty where there is none)."""

    operation: Operation
    target: str = ""

    def __str__(self) -> str:
        return f"{self.operation.value} {self.target}".strip()


def pipeline_actions(model_name: str = PRODUCTION_MODEL_NAME) -> tuple[Action, ...]:
    """Every operation on every securable that the pipeline uses (adapters registered under model_name)."""
    o = Operation
    tables = (RAW_TABLE, CURATED_TABLE)
    return (
        *(Action(op, table) for table in tables for op in (o.VEND_READ, o.VEND_READ_WRITE)),
        *(Action(o.CREATE_TABLE, schema) for schema in SCHEMAS),
        Action(o.CREATE_MODEL_VERSION, model_name),
        Action(o.WRITE_ARTIFACT),
        Action(o.WRITE_LINEAGE),
    )


def _holds(principal: Principal, securable_type: str, name: str, privilege: Privilege) -> bool:
    """A design grant on the securable itself or, for tables, inherited from its schema."""
    schema = name.split(".")[0]
    return any(
        g.principal == principal and g.privilege == privilege and (
            (g.securable_type == securable_type and g.name == name)
            or (securable_type == "table" and g.securable_type == "schema" and g.name == schema))
        for g in GRANTS
    )


def allowed(principal: Principal, action: Action) -> bool:
    """Whether the design lets the principal perform the action."""
    o, s = Operation, Privilege
    if action.operation == o.WRITE_ARTIFACT:
        return principal in ARTIFACT_WRITERS
    if action.operation == o.WRITE_LINEAGE:
        return principal in LINEAGE_WRITERS
    schema = action.target.split(".")[0]
    if not (_holds(principal, "catalog", "", s.USE_CATALOG) and _holds(principal, "schema", schema, s.USE_SCHEMA)):
        return False
    owns = owner(action.target) == principal
    if action.operation == o.VEND_READ:
        return owns or _holds(principal, "table", action.target, s.SELECT)
    if action.operation == o.VEND_READ_WRITE:
        return owns or all(_holds(principal, "table", action.target, p) for p in (s.SELECT, s.MODIFY))
    if action.operation == o.CREATE_TABLE:
        return _holds(principal, "schema", schema, s.CREATE_TABLE)
    return owns and _holds(principal, "schema", schema, s.CREATE_MODEL)
