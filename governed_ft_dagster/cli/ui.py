"""`governed-ft ui`: the Dagster UI on the instance `governed-ft run` writes to, and the MLflow UI on its store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from governed_ft_dagster.processes import end_group, with_default_signals
from governed_ft_dagster.settings import load_settings

# `dg`, Dagster's command line that supersedes `dagster dev`, from this interpreter's environment.
DG = (sys.executable, "-m", "dagster_dg_cli.cli")
CODE_LOCATION_MODULE = "governed_ft_dagster.definitions"


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address both UIs listen on.")
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option("--mlflow-port", type=int, default=None,
              help="Port of the MLflow UI (0: do not start it); GOVERNED_FT_MLFLOW_UI_PORT, 5000 by default, is the "
                   "port the materializations' MLflow links name.")
def ui(host: str, port: int, mlflow_port: int | None) -> None:
    """Serve the Dagster UI (runs, materializations, checks) and the MLflow UI (runs, loss curves) until stopped."""
    settings = load_settings()
    mlflow_port = settings.mlflow_ui_port if mlflow_port is None else mlflow_port
    dagster_home = settings.prepare_dagster_home()
    children = [subprocess.Popen(with_default_signals([*DG, "dev", "-m", CODE_LOCATION_MODULE, "-h", host,
                                                       "-p", str(port)]), start_new_session=True)]
    click.echo(f"Dagster UI: http://{host}:{port} (instance {dagster_home})")
    if mlflow_port and settings.deployment == "local":
        store = settings.home / "mlflow"
        children.append(subprocess.Popen(
            with_default_signals([sys.executable, "-m", "mlflow", "ui",
                                  "--backend-store-uri", settings.mlflow_tracking_uri,
                                  "--default-artifact-root", settings.mlflow_artifact_location,
                                  "--host", host, "--port", str(mlflow_port)]),
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True))
        click.echo(f"MLflow UI: http://{host}:{mlflow_port} (store {store})")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop and all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            end_group(child)
    exited = [child for child in children if child.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL)]
    if exited and not stop:
        sys.exit(1)
