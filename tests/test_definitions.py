"""The code location loads in both deployments (`dg check defs`) and lists what it defines (`dg list defs`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(deployment: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(tmp_path), "GOVERNED_FT_DEPLOYMENT": deployment,
            "GOVERNED_FT_HOME": str(tmp_path / "state")}


@pytest.mark.parametrize("deployment", ["local", "aws"])
def test_dg_check_defs_loads_the_code_location(deployment, tmp_path):
    dg = Path(sys.executable).with_name("dg")
    proc = subprocess.run([str(dg), "check", "defs"], cwd=REPO, env=_env(deployment, tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert "All definitions loaded successfully." in proc.stdout + proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_dg_list_defs_names_the_assets_checks_schedule_and_sensors(tmp_path):
    dg = Path(sys.executable).with_name("dg")
    proc = subprocess.run([str(dg), "list", "defs", "--json"], cwd=REPO, env=_env("local", tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    listed = json.loads(proc.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {
        "raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version", "raw_table_version"}
    assert {"raw_risk_factors:raw_accessions_unique", "curated_training_table:curated_token_budget",
            "finetuned_lora_model:adapter_beats_base_model"} <= {c["key"] for c in listed["asset_checks"]}
    assert [s["name"] for s in listed["schedules"]] == ["edgar_refresh_schedule"]
    assert {"new_filings_sensor", "curation_automation", "retraining_automation"} == {
        s["name"] for s in listed["sensors"]}
    assert {r["name"] for r in listed["resources"]} >= {"catalog", "spark", "training", "registry", "lineage"}

