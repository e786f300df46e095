"""What a Databricks refusal says, read from its error code, google.rpc details and message, and the one sentence an
operator gets for it: the principal, the securable, what is missing or wrong, and the fix. No Dagster here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError

Cause = Literal["privilege", "token_expired", "external_access_off", "no_external_location", "location_overlap",
                "not_applicable", "unknown"]

_EXTERNAL_ACCESS_REASONS = ("EXTERNAL_ACCESS_DISABLED_ON_METASTORE",
                            "UNITY_CATALOG_EXTERNAL_GENERATE_TABLE_CREDENTIALS_DENIED",
                            "UNITY_CATALOG_EXTERNAL_GENERATE_PATH_CREDENTIALS_DENIED")
_DOES_NOT_HAVE = re.compile(r"does not have (?P<privilege>[A-Z][A-Z_ ]*?[A-Z]) on (?P<kind>[A-Z][A-Za-z ]*?)"
                            r"(?:\s+[\"'`](?P<name>[^\"'`]+)[\"'`]|\s*[.]|\s*$)")
_EXPIRED = re.compile(r"\b(?:JWT|token)\b[^.]*\b(?:expired|expiring)\b", re.IGNORECASE)
_EXTERNAL_ACCESS = re.compile(r"External Data Access .*disabled|from outside of Databricks Unity Catalog enabled "
                              r"compute environment is denied", re.IGNORECASE)
_NOT_APPLICABLE = re.compile(r"Privilege (?P<privilege>[A-Z][A-Z_ ]*?) is not applicable to this entity"
                             r"(?: \[(?P<entity>[^\]]*)\])?")
_OVERLAP = re.compile(r"Input path(?: url)? '?(?P<url>[^'\s]+)'? overlaps with (?P<what>.*)", re.S)
_CONFLICTS = re.compile(r"Conflicting tables/volumes: (?P<names>.+?)\.?\s*$", re.S)
_NO_LOCATION = re.compile(r"(?:No (?:parent )?external location (?:covers|was found for|found for)(?: path)? "
                          r"'(?P<url>[^']+)')", re.IGNORECASE)


@dataclass(frozen=True)
class Refusal:
    """The cause of a refusal and what it names; detail is the service's own message."""

    cause: Cause
    privilege: str = ""
    securable_type: str = ""
    securable: str = ""
    conflicts: str = ""
    detail: str = ""

    @property
    def target(self) -> str:
        """`<type> <name>`, as the pipeline names securables."""
        return f"{self.securable_type} {self.securable}".strip()


def read_refusal(message: str, error_code: Any = None,
                 details: Sequence[Mapping[str, Any]] | None = None) -> Refusal:
    """The refusal a Databricks error answer describes; cause "unknown" when nothing in it is recognised."""
    message = (message or "").strip()
    infos = [d for d in details or () if isinstance(d, Mapping) and str(d.get("@type", d.get("type", ""))).endswith(
        "ErrorInfo")]
    reasons = {str(d.get("reason") or "") for d in infos}
    if reasons & set(_EXTERNAL_ACCESS_REASONS) or _EXTERNAL_ACCESS.search(message):
        return Refusal("external_access_off", detail=message)
    if _EXPIRED.search(message):
        return Refusal("token_expired", detail=message)
    for info in infos:
        meta = info.get("metadata") or {}
        if info.get("reason") == "PERMISSION_DENIED" and meta.get("msg") and meta.get("resourceType"):
            return Refusal("privilege", _privilege(str(meta["msg"])), _kind(str(meta["resourceType"])),
                           str(meta.get("resourceName") or ""), detail=message)
    said = _DOES_NOT_HAVE.search(message)
    if said:
        return Refusal("privilege", _privilege(said["privilege"]), _kind(said["kind"]), said["name"] or "",
                       detail=message)
    applicable = _NOT_APPLICABLE.search(message)
    if applicable:
        return Refusal("not_applicable", _privilege(applicable["privilege"]), securable=applicable["entity"] or "",
                       detail=message)
    overlap = _OVERLAP.search(message)
    if overlap or "LOCATION_OVERLAP" in reasons:
        url, conflicts = (overlap["url"], _overlapped(overlap["what"])) if overlap else ("", "")
        return Refusal("location_overlap", securable_type="path", securable=url, conflicts=conflicts, detail=message)
    no_location = _NO_LOCATION.search(message)
    if no_location or error_code == "EXTERNAL_LOCATION_DOES_NOT_EXIST" and "covers" in message:
        return Refusal("no_external_location", securable_type="path",
                       securable=no_location["url"] if no_location else "", detail=message)
    return Refusal("unknown", detail=message)


