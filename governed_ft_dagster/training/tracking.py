"""Where MLflow runs live and where a person opens them: the open-source MLflow UI or a Databricks workspace."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

# The artifact location a training job gives the experiment it creates (the store's default is the job's cwd).
MLFLOW_ARTIFACT_LOCATION_ENV = "GOVERNED_FT_MLFLOW_ARTIFACT_LOCATION"


def local_mlflow_store(home: Path) -> tuple[str, str]:
    """The state folder's MLflow store: its tracking URI and the artifact location of its experiments."""
    folder = Path(home) / "mlflow"
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def mlflow_run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the open-source MLflow UI: params, metrics with the loss curve, artifacts."""
    return f"{ui_url.rstrip('/')}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def databricks_run_url(host: str, experiment_id: str, run_id: str) -> str:
    """A run's page in a Databricks workspace's managed MLflow."""
    return f"{host.rstrip('/')}/ml/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"
