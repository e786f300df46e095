"""The driver's credential endpoint: what it serves to S3A in the job's JVMs, to whom, and when it vends again."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from governed_ft_dagster.catalog.base import CatalogPermissionError, RenewingCredentials, VendedCredentials
from governed_ft_dagster.catalog.endpoint import CredentialEndpoint

LOCATION = "s3://governed-lake/raw/tables/risk_factors"


class Catalog:
    """Vends credentials that end after the given lifetimes (or at a given instant), one after the other; refuses once
    they run out."""

    def __init__(self, *ends: float | dt.datetime):
        self.ends, self.vended = list(ends), 0

    def vend(self) -> VendedCredentials:
        if not self.ends:
            raise CatalogPermissionError("preprocess", "table governed_ft.raw.risk_factors", "SELECT")
        end, self.vended = self.ends.pop(0), self.vended + 1
        if not isinstance(end, dt.datetime):
            end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=end)
        return VendedCredentials(LOCATION, "READ", end, f"ASIA{self.vended}", f"secret-{self.vended}",
                                 f"token-{self.vended}")


@pytest.fixture
def endpoint():
    with CredentialEndpoint() as served:
        yield served


def test_it_serves_the_container_credentials_format_only_to_its_token_holders(endpoint):
    catalog = Catalog(dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc))
    scope = endpoint.serve(RenewingCredentials(catalog.vend))

    answer = requests.get(scope.url, headers={"Authorization": scope.token}, timeout=10)

    assert answer.status_code == 200 and answer.json() == {
        "AccessKeyId": "ASIA1", "SecretAccessKey": "secret-1", "Token": "token-1",
        "Expiration": "2030-01-02T03:04:05.678Z"}
    assert scope.url.startswith("http://127.0.0.1:") and scope.token not in scope.url and scope.token not in repr(scope)
    assert requests.get(scope.url, timeout=10).status_code == 401
    assert requests.get(scope.url, headers={"Authorization": scope.token[:-1]}, timeout=10).status_code == 401
    other = requests.get(scope.url + "x", headers={"Authorization": scope.token}, timeout=10)
    assert other.status_code == 404 and "secret-1" not in other.text
    assert requests.get(scope.url, headers={"Authorization": scope.token}, timeout=10).json()["AccessKeyId"] == "ASIA1"
    assert catalog.vended == 1  # far from their end: served as held


def test_it_vends_again_within_the_renewal_window_and_reports_a_refusal_in_one_sentence(endpoint):
    catalog = Catalog(5, 600)  # then the catalog refuses
    renewing = RenewingCredentials(catalog.vend)
    scope = endpoint.serve(renewing)

    def get() -> requests.Response:
        return requests.get(scope.url, headers={"Authorization": scope.token}, timeout=10)

    assert get().json()["AccessKeyId"] == "ASIA2"  # 5 s left: vended again before they were served
    refused = get()  # 600 s left, within the 15-minute window: the catalog is asked again and refuses

    assert refused.status_code == 503 and refused.json()["Code"] == "VendFailed"
    assert refused.json()["Message"].startswith("CatalogPermissionError: principal 'preprocess' lacks SELECT on table "
                                                "governed_ft.raw.risk_factors")
    assert "secret-" not in refused.text and renewing.vends == 2
    assert [type(f) for f in endpoint.failures] == [CatalogPermissionError]
