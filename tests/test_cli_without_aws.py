"""Every `aws` and `catalog` command, tried as a new user would: without AWS credentials, against an endpoint that does
not answer, or in a region it cannot use, each ends in one line naming the cause and the fix, never a traceback. A dry
run of staging still builds and hashes everything offline and says it could not compare with the bucket."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from governed_ft_dagster.cli import main
from governed_ft_dagster.provision import staging

REVISION = "0123456789abcdef0123456789abcdef01234567"
NO_CREDENTIALS = "error: no AWS credentials found; set AWS_PROFILE (after `aws configure` or `aws sso login`) or " \
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then retry"
COMMANDS = {
    "aws plan --against-account": ["aws", "plan", "--against-account"],
    "aws apply": ["aws", "apply"],
    "aws destroy": ["aws", "destroy", "--yes"],
    "aws stage": ["aws", "stage", "--only", "sagemaker"],
    "aws stage-model": ["aws", "stage-model", "--revision", REVISION, "--from-dir", "{model}"],
    "catalog plan": ["catalog", "plan"],
    "catalog apply": ["catalog", "apply"],
    "catalog destroy": ["catalog", "destroy", "--yes"],
}


def dead_endpoint() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def bare(tmp_path, build_cache) -> dict[str, str | None]:
    """An environment with no AWS credentials anywhere (no variables, empty config files, no instance metadata)."""
    (tmp_path / "empty").write_text("")
    env: dict[str, str | None] = {key: None for key in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL", "GOVERNED_FT_CODE_PREFIX",
        "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "empty"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "empty"),
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1", "GOVERNED_FT_STACK": "gft",
                "GOVERNED_FT_AWS_ENDPOINT_URL": dead_endpoint(), "GOVERNED_FT_BUILD_CACHE": str(build_cache),
                "DATABRICKS_HOST": dead_endpoint(), "DATABRICKS_CONFIG_FILE": str(tmp_path / "empty")})
    return env


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "ministral3"}')
    return folder


def invoke(args: list[str], env: dict[str, str | None], model: Path):
    return CliRunner().invoke(main, [a.replace("{model}", str(model)) for a in args], env=env)


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_without_credentials_each_command_says_so_in_one_line(bare, model, command):
    assert one_line(invoke(COMMANDS[command], bare, model)) == NO_CREDENTIALS


@pytest.mark.parametrize("command", ["aws apply", "aws stage"])
def test_an_endpoint_that_does_not_answer_is_named_in_one_line(bare, model, command):
    env = {**bare, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE01", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"}
    said = one_line(invoke(COMMANDS[command], env, model))
    assert said == (f"error: AWS endpoint {env['GOVERNED_FT_AWS_ENDPOINT_URL']}/ is unreachable; check --region and "
                    "network access"), said


@pytest.mark.parametrize("command", ["aws apply", "aws stage", "aws stage-model", "catalog plan"])
def test_a_region_without_the_stack_s_services_is_refused_before_any_call(bare, model, command):
    said = one_line(invoke([*COMMANDS[command], "--region", "us-east-9"], bare, model))
    assert said.startswith("error: EMR Serverless is not available in region 'us-east-9'; pick one of ")
    assert said.endswith(" with --region")


def test_a_dry_run_without_credentials_builds_and_hashes_everything_and_says_it_could_not_compare(bare, model):
    result = invoke(["aws", "stage", "--only", "sagemaker", "--dry-run", "--json"], bare, model)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["compared_with_bucket"] is False
    assert plan["not_compared_because"] == NO_CREDENTIALS.removeprefix("error: ")
    assert plan["code_prefix"] == "s3://gft-code-<account-id>-us-east-1/code/"
    assert [(a["kind"], a["action"]) for a in plan["artifacts"]] == [
        (staging.KIND_SOURCE, "not-compared"), (staging.KIND_SAGEMAKER_ENV, "not-compared")]
    assert all(len(a["sha256"]) == 64 and a["uri"].startswith(plan["code_prefix"]) for a in plan["artifacts"])
    human = invoke(["aws", "stage", "--only", "sagemaker", "--dry-run"], bare, model)
    assert human.exit_code == 0 and human.stdout.splitlines()[-1] == (
        "summary: 2 built and hashed; not compared with the bucket because " + NO_CREDENTIALS.removeprefix("error: "))
    staged_model = invoke(["aws", "stage-model", "--revision", REVISION, "--from-dir", str(model), "--dry-run",
                           "--json"], bare, model)
    assert staged_model.exit_code == 0, staged_model.output
    assert json.loads(staged_model.stdout)["action"] == "not-compared"
