"""Registering the LoRA adapter as a UC model version through MLflow: fake workspace registry + moto S3."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from aws_fixtures import BUCKET, CATALOG, application_id, secret_value, start_registry_world
from conftest import free_port, tiny_lora_adapter
from fake_mlflow_uc import PREFIX
from governed_ft_dagster.catalog.base import CatalogError, CatalogPermissionError, Principal
from governed_ft_dagster.governance import CURATED_TABLE, PRODUCTION_MODEL_NAME, RAW_TABLE
from governed_ft_dagster.registry import (
    TAG_ARTIFACT_SHA256,
    TAG_HYPERPARAMETERS_SHA256,
    TAG_MLFLOW_RUN,
    ModelOwnershipError,
    RegistryUnavailableError,
    artifact_sha256,
    chat_messages,
    governance_tags,
    hyperparameters_sha256,
    register_adapter,
    registry_env_for_databricks,
    registry_env_for_oss,
    scoped_env,
)

MODEL = f"{CATALOG}.{PRODUCTION_MODEL_NAME}"
EXPERIMENT = "/Shared/governed-ft"
STORAGE_ROOT = f"s3://{BUCKET}/ml/models"
PLANTED = "dose-planted-hyperparameter-secret-77aa"
HYPERPARAMETERS = {"lora_r": 4, "learning_rate": 2e-4, "epochs": 1, "max_tokens": 1024, "hf_token": PLANTED}
CORPUS = [
    "Risk factors: our business depends on suppliers, interest rates and cybersecurity incidents.",
    "We may be unable to protect our intellectual property, and litigation could harm our results.",
    "Changes in tax law, currency exchange rates and regulation may adversely affect our operations.",
] * 20


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Ministral3 base and a randomly initialised LoRA adapter over the production module names."""
    return tiny_lora_adapter(tmp_path_factory.mktemp("adapter"), CORPUS, seed=1, name="adapter")


@pytest.fixture
def world(monkeypatch, mlflow_server):
    """The fake workspace with the MLflow registry (MLflow uploads version files with temporary credentials) and
    MLflow tracking forwarded to the session's MLflow server."""
    world, server, registry, _ = start_registry_world(monkeypatch, free_port(), tracking_url=mlflow_server.url)
    yield world, registry
    world.databricks.stop()
    server.stop()


def register(world, adapter, tmp_path, principal: Principal = Principal.REGISTRAR):
    base, adapter_dir = adapter
    tags = {
        **governance_tags(
            source_tables={f"{CATALOG}.{RAW_TABLE}": 3, f"{CATALOG}.{CURATED_TABLE}": 7},
            preprocessing_job="emr-serverless:00fabc123/jr-0042",
            training_job="arn:aws:sagemaker:us-east-1:123456789012:training-job/governed-ft-0042",
            code_version="git:4f1c2e9",
            hyperparameters=HYPERPARAMETERS,
        ),
        "governed_ft.client_secret": secret_value(principal),
    }
    with registry_env_for_databricks(world.databricks.url, application_id(principal), secret_value(principal)):
        return register_adapter(
            registry_uri="databricks-uc", tracking_uri="databricks", model_full_name=MODEL, adapter_dir=adapter_dir,
            base_model_ref=str(base), description="LoRA adapter for SEC risk-factor instructions", tags=tags,
            experiment=EXPERIMENT, env=None, hyperparameters=HYPERPARAMETERS,
        )


