"""The code location loads in both deployments, as `dagster dev` loads it from workspace.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("deployment", ["local", "aws"])
def test_workspace_validates(deployment, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GOVERNED_FT_DEPLOYMENT": deployment,
           "GOVERNED_FT_HOME": str(tmp_path / "state")}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location governed_ft_dagster.definitions" in proc.stderr + proc.stdout
