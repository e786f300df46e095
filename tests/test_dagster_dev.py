"""`dagster dev` from the repository root serves the code location over GraphQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import REPO, free_port
from governed_ft_dagster.processes import end_group, with_default_signals

QUERY = """
{
  assetNodes { assetKey { path } groupName kinds owners { ... on TeamAssetOwner { team } } description
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { name schedules { name cronSchedule } sensors { name } } } }
}
"""


def test_dagster_dev_lists_assets_checks_schedules_and_sensors(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GOVERNED_FT_HOME": str(tmp_path / "state")}
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "dagster-dev.log"  # a file, not a pipe: a full pipe nobody reads would block dagster dev
    with log.open("wb") as sink:
        process = subprocess.Popen(with_default_signals([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)]),
                                   cwd=REPO, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        data = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and data is None:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                body = reply.json()
                if reply.ok and body.get("data", {}).get("assetNodes"):
                    data = body["data"]
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        assert data is not None, "dagster dev did not answer GraphQL within 180 s"
    finally:
        end_group(process, grace_s=30)  # dagster dev may ignore SIGTERM for minutes on a loaded machine
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(nodes) >= {"raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version"}
    for node in nodes.values():
        assert node["groupName"] and node["kinds"] and node["description"]
        assert {"team": "governed-ft"} in node["owners"]
    checks = {c["name"]: c for n in nodes.values() for c in n["assetChecksOrError"]["checks"]}
    assert {"raw_accessions_unique", "raw_located_share", "raw_text_lengths", "curated_token_budget",
            "curated_split_by_company", "adapter_beats_base_model"} <= set(checks)
    assert checks["adapter_beats_base_model"]["blocking"] is True
    [repository] = data["repositoriesOrError"]["nodes"]
    assert "edgar_refresh_schedule" in {s["name"] for s in repository["schedules"]}
    assert {"new_filings_sensor"} <= {s["name"] for s in repository["sensors"]}
