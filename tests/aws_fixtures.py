"""Local stand-ins for what cannot run here: moto in server mode and the recording fake Databricks workspace."""

from __future__ import annotations

import json
from dataclasses import dataclass

import boto3
import requests
from moto.server import ThreadedMotoServer

from fake_databricks import FakeDatabricks
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import GRANTS, LINEAGE_WRITERS, external_access_grants
from governed_ft_dagster.provision.catalog import DATABRICKS_LOCATION_GRANTS, LINEAGE_PRIVILEGE
from governed_ft_dagster.resources.catalog import DatabricksCatalogResource

BUCKET = "governed-lake"
REGION = "us-east-1"
CATALOG = "governed_ft"


@dataclass
class AwsWorld:
    """A moto server with the governed bucket and principals' secrets, and a fake workspace with the grants."""

    moto_url: str
    databricks: FakeDatabricks

    def boto(self, service: str):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def catalog_resource(self, **overrides) -> DatabricksCatalogResource:
        return DatabricksCatalogResource(**{
            "catalog": CATALOG, "host": self.databricks.url, "region": REGION, "storage_root": f"s3://{BUCKET}",
            "storage_region": REGION, "s3_endpoint_url": self.moto_url, "aws_endpoint_url": self.moto_url,
            "application_ids": {p.value: application_id(p) for p in Principal}, **overrides,
        })


def application_id(principal: Principal) -> str:
    return f"00000000-0000-4000-8000-{principal.value:0>12}"[:36]


def secret_value(principal: Principal) -> str:
    return f"dose-planted-secret-{principal.value}-5f1c"


def start_world(monkeypatch, moto_port: int) -> tuple[AwsWorld, ThreadedMotoServer]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    server.start()
    requests.post(f"http://127.0.0.1:{moto_port}/moto-api/reset", timeout=10).raise_for_status()
    fake = FakeDatabricks().start()
    world = AwsWorld(f"http://127.0.0.1:{moto_port}", fake)
    world.boto("s3").create_bucket(Bucket=BUCKET)
    secrets = world.boto("secretsmanager")
    for principal in Principal:
        fake.add_service_principal(application_id(principal), secret_value(principal))
        secrets.create_secret(Name=f"governed-ft/{principal.value}", SecretString=json.dumps(
            {"client_id": application_id(principal), "client_secret": secret_value(principal)}))
    for prefix, grants in DATABRICKS_LOCATION_GRANTS.items():
        fake.add_external_location(f"governed_{prefix}", f"s3://{BUCKET}/{prefix}")
        for principal, privileges in grants.items():
            fake.grant("external_location", f"governed_{prefix}", application_id(principal), *privileges)
    for principal in LINEAGE_WRITERS:
        fake.grant("metastore", fake.metastore_id, application_id(principal), LINEAGE_PRIVILEGE)
    for grant in (*GRANTS, *external_access_grants()):
        if grant.securable_type != "table":
            fake.grant(grant.securable_type, grant.full_name(CATALOG), application_id(grant.principal),
                       grant.privilege.sdk_name)
    return world, server


def start_registry_world(monkeypatch, moto_port: int):
    """start_world plus the MLflow Unity Catalog registry and the lineage APIs; also returns their states."""
    from fake_lineage import FakeLineageService
    from fake_mlflow_uc import install

    world, server = start_world(monkeypatch, moto_port)
    registry = install(world.databricks, storage_root=f"s3://{BUCKET}/ml/models", moto_url=world.moto_url)
    service = FakeLineageService(page_size=50)
    service.install(world.databricks)
    world.databricks.add_route("GET", r"/api/2\.1/unity-catalog/models/(?P<full_name>[^/]+)/versions",
                               lambda fake, request, full_name: (200, {"model_versions": [
                                   {"catalog_name": CATALOG, "model_name": full_name, "version": int(v)}
                                   for v in registry.versions.get(full_name, {})]}))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", world.moto_url)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return world, server, registry, service