def sdk_refusal(exc: Any, message: str | None = None) -> Refusal:
    """read_refusal of a databricks-sdk DatabricksError: its message (or the scrubbed one given), code and details."""
    details = [{"@type": d.type, "reason": d.reason, "metadata": d.metadata or {}} for d in exc.details or ()]
    return read_refusal(str(exc) if message is None else message, exc.error_code, details)


def refusal_error(refusal: Refusal, *, principal: str, grantee: str, operation: str, host: str,
                  error_code: Any = None, fallback_securable: str = "",
                  fallback_privilege: str | Sequence[str] = ()) -> CatalogError:
    """One sentence for the operator: principal, securable, the missing privilege or the cause, and the fix."""
    detail = refusal.detail
    if refusal.cause == "privilege":
        return CatalogPermissionError(principal, refusal.target, refusal.privilege, detail, needed_for=operation,
                                      grantee=grantee)
    if refusal.cause == "token_expired":
        return CatalogError(
            f"Databricks at {host} refused principal '{principal}' (client id {grantee}) for {operation}: its OAuth "
            f"token has expired by the workspace's clock ({detail}); the client renews a token before its end by this "
            "machine's clock, so set this machine's clock right (NTP) and retry")
    if refusal.cause == "external_access_off":
        return CatalogError(
            f"the metastore of {host} has external data access turned off, so principal '{principal}' was refused "
            f"{operation}; a metastore admin turns it on in Catalog Explorer (Metastore details, External data "
            f"access), then retry ({detail})")
    if refusal.cause == "no_external_location":
        where = refusal.securable or fallback_securable
        return CatalogError(
            f"no external location of the metastore at {host} covers {where}, so principal '{principal}' was refused "
            f"{operation}; keep the data under the stack's external locations (`governed-ft catalog apply` creates "
            f"them) or create one over that path ({detail})")
    if refusal.cause == "location_overlap":
        return CatalogError(
            f"principal '{principal}' was refused {operation}: {refusal.securable or fallback_securable} overlaps "
            f"{refusal.conflicts or 'another table'}, and Unity Catalog keeps each table's location apart from every "
            f"other table's and from managed storage; choose a location of its own ({detail})")
    if refusal.cause == "not_applicable":
        return CatalogError(
            f"Databricks at {host} refused principal '{principal}' {operation}: {refusal.privilege} does not apply to "
            f"{refusal.securable or 'that kind of securable'}; grant it on a securable it applies to (Unity Catalog "
            f"privileges reference) ({detail})")
    if fallback_privilege:
        return CatalogPermissionError(principal, fallback_securable, fallback_privilege, detail, needed_for=operation,
                                      grantee=grantee)
    code = f"{error_code}: " if error_code else ""
    return CatalogError(f"Databricks at {host} refused principal '{principal}' (client id {grantee}) for "
                        f"{operation} ({code}{detail}); check that principal's grants for it")


def _overlapped(what: str) -> str:
    """What a path overlaps: the conflicting tables when named, else the text before " within '<call>' call"."""
    named = _CONFLICTS.search(what)
    if named:
        return named["names"].strip()
    return re.split(r" within '|\.\s|\.$", what.strip(), maxsplit=1)[0].strip()


def _privilege(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).upper()


def _kind(text: str) -> str:
    """Databricks' display name of a securable kind ("External Location") as the pipeline's ("external_location");
    registered models are FUNCTION securables, shown as models."""
    kind = "_".join(text.strip().lower().split())
    return {"function": "registered_model", "registered_model": "registered_model", "model": "registered_model"}.get(
        kind, kind)


__all__ = ["Refusal", "read_refusal", "refusal_error", "sdk_refusal"]
