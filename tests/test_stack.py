"""The local stack's commands: fetching jars, status, and one clear sentence for each failure."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from governed_ft_dagster.stack import jars, versions
from governed_ft_dagster.stack.errors import StackError


def cli(args: list[str], env: dict[str, str], path: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    if path is not None:
        full_env["PATH"] = path
        full_env.pop("JAVA_HOME", None)
    return subprocess.run([sys.executable, "-m", "governed_ft_dagster.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=600)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


def test_spark_jars_are_fetched_into_the_state_folder_and_listed(stack_env):
    home = Path(stack_env["GOVERNED_FT_HOME"])
    status = jars.fetch_group(home, "spark")
    assert status.complete
    expected = {a.jar_name for a in versions.JAR_GROUPS["spark"]}
    assert expected <= set(status.jars)
    again = jars.fetch_group(home, "spark")
    assert again.jars == status.jars
    report = json.loads(cli(["stack", "status", "--json"], stack_env).stdout)
    assert report["jars"]["spark"]["complete"] is True
    assert report["jars"]["spark"]["jar_count"] == len(status.jars)
    assert report["catalog_server"]["running"] is False


def test_an_artifact_maven_cannot_fetch_is_named_with_the_fix(tmp_path, monkeypatch):
    missing = versions.Artifact("io.governed-ft.absent", "no-such-artifact", "0.0.1")
    monkeypatch.setitem(versions.JAR_GROUPS, "absent", (missing,))
    with pytest.raises(StackError) as caught:
        jars.fetch_group(tmp_path, "absent")
    message = str(caught.value)
    assert "io.governed-ft.absent:no-such-artifact" in message
    assert "GOVERNED_FT_JAR_MIRROR" in message
    assert not (tmp_path / "jars" / "absent").exists()


def test_a_taken_port_is_one_sentence_naming_the_setting(stack_env):
    port = int(stack_env["GOVERNED_FT_UC_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = cli(["stack", "up"], stack_env)
    assert result.returncode == 1
    line = one_sentence(result.stderr)
    assert f"port {port}" in line and "GOVERNED_FT_UC_PORT" in line


def test_missing_java_is_one_sentence_naming_the_fix(stack_env, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    result = cli(["stack", "up"], stack_env, path=str(bare))
    assert result.returncode == 1
    assert "Java 17" in one_sentence(result.stderr)


def test_missing_maven_is_one_sentence_naming_the_fix(stack_env, tmp_path):
    java = shutil.which("java")
    assert java, "the test machine has Java"
    only_java = tmp_path / "bin"
    only_java.mkdir()
    (only_java / "java").symlink_to(Path(java).resolve())
    result = cli(["stack", "fetch"], stack_env, path=str(only_java))
    assert result.returncode == 1
    assert "Maven (mvn) is not on PATH" in one_sentence(result.stderr)


def test_down_and_status_are_safe_when_nothing_runs(stack_env):
    for _ in range(2):
        result = cli(["stack", "down"], stack_env)
        assert result.returncode == 0
        assert "not running" in result.stdout
    status = cli(["stack", "status"], stack_env)
    assert status.returncode == 0
    assert "catalog server: stopped" in status.stdout


def test_mlflow_store_lives_in_the_state_folder_and_is_created_once(local_stack):
    import mlflow

    first = local_stack.init_mlflow()
    second = local_stack.init_mlflow()
    assert first == second
    assert (local_stack.mlflow_dir / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=local_stack.mlflow_tracking_uri)
    experiment = client.get_experiment(first)
    assert experiment.artifact_location.startswith(local_stack.mlflow_dir.as_uri())
    assert local_stack.status()["mlflow"]["present"] is True


def test_a_jar_mirror_folder_installs_a_group_without_maven(tmp_path):
    mirror = tmp_path / "mirror" / "spark"
    mirror.mkdir(parents=True)
    (mirror / "delta-spark_2.12-3.2.0.jar").write_bytes(b"PK\x03\x04 not a real jar")
    status = jars.fetch_group(tmp_path / "home", "spark", mvn="/nonexistent/mvn", mirror=tmp_path / "mirror")
    assert status.complete and status.jars == ("delta-spark_2.12-3.2.0.jar",)


def test_run_without_a_catalog_fails_in_one_line_before_any_job(stack_env, tmp_path):
    result = cli(["run", "--partition", "2024|10-K"], {**stack_env, "DAGSTER_HOME": str(tmp_path / "dagster")})
    assert result.returncode == 1
    *_, line, log_line = result.stderr.strip().splitlines()
    assert line.startswith("error: raw_risk_factors: ") and "run `governed-ft bootstrap`" in line
    assert log_line.startswith("full log: ") and Path(log_line.removeprefix("full log: ")).is_file()
    assert not (Path(stack_env["GOVERNED_FT_HOME"]) / "warehouse" / "raw").exists()