def assert_tracked_through_the_workspace(fake, registered, server) -> None:
    """The registration run went through the workspace's MLflow routes, as the registrar, into the real server; the
    logged model's files through the Files API into the workspace's root bucket; nothing asked of a route not served."""
    assert fake.unserved == []
    model_id = registered.source.split("/logged_models/")[1].split("/")[0]
    calls = {f"{r.method} {r.path.replace(model_id, '<model>')}" for r in fake.calls("/api/2.0/mlflow/")
             if "/unity-catalog/" not in r.path}
    assert {"GET /api/2.0/mlflow/experiments/get-by-name", "POST /api/2.0/mlflow/runs/create",
            "POST /api/2.0/mlflow/runs/log-batch", "POST /api/2.0/mlflow/logged-models",
            "PATCH /api/2.0/mlflow/logged-models/<model>", "POST /api/2.0/mlflow/runs/update",
            "GET /api/2.0/mlflow/runs/get"} <= calls
    assert {r.principal for r in fake.calls("/api/2.0/mlflow/")} == {application_id(Principal.REGISTRAR)}
    assert {r.principal for r in fake.calls("/api/2.0/fs/")} == {application_id(Principal.REGISTRAR)}
    experiment = registered.experiment_id
    assert registered.source == f"dbfs:/databricks/mlflow-tracking/{experiment}/logged_models/{model_id}/artifacts"
    uploads = [r.path for r in fake.calls("/api/2.0/fs/files/") if r.method == "PUT"]
    root = f"/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/{experiment}/LoggedModels/{model_id}/artifacts"
    assert f"{root}/MLmodel" in uploads and all(p.startswith(root) for p in uploads)
    assert not [r for r in fake.calls("/api/2.0/fs/files/") if r.method == "GET"]  # downloads: presigned URLs only
    assert {r.path.split("/")[-1] for r in fake.calls("/presigned/")} >= {"MLmodel", "python_model.pkl"}
    stored = mlflow.MlflowClient(tracking_uri=server.url).get_run(registered.run_id)
    assert stored.info.experiment_id == experiment and stored.info.status == "FINISHED"
    assert stored.info.artifact_uri == f"dbfs:/databricks/mlflow-tracking/{experiment}/{registered.run_id}/artifacts"
    assert fake.model_versions[registered.name][registered.version]["run_tracking_server_id"] == fake.workspace_id


def uc_calls(fake) -> list[str]:
    return [f"{r.method} {r.path.removeprefix(PREFIX)}" for r in fake.calls(PREFIX)]


