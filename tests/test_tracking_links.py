"""Where the materializations' links lead: the MLflow UI, a Databricks workspace, the SageMaker console."""

from governed_ft_dagster.defs.resources.registry import DatabricksRegistryResource, LocalRegistryResource
from governed_ft_dagster.defs.resources.training_jobs import (
    LocalTrainingResource,
    SageMakerTrainingResource,
    TrainingJobResult,
)
from governed_ft_dagster.settings import load_settings
from governed_ft_dagster.training.tracking import databricks_run_url, mlflow_run_url


def test_run_urls_follow_each_ui_s_routes():
    assert mlflow_run_url("http://127.0.0.1:5000/", "3", "ab12") == "http://127.0.0.1:5000/#/experiments/3/runs/ab12"
    assert databricks_run_url("https://dbc-1.cloud.databricks.com/", "77", "ab12") == \
        "https://dbc-1.cloud.databricks.com/ml/experiments/77/runs/ab12"


def test_the_mlflow_ui_port_is_one_setting_for_the_links_and_the_ui(tmp_path):
    settings = load_settings({"GOVERNED_FT_HOME": str(tmp_path), "GOVERNED_FT_MLFLOW_UI_PORT": "5123"})
    assert settings.mlflow_ui_url == "http://127.0.0.1:5123"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    registry = LocalRegistryResource(url="http://127.0.0.1:8080", home=str(tmp_path),
                                     mlflow_ui_url=settings.mlflow_ui_url)
    assert registry.run_url("1", "r") == "http://127.0.0.1:5123/#/experiments/1/runs/r"
    assert LocalRegistryResource(url="http://127.0.0.1:8080", home=str(tmp_path)).run_url("1", "r") is None


def test_training_links_name_the_run_or_the_job():
    result = TrainingJobResult(kind="SageMakerTrainingJob", run_id="lora-v1", state="Completed",
                               model_artifacts="s3://b/m.tar.gz",
                               properties={"console_link": "https://console/job", "log_link": "https://console/logs"})
    local = LocalTrainingResource(work_dir="/tmp/x", mlflow_tracking_uri="sqlite:///x.db",
                                  mlflow_ui_url="http://127.0.0.1:5000")
    assert local.links(result, {"mlflow_run_id": "r1", "mlflow_experiment_id": "2"}) == {
        "mlflow_run": "http://127.0.0.1:5000/#/experiments/2/runs/r1"}
    assert local.links(result, {}) == {}  # a job that logged no MLflow run gets no link
    sagemaker = SageMakerTrainingResource(region="us-east-1", role_arn="arn:aws:iam::1:role/r", image_uri="img",
                                          checkpoint_s3_uri="s3://b/c", output_s3_uri="s3://b/o",
                                          code_s3_prefix="s3://b/code/")
    assert sagemaker.links(result, {}) == {"sagemaker_job": "https://console/job",
                                           "sagemaker_logs": "https://console/logs"}


def test_a_databricks_registration_run_links_the_workspace_only_when_it_tracks_there():
    registry = DatabricksRegistryResource(host="https://dbc-1.cloud.databricks.com", region="us-east-1")
    assert registry.run_url("9", "r") == "https://dbc-1.cloud.databricks.com/ml/experiments/9/runs/r"
    elsewhere = DatabricksRegistryResource(host="https://dbc-1.cloud.databricks.com", region="us-east-1",
                                           tracking_uri="http://127.0.0.1:5001")
    assert elsewhere.run_url("9", "r") is None
