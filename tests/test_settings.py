"""The deployment switch and the state folder are read in one place."""

import pytest

from governed_ft_dagster.resources import build_resources
from governed_ft_dagster.resources.catalog import DatabricksCatalogResource, LocalCatalogResource
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