def test_registers_a_version_with_lineage_tags_then_finds_it_again(world, adapter, tmp_path, mlflow_server):
    world, registry = world
    fake = world.databricks
    first = register(world, adapter, tmp_path)

    assert first.created and first.name == MODEL and first.version == "1"
    assert uc_calls(fake) == [
        "GET /registered-models/get",
        "POST /registered-models/create",
        "POST /model-versions/create",
        "GET /registered-models:is-databricks-sdk-models-artifact-repository-enabled",
        "POST /model-versions/generate-temporary-credentials",
        "POST /model-versions/finalize",
    ]
    get_model, create_model, create, _, creds, finalize = fake.calls(PREFIX)
    assert get_model.query == {"name": [MODEL]} and create_model.body == {"name": MODEL}
    assert create.body["name"] == MODEL and create.body["run_id"] == first.run_id
    assert create.body["source"] == first.source and first.source.endswith("/artifacts")
    assert create.body["description"] == "LoRA adapter for SEC risk-factor instructions"
    tags = {t["key"]: t["value"] for t in create.body["tags"]}
    assert tags["governed_ft.source_tables"] == (f"{CATALOG}.{CURATED_TABLE}@7,{CATALOG}.{RAW_TABLE}@3")
    assert tags["governed_ft.preprocessing_job"] == "emr-serverless:00fabc123/jr-0042"
    assert tags["governed_ft.training_job"].endswith("training-job/governed-ft-0042")
    assert tags["governed_ft.code_version"] == "git:4f1c2e9" and tags[TAG_MLFLOW_RUN] == first.run_id
    assert tags[TAG_HYPERPARAMETERS_SHA256] == hyperparameters_sha256(HYPERPARAMETERS)
    assert tags[TAG_ARTIFACT_SHA256] == first.artifact_sha256 == artifact_sha256(adapter[1])
    assert creds.body == {"name": MODEL, "version": "1", "operation": "MODEL_VERSION_OPERATION_READ_WRITE"}
    assert finalize.body == {"name": MODEL, "version": "1"}
    assert {r.principal for r in fake.calls(PREFIX)} == {application_id(Principal.REGISTRAR)}
    assert_tracked_through_the_workspace(fake, first, mlflow_server)

    version = registry.versions[MODEL]["1"]
    assert version["status"] == "READY" and version["storage_location"] == f"{STORAGE_ROOT}/{MODEL}/1"
    keys = registry.uploaded(version["storage_location"])
    prefix = f"ml/models/{MODEL}/1/"
    assert {f"{prefix}MLmodel", f"{prefix}python_model.pkl"} <= set(keys)
    assert any(k.startswith(f"{prefix}artifacts/adapter/") and k.endswith("adapter_model.safetensors") for k in keys)
    assert any(k.startswith(f"{prefix}code/governed_ft_dagster/") for k in keys)
    mlmodel = world.boto("s3").get_object(Bucket=BUCKET, Key=f"{prefix}MLmodel")["Body"].read().decode()
    assert "signature:" in mlmodel and '"name": "prompt"' in mlmodel and "max_new_tokens" in mlmodel
    assert [v["principal"] for v in fake.vended] == [application_id(Principal.REGISTRAR)]

    first_round = list(fake.requests)
    fake.clear_requests()
    again = register(world, adapter, tmp_path)
    assert not again.created and (again.name, again.version, again.run_id) == (MODEL, "1", first.run_id)
    assert uc_calls(fake) == ["GET /registered-models/get", "GET /model-versions/search", "GET /model-versions/get"]
    assert list(registry.versions[MODEL]) == ["1"]

    secret = secret_value(Principal.REGISTRAR)
    exchanges = [r for r in first_round + fake.requests if r.path == "/oidc/v1/token"]
    assert exchanges and all(secret in r.raw_body.decode() + r.headers.get("authorization", "") or
                             r.headers.get("authorization", "").startswith("Basic ") for r in exchanges)
    for request in first_round + fake.requests:
        if request.path == "/oidc/v1/token":
            continue
        assert secret not in request.raw_body.decode("latin-1") and PLANTED not in request.raw_body.decode("latin-1")
        assert all(secret not in v and PLANTED not in v for v in request.headers.values())
    for key in keys:
        if not key.endswith((".safetensors", ".pkl")):
            text = world.boto("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read().decode(errors="replace")
            assert secret not in text and PLANTED not in text, key
    run = mlflow.MlflowClient(tracking_uri=mlflow_server.url).get_run(first.run_id)  # the server itself
    recorded = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert secret not in recorded and PLANTED not in recorded and "hf_token" not in run.data.params
    assert run.data.params["lora_r"] == "4" and run.data.tags[TAG_ARTIFACT_SHA256] == first.artifact_sha256
    assert "governed_ft.client_secret" not in tags and "DATABRICKS_CLIENT_SECRET" not in os.environ

    fake.clear_requests()
    with registry_env_for_databricks(fake.url, application_id(Principal.REGISTRAR), secret), \
            scoped_env({"MLFLOW_REGISTRY_URI": "databricks-uc", "MLFLOW_TRACKING_URI": "databricks"}):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1", dst_path=str(tmp_path))
    assert uc_calls(fake) == [
        "GET /registered-models:is-databricks-sdk-models-artifact-repository-enabled",
        "POST /model-versions/generate-temporary-credentials",
        "GET /registered-models/get",
        "GET /model-versions/get-download-uri",
    ]
    assert fake.calls(f"{PREFIX}/model-versions/generate-temporary-credentials")[0].body["operation"] == (
        "MODEL_VERSION_OPERATION_READ")
    answers = model.predict(pd.DataFrame({"prompt": ["What are the key supply-chain risks?", "And rates?"]}),
                            params={"max_new_tokens": 4})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_a_principal_without_create_model_is_refused(world, adapter, tmp_path):
    world, registry = world
    with pytest.raises(CatalogPermissionError) as refused:
        register(world, adapter, tmp_path, Principal.TRAIN)
    message = str(refused.value)
    assert application_id(Principal.TRAIN) in message and "CREATE MODEL" in message and MODEL in message
    assert MODEL not in world.databricks.models and registry.versions == {}


def test_only_the_owner_creates_versions(world, adapter, tmp_path, mlflow_server):
    world, registry = world
    register(world, adapter, tmp_path)
    other = Principal.INGEST
    world.databricks.grant("schema", f"{CATALOG}.ml", application_id(other), "USE_SCHEMA", "CREATE_MODEL", "EXECUTE")
    retrained = shutil.copytree(adapter[1], tmp_path / "retrained")
    (retrained / "README.md").write_text("retrained")  # a different adapter: a new version is due
    with pytest.raises(ModelOwnershipError) as refused:
        register(world, (adapter[0], retrained), tmp_path, other)
    assert application_id(other) in str(refused.value) and MODEL in str(refused.value) and "owner" in str(refused.value)
    assert list(registry.versions[MODEL]) == ["1"]
    tracking = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    runs = tracking.search_runs([tracking.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string=f"tags.`{TAG_ARTIFACT_SHA256}` = '{artifact_sha256(retrained)}'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_wrong_client_secret_is_a_clear_sign_in_error(world, adapter, tmp_path):
    world, registry = world
    principal = application_id(Principal.REGISTRAR)
    with pytest.raises(CatalogError) as failed:
        with registry_env_for_databricks(world.databricks.url, principal, "dose-wrong-secret-0000"):
            register_adapter(
                registry_uri="databricks-uc", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / 'mlartifacts').as_uri(),
                model_full_name=MODEL, adapter_dir=adapter[1], base_model_ref=str(adapter[0]), description="d",
                tags={}, experiment="governed-ft", env=None,
            )
    assert principal in str(failed.value) and "client secret" in str(failed.value)
    assert "dose-wrong-secret" not in str(failed.value) and registry.versions == {}


def test_an_unreachable_registry_gives_one_sentence(world, adapter, tmp_path):
    world, _ = world
    url = world.databricks.url
    world.databricks.stop()
    with pytest.raises(RegistryUnavailableError) as failed:
        register_adapter(
            registry_uri="databricks-uc", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / 'mlartifacts').as_uri(), model_full_name=MODEL,
            adapter_dir=adapter[1], base_model_ref=str(adapter[0]), description="d", tags={}, experiment="e",
            env={"DATABRICKS_HOST": url, "DATABRICKS_CLIENT_ID": "registrar", "DATABRICKS_CLIENT_SECRET": "s"},
        )
    message = str(failed.value)
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message
    assert "databricks-uc" in message and url in message and "DATABRICKS_HOST" in message
    assert not (tmp_path / "mlflow.db").exists()


def test_a_registry_that_accepts_connections_but_never_answers_fails_in_seconds(adapter, tmp_path, monkeypatch):
    monkeypatch.setattr("governed_ft_dagster.registry.ANSWER_TIMEOUT_S", 1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(RegistryUnavailableError) as failed:
            register_adapter(
                registry_uri="databricks-uc", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                artifact_location=(tmp_path / "mlartifacts").as_uri(), model_full_name=MODEL,
                adapter_dir=adapter[1], base_model_ref=str(adapter[0]), description="d", tags={}, experiment="e",
                env={"DATABRICKS_HOST": url, "DATABRICKS_CLIENT_ID": "registrar", "DATABRICKS_CLIENT_SECRET": "s"},
            )
    finally:
        silent.close()
    assert time.monotonic() - started < 10
    assert "sent no answer within 1 s" in str(failed.value) and url in str(failed.value)
    assert not (tmp_path / "mlflow.db").exists()


def test_prompts_and_conversations_become_chat_messages():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Top risk?"}]
    assert chat_messages(pd.DataFrame({"prompt": ["a", "b"]})) == [[{"role": "user", "content": "a"}],
                                                                   [{"role": "user", "content": "b"}]]
    assert chat_messages("a") == chat_messages(["a"]) == chat_messages({"prompt": "a"})
    assert chat_messages(chat) == chat_messages({"messages": chat}) == chat_messages([chat]) == [chat]
    with pytest.raises(ValueError, match="prompt"):
        chat_messages([42])


def test_registers_into_the_open_source_catalog_once(adapter, tmp_path, running_stack):
    from governed_ft_dagster.stack.bootstrap import bootstrap, read_token

    bootstrap(running_stack)
    base, adapter_dir = adapter
    url = running_stack.settings.uc_url
    registered = []
    with registry_env_for_oss(url, read_token(running_stack.home, Principal.REGISTRAR)):
        for _ in range(2):
            registered.append(register_adapter(
                registry_uri=f"uc:{url}", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                artifact_location=(tmp_path / "mlartifacts").as_uri(),
                model_full_name=f"{running_stack.settings.catalog_name}.{PRODUCTION_MODEL_NAME}", adapter_dir=adapter_dir,
                base_model_ref=str(base), description="oss", tags={}, experiment="governed-ft", env=None))
    first, again = registered
    assert first.created and first.version == "1"
    assert not again.created and again.version == first.version
