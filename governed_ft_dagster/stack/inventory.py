"""What the local catalog holds: schemas, principals and grants, for `stack status`."""

from __future__ import annotations

from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.catalog.oss import NotFound, OssCatalogClient
from governed_ft_dagster.governance import GRANTS, LOCATION_GRANTS, location_name, principal_email
from governed_ft_dagster.stack.local import LocalStack


def catalog_inventory(stack: LocalStack) -> dict:
    """Schemas, principals and the governed grants as the catalog reports them."""
    catalog = stack.settings.catalog_name
    admin = OssCatalogClient(stack.settings.uc_url, stack.admin_token(), principal="admin")
    try:
        schemas = admin.list_names("schemas", catalog_name=catalog)
    except NotFound:
        return {"name": catalog, "exists": False, "schemas": [], "principals": [], "grants": []}
    emails = set(admin.list_user_emails())
    principals = [p.value for p in Principal if principal_email(p) in emails]
    grants = []
    securables = {(g.securable_type, g.full_name(catalog)) for g in GRANTS}
    securables |= {("external_location", location_name(catalog, prefix)) for prefix in LOCATION_GRANTS}
    for securable_type, full_name in sorted(securables):
        for principal in Principal:
            try:
                held = admin.direct_privileges(securable_type, full_name, principal_email(principal))
            except NotFound:
                continue
            grants.extend(f"{p.value} on {securable_type} {full_name} to {principal.value}" for p in sorted(held, key=str))
    return {"name": catalog, "exists": True, "schemas": schemas, "principals": principals, "grants": grants}
