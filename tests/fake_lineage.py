"""In-memory External Metadata and External Lineage endpoints for the fake workspace, with their authorization.

Rules from the SDK's docstrings of ExternalMetadataAPI and ExternalLineageAPI (databricks-sdk 0.162,
databricks/sdk/service/catalog.py): creating external metadata takes CREATE_EXTERNAL_METADATA on the metastore and
"Grants BROWSE to all account users upon creation by default"; reading it takes ownership, metastore admin or BROWSE;
updating takes ownership, metastore admin or MODIFY; a relationship links "a Databricks or external metadata object and
another external metadata object", so one side must be external metadata, and a table or model version on the other
side must exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from fake_databricks import ACCOUNT_USERS, ApiError, FakeDatabricks, RecordedRequest

LT = "/api/2.0/lineage-tracking"


class FakeLineageService:
    """In-memory External Metadata and External Lineage endpoints, in the API's request and response shapes."""

    def __init__(self, page_size: int = 2) -> None:
        self.metadata: dict[str, dict[str, Any]] = {}
        self.relationships: list[dict[str, Any]] = []
        self.page_size = page_size

    def install(self, fake: FakeDatabricks) -> None:
        fake.add_route("POST", rf"{LT}/external-metadata", self.create_metadata)
        fake.add_route("GET", rf"{LT}/external-metadata/(?P<name>[^/]+)", self.get_metadata)
        fake.add_route("PATCH", rf"{LT}/external-metadata/(?P<name>[^/]+)", self.update_metadata)
        fake.add_route("POST", rf"{LT}/external-lineage", self.create_relationship)
        fake.add_route("GET", rf"{LT}/external-lineage", self.list_relationships)
        fake.add_route("PATCH", rf"{LT}/external-lineage", self.update_relationship)

    def create_metadata(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        body = request.body or {}
        missing = [k for k in ("name", "system_type", "entity_type") if not body.get(k)]
        if missing:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field(s): {', '.join(missing)}.")
        fake.require(request.principal or "", "metastore", fake.metastore_id, "CREATE_EXTERNAL_METADATA")
        if body["name"] in self.metadata:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", f"External metadata '{body['name']}' already exists.")
        record = {**body, "id": str(uuid.uuid4()), "owner": request.principal, "metastore_id": fake.metastore_id}
        self.metadata[body["name"]] = record
        fake.grant("external_metadata", body["name"], ACCOUNT_USERS, "BROWSE")
        return 200, record

    def get_metadata(self, fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
        if name not in self.metadata:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"External metadata '{name}' does not exist.")
        self._require(fake, request.principal or "", name, "BROWSE")
        return 200, self.metadata[name]

    def update_metadata(self, fake: FakeDatabricks, request: RecordedRequest, name: str) -> tuple[int, Any]:
        if name not in self.metadata:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"External metadata '{name}' does not exist.")
        self._require_modify(fake, request.principal or "", name)
        mask = (request.query.get("update_mask") or [""])[0].split(",")
        for field in mask:
            if field:
                self.metadata[name][field] = (request.body or {}).get(field)
        return 200, self.metadata[name]

    def _require(self, fake: FakeDatabricks, principal: str, name: str, privilege: str) -> None:
        """Ownership, metastore admin or the privilege on the external metadata object."""
        if self.metadata.get(name, {}).get("owner") != principal:
            fake.require(principal, "external_metadata", name, privilege)

    def _require_modify(self, fake: FakeDatabricks, principal: str, name: str) -> None:
        """Changing an external metadata object or its relationships takes its ownership or MODIFY on it."""
        self._require(fake, principal, name, "MODIFY")

    def _require_modify_sides(self, fake: FakeDatabricks, principal: str, *sides: Any) -> None:
        for side in sides:
            if isinstance(side, dict) and "external_metadata" in side:
                self._require_modify(fake, principal, side["external_metadata"]["name"])

    @staticmethod
    def _require_exists(fake: FakeDatabricks, side: dict[str, Any]) -> None:
        """A table or model version side must name one that exists.

        Codes: TABLE_DOES_NOT_EXIST "Table '<name>' does not exist" as Databricks lists it
        (https://docs.databricks.com/aws/en/delta-sharing/audit-logs); RESOURCE_DOES_NOT_EXIST for the model version,
        the SDK's ResourceDoesNotExist (databricks/sdk/errors/platform.py); the model version message is ours."""
        if "table" in side:
            name = side["table"].get("name", "")
            if name not in fake.tables:
                raise ApiError(404, "TABLE_DOES_NOT_EXIST", f"Table '{name}' does not exist.")
        if "model_version" in side:
            name, version = side["model_version"].get("name", ""), str(side["model_version"].get("version", ""))
            if version not in fake.model_versions.get(name, {}):
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Model version '{name}' version {version} does not "
                                                               "exist.")

    def _index(self, source: Any, target: Any) -> int | None:
        return next(
            (i for i, r in enumerate(self.relationships) if r["source"] == source and r["target"] == target), None
        )

    def create_relationship(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        body = request.body or {}
        source, target = body.get("source") or {}, body.get("target") or {}
        if "external_metadata" not in source and "external_metadata" not in target:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "One side must be an external metadata object.")
        for side in (source, target):
            if "external_metadata" in side and side["external_metadata"]["name"] not in self.metadata:
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", "External metadata does not exist.")
            self._require_exists(fake, side)
        self._require_modify_sides(fake, request.principal or "", source, target)
        if self._index(source, target) is not None:
            raise ApiError(409, "RESOURCE_ALREADY_EXISTS", "External lineage relationship already exists.")
        record = {"id": str(uuid.uuid4()), "source": source, "target": target}
        record["properties"] = body.get("properties") or {}
        self.relationships.append(record)
        return 200, record

    def list_relationships(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        query = {k: v[0] for k, v in request.query.items()}
        prefix = "object_info."
        anchor: dict[str, Any] = {}
        for key, value in query.items():
            if key.startswith(prefix):
                kind, _, attr = key[len(prefix):].partition(".")
                anchor.setdefault(kind, {})[attr] = value
        side = {"DOWNSTREAM": "source", "UPSTREAM": "target"}[query["lineage_direction"]]
        matches = [r for r in self.relationships if r[side] == anchor]
        start = int(query.get("page_token") or 0)
        page = matches[start : start + self.page_size]
        body: dict[str, Any] = {"external_lineage_relationships": [{"external_lineage_info": r} for r in page]}
        if start + self.page_size < len(matches):
            body["next_page_token"] = str(start + self.page_size)
        return 200, body

    def update_relationship(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        body = request.body or {}
        self._require_modify_sides(fake, request.principal or "", body.get("source"), body.get("target"))
        index = self._index(body.get("source"), body.get("target"))
        if index is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", "External lineage relationship does not exist.")
        if (request.query.get("update_mask") or [""])[0] != "properties":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Only properties can be updated here.")
        self.relationships[index]["properties"] = body.get("properties") or {}
        return 200, self.relationships[index]
