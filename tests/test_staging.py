"""`governed-ft aws stage`: every artifact built, hashed and addressed by content; a dry run uploads nothing."""

from __future__ import annotations

import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from conftest import free_port
from governed_ft_dagster.cli import main
from governed_ft_dagster.job_code import PY_FILES_SUFFIX, TRAIN_SCRIPT, project_wheel
from governed_ft_dagster.provision import staging

CODE_PREFIX = "s3://governed-ft-code/code/"


@pytest.fixture
def moto_url(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto keeps one state per process, whichever server a test started.
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    requests.put(f"{url}/governed-ft-code", timeout=10).raise_for_status()
    yield url
    server.stop()


def run_stage(moto_url: str, tokenizer: Path, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["aws", "stage", "--region", "us-east-1", "--code-prefix", CODE_PREFIX,
                                       "--tokenizer-dir", str(tokenizer), "--endpoint-url", moto_url, "--json", *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dry_run_lists_every_artifact_and_the_exact_job_parameters_and_uploads_nothing(moto_url, spark_home, tmp_path,
                                                                                     monkeypatch, build_cache):
    monkeypatch.setenv("GOVERNED_FT_HOME", str(spark_home))
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text('{"model": {}}')

    plan = run_stage(moto_url, tokenizer, "--dry-run", "--cache-dir", str(build_cache))

    assert plan["dry_run"] is True
    assert {a["kind"]: a["action"] for a in plan["artifacts"]} == {
        kind: "upload" for kind in (staging.KIND_WHEEL, staging.KIND_SCRIPT, staging.KIND_ENV, staging.KIND_TOKENIZER,
                                    staging.KIND_SOURCE, staging.KIND_SAGEMAKER_ENV, staging.KIND_JAR)}
    for artifact in plan["artifacts"]:
        assert re.fullmatch(r"[0-9a-f]{64}", artifact["sha256"])
        key = artifact.get("content_key") or artifact["sha256"]
        assert artifact["uri"] == staging.code_uri(CODE_PREFIX, artifact["kind"], key, artifact["name"])
    listed = requests.get(f"{moto_url}/governed-ft-code?list-type=2", timeout=10).text
    assert "<Key>" not in listed
    emr = plan["job_parameters"]["emr_serverless_start_job_run"]
    referenced = re.findall(r"s3://[^,#\s]+", emr["sparkSubmitParameters"] + " " + emr["entryPoint"])
    assert sorted(referenced) == sorted(a["uri"] for a in plan["artifacts"]
                                        if a["kind"] not in (staging.KIND_SOURCE, staging.KIND_SAGEMAKER_ENV))
    assert "--packages" not in emr["sparkSubmitParameters"]
    assert not re.search(r"(?i)secret|password|\.token=|index-url|huggingface", emr["sparkSubmitParameters"])
    sagemaker = plan["job_parameters"]["sagemaker_create_training_job"]
    [source] = [a for a in plan["artifacts"] if a["kind"] == staging.KIND_SOURCE]
    assert json.loads(sagemaker["HyperParameters"]["sagemaker_submit_directory"]) == source["uri"]
    assert json.loads(sagemaker["HyperParameters"]["sagemaker_program"]) == f"job_scripts/{TRAIN_SCRIPT}"
    [env] = [a for a in plan["artifacts"] if a["kind"] == staging.KIND_SAGEMAKER_ENV]
    assert sagemaker["InputDataConfig"] == [{
        "ChannelName": "environment", "InputMode": "File", "CompressionType": "None",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": env["uri"].removesuffix("environment.tar.gz"),
                                        "S3DataDistributionType": "FullyReplicated"}}}]


def test_the_packed_environment_links_the_pinned_interpreter_and_holds_no_pyspark(tmp_path):
    archive = staging.build_emr_env(Path(os.environ.get("GOVERNED_FT_BUILD_CACHE", "~/.cache/governed-ft")).expanduser())
    with tarfile.open(archive) as packed:
        python = packed.getmember("bin/python3.11")
        names = packed.getnames()
    assert python.issym() and python.linkname == f"{staging.EMR_PYTHON_PREFIX}/bin/python{staging.EMR_PYTHON_VERSION}"
    assert any(n.startswith("lib/python3.11/site-packages/transformers/") for n in names)
    assert not any(n.startswith("lib/python3.11/site-packages/pyspark/") for n in names)
    pins = [line for line in staging.requirements_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+\-]*", line) for line in pins)


def test_the_training_environment_is_the_lock_for_the_containers_python_without_its_torch(build_cache):
    archive = staging.build_sagemaker_env(build_cache)
    with tarfile.open(archive) as packed:
        names = packed.getnames()
    tops = {name.split("/")[0] for name in names}
    assert {"transformers", "peft", "accelerate", "tokenizers", "deltalake", "pyarrow", "databricks", "dagster_pipes",
            "jinja2", "boto3"} <= tops
    # The container's: torch, its CUDA libraries and its compiler stack.
    assert not tops & {"torch", "triton", "nvidia", "sympy", "functorch", "torchgen"}
    # Built for CPython 3.12 on glibc <= 2.35 (Ubuntu 22.04): every compiled module says so.
    compiled = [n for n in names if n.endswith(".so")]
    assert any(".cpython-312-x86_64-linux-gnu.so" in n for n in compiled)
    assert not any(re.search(r"cpython-3(?!12)\d+-", n) for n in compiled)
    assert staging.build_sagemaker_env(build_cache) == archive  # once per recipe
    pins = [line for line in staging.requirements_text(staging.SAGEMAKER_REQUIREMENTS_FILE).splitlines()
            if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+\-]*", line) for line in pins)
    assert not [p for p in pins if p.lower().startswith(("torch==", "nvidia-", "triton=="))]


def test_the_project_wheel_is_byte_for_byte_reproducible(tmp_path):
    first, second = project_wheel(tmp_path / "a", PY_FILES_SUFFIX), project_wheel(tmp_path / "b", PY_FILES_SUFFIX)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        names = wheel.namelist()
    assert "job_scripts/preprocess_risk_factors.py" in names and "governed_ft_dagster/preprocess/text.py" in names
    assert "requirements.txt" not in names and not any("__pycache__" in n for n in names)


def test_stage_model_copies_a_local_folder_once_with_its_identity_and_a_marker_outside_the_channel(moto_url, tmp_path):
    from governed_ft_dagster.training.base_model import STAGED_MARKER

    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "ministral3"}')
    (folder / "sub" / "model.safetensors").write_bytes(b"weights")
    revision = "0123456789abcdef0123456789abcdef01234567"
    args = ["aws", "stage-model", "--region", "us-east-1", "--code-prefix", CODE_PREFIX, "--endpoint-url", moto_url,
            "--model-id", "org/tiny", "--revision", revision, "--from-dir", str(folder), "--json"]

    first = json.loads(CliRunner().invoke(main, args, catch_exceptions=False).stdout)
    again = json.loads(CliRunner().invoke(main, args, catch_exceptions=False).stdout)

    prefix = f"code/models/org/tiny/{revision}/"
    assert first["action"] == "uploaded" and again["action"] == "present" and first["sha256"] == again["sha256"]
    assert first["uri"] == f"s3://governed-ft-code/{prefix}"
    assert first["channel"]["DataSource"]["S3DataSource"]["S3Uri"] == first["uri"]
    listed = requests.get(f"{moto_url}/governed-ft-code?list-type=2", timeout=10).text
    keys = sorted(re.findall(r"<Key>([^<]+)</Key>", listed))
    assert keys == [f"code/models/org/tiny/{revision}.complete", f"{prefix}config.json", f"{prefix}{STAGED_MARKER}",
                    f"{prefix}sub/model.safetensors"]
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
    marker = json.loads(s3.get_object(Bucket="governed-ft-code", Key=f"{prefix}{STAGED_MARKER}")["Body"].read())
    assert marker == {"id": "org/tiny", "revision": revision}

    moved = CliRunner().invoke(main, [*args[:-5], "--revision", "main", "--from-dir", str(folder)])
    assert moved.exit_code == 1 and "a branch moves" in moved.output


def test_staging_only_the_training_job_needs_no_tokenizer_and_names_the_staged_model(moto_url, tmp_path, build_cache):
    base = ["aws", "stage", "--region", "us-east-1", "--code-prefix", CODE_PREFIX, "--endpoint-url", moto_url,
            "--only", "sagemaker", "--model-id", "org/tiny", "--json", "--cache-dir", str(build_cache)]
    revision = "0123456789abcdef0123456789abcdef01234567"
    missing = CliRunner().invoke(main, [*base, "--model-revision", revision])
    assert missing.exit_code == 1
    assert f"org/tiny@{revision} is not staged" in missing.output and "governed-ft aws stage-model" in missing.output

    plan = json.loads(CliRunner().invoke(main, [*base, "--dry-run"], catch_exceptions=False).stdout)
    assert [a["kind"] for a in plan["artifacts"]] == [staging.KIND_SOURCE, staging.KIND_SAGEMAKER_ENV]
    assert list(plan["job_parameters"]) == ["sagemaker_create_training_job"]
    assert [c["ChannelName"] for c in plan["job_parameters"]["sagemaker_create_training_job"]["InputDataConfig"]] == [
        "environment"]
