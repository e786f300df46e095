"""The code location as Dagster's current tools serve it: `dg dev` from the repository root (the project's
[tool.dg] configuration), and `dagster-webserver` with `workspace.yaml`, as a deployment runs it; neither warns
that a command is superseded."""

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


def served(command: list[str], tmp_path: Path, port: int) -> tuple[dict, str]:
    """What the command serves over GraphQL once it answers, and what it printed; it is stopped again."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GOVERNED_FT_HOME": str(tmp_path / "state")}
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe nobody reads would block the server
    with log.open("wb") as sink:
        process = subprocess.Popen(with_default_signals(command), cwd=REPO, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"{command[0]} did not answer GraphQL within 180 s"
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                body = reply.json()
                if reply.ok and body.get("data", {}).get("assetNodes"):
                    return body["data"], log.read_text(errors="replace")
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
    finally:
        end_group(process, grace_s=30)  # the server may ignore SIGTERM for minutes on a loaded machine


def test_dg_dev_lists_assets_checks_schedules_and_sensors(tmp_path):
    port = free_port()
    data, printed = served([str(Path(sys.executable).with_name("dg")), "dev", "-h", "127.0.0.1", "-p", str(port)],
                           tmp_path, port)
    assert "superseded" not in printed.lower(), printed[-3000:]
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


def test_workspace_yaml_serves_the_same_code_location_to_dagster_webserver(tmp_path):
    port = free_port()
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    data, printed = served([webserver, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], tmp_path, port)
    assert "superseded" not in printed.lower(), printed[-3000:]
    assert {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]} >= {
        "raw_risk_factors", "curated_training_table", "finetuned_lora_model", "uc_model_version"}
    [repository] = data["repositoriesOrError"]["nodes"]
    assert {"new_filings_sensor", "curation_automation", "retraining_automation"} <= {
        s["name"] for s in repository["sensors"]}
