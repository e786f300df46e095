"""The governance model: principals, the securables they touch and exactly the grants they get."""

from __future__ import annotations

from dataclasses import dataclass

from governed_ft_dagster.catalog.base import Principal, Privilege, SecurableType

SCHEMAS = ("raw", "curated", "ml")
RAW_TABLE = "raw.risk_factors"
CURATED_TABLE = "curated.risk_factor_instructions"
MODEL_NAME = "ml.ministral_3b_sec_risk_factors"


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


def grants_for(principal: Principal) -> tuple[GrantSpec, ...]:
    return tuple(g for g in GRANTS if g.principal == principal)


def principal_email(principal: Principal, domain: str = "governed-ft.local") -> str:
    """The local catalog identifies users by e-mail address."""
    return f"{principal.value}@{domain}"
