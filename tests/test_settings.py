"""The deployment switch and the state folder are read in one place."""

import pytest

from governed_ft_dagster.defs.resources import build_resources
from governed_ft_dagster.defs.resources.catalog import DatabricksCatalogResource, LocalCatalogResource
from governed_ft_dagster.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_local_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.deployment == "local"
    assert settings.home == (tmp_path / ".governed_ft").resolve()
    assert settings.uc_url == "http://127.0.0.1:8080"


def test_state_folder_is_overridable(tmp_path):
    assert load_settings({"GOVERNED_FT_HOME": str(tmp_path / "x")}).home == tmp_path / "x"


@pytest.mark.parametrize("value", ["gcp", "", "LOCALX"])
def test_unknown_deployment_is_refused_with_the_fix(value):
    with pytest.raises(SettingsError, match="set it to 'local' or 'aws'"):
        load_settings({"GOVERNED_FT_DEPLOYMENT": value})


def test_bad_port_is_refused():
    with pytest.raises(SettingsError, match="not a port number"):
        load_settings({"GOVERNED_FT_UC_PORT": "http"})


def test_switch_picks_one_resource_map():
    local = build_resources(load_settings({"GOVERNED_FT_DEPLOYMENT": "local"}))
    aws = build_resources(load_settings({"GOVERNED_FT_DEPLOYMENT": "AWS"}))
    assert set(local) == set(aws)
    assert isinstance(local["catalog"], LocalCatalogResource)
    assert isinstance(aws["catalog"], DatabricksCatalogResource)


def test_a_non_default_stack_name_reaches_provisioning_and_the_resources_alike():
    import json
    import subprocess
    import sys
    from pathlib import Path

    settings = load_settings({"GOVERNED_FT_DEPLOYMENT": "aws", "GOVERNED_FT_STACK": "acme-ft"})
    resources = build_resources(settings)
    plan = subprocess.run([str(Path(sys.executable).with_name("governed-ft")), "aws", "plan", "--json"],
                          env={"PATH": "/usr/bin:/bin", "GOVERNED_FT_STACK": "acme-ft", "AWS_REGION": "us-east-1"},
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    planned = {(r["kind"], r["name"]) for r in json.loads(plan.stdout)["resources"]}
    application = resources["spark"].application_name
    assert application == "acme-ft-preprocess" and ("emr-serverless-application", application) in planned
    secrets = {name for kind, name in planned if kind == "secret"}
    prefix = resources["catalog"].secret_prefix
    assert prefix == "acme-ft/" and {f"{prefix}{p}" for p in ("ingest", "preprocess", "train", "registrar")} == secrets
    assert resources["registry"].secret_id == resources["lineage"].secret_id == "acme-ft/registrar"


def test_a_stack_name_that_cannot_name_aws_resources_is_refused():
    with pytest.raises(SettingsError, match="GOVERNED_FT_STACK"):
        load_settings({"GOVERNED_FT_STACK": "Acme_FT"})
