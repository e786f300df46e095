"""The README's main command on the embedded default: stack up, bootstrap and run against the real catalog server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import link_group
from governed_ft_dagster.catalog.base import Principal
from governed_ft_dagster.governance import CURATED_TABLE, MODEL_NAME, RAW_TABLE
from governed_ft_dagster.stack.bootstrap import read_token
from governed_ft_dagster.stack.server import ServerPaths

CLI = Path(sys.executable).with_name("governed-ft")


def governed_ft(*args: str, env: dict[str, str], timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def scan_state_folder(home: Path, secrets: list[str]) -> list[str]:
    """Files of the state folder holding any secret, apart from where the tokens are meant to live."""
    kept = {home / "tokens", ServerPaths.under(home).conf, home / "jars"}
    leaks, scanned = [], 0
    for path in home.rglob("*"):
        if not path.is_file() or any(k in path.parents for k in kept) or path.stat().st_size > 50_000_000:
            continue
        scanned += 1
        text = path.read_bytes().decode("latin-1")
        leaks += [f"{path.relative_to(home)}: {secret[:12]}" for secret in secrets if secret in text]
    assert scanned > 50  # the Dagster and MLflow stores, lineage, job logs, landing JSON and Delta files
    return leaks


def test_stack_up_bootstrap_and_run_register_a_model_version_with_its_lineage(local_stack, uc_server_jars,
                                                                             spark_home, stack_env):
    link_group(local_stack.home, uc_server_jars, "uc-server")
    link_group(local_stack.home, spark_home, "spark")
    env = {**os.environ, **stack_env}
    env.pop("DAGSTER_HOME", None)
    catalog = local_stack.settings.catalog_name
    model = f"{catalog}.{MODEL_NAME}"
    try:
        for command in (("stack", "up"), ("bootstrap",), ("run",)):
            done = governed_ft(*command, env=env)
            assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
        assert f"registered {model} version 1" in done.stdout

        shown = governed_ft("lineage", model, "--version", "1", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        chain = json.loads(shown.stdout)
        assert chain["raw_table"]["full_name"] == f"{catalog}.{RAW_TABLE}"
        assert chain["curated_table"]["full_name"] == f"{catalog}.{CURATED_TABLE}"
        assert chain["training_run"] and chain["preprocessing_run"]

        again = governed_ft("run", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"registered {model} version 1" in again.stdout  # unchanged inputs: no new version
        tokens = [read_token(local_stack.home, p) for p in Principal]
        admin = ServerPaths.under(local_stack.home).admin_token_file
        tokens += [admin.read_text().strip()] if admin.exists() else []
        for output in (done.stdout + done.stderr, again.stdout + again.stderr, shown.stdout):
            assert not [t for t in tokens if t in output]
        leaks = scan_state_folder(local_stack.home, tokens)
        assert not leaks, leaks[:10]
    finally:
        governed_ft("stack", "down", env=env, timeout_s=120)
