"""MLflow tracking on the fake workspace (tracking URI `databricks`): a real MLflow server behind its authentication.

`MlflowServer` runs `mlflow server` from this environment on a loopback port with a sqlite store, once per test
session. `install(fake, server, files)` makes the fake workspace answer the MLflow REST routes that MLflow 3.17's
`databricks` tracking store calls (`mlflow/store/tracking/rest_store.py`, paths from `mlflow/protos/service.proto`):
the workspace checks the bearer token, then forwards the call to the server and returns the server's answer. The
server's default artifact root is `dbfs:/databricks/mlflow-tracking`, so runs live at
`dbfs:/databricks/mlflow-tracking/<experiment>/<run>/artifacts` as on Databricks; a logged model's location is given
in Databricks' form, `.../<experiment>/logged_models/<model>/artifacts`.

Their files go where MLflow's Databricks artifact repositories put them: first the Files API under
`/WorkspaceInternal/Mlflow/Artifacts/<experiment>/{Runs/<run>,LoggedModels/<model>}` through databricks-sdk
(`mlflow/store/artifact/databricks_tracking_artifact_repo.py`), stored in the workspace's root bucket. The run page
`/ml/experiments/<experiment>/runs/<run>` answers when that run exists in that experiment. Any other MLflow route
answers ENDPOINT_NOT_FOUND (and lands in `fake.unserved`), so a new call fails a test instead of passing silently.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from fake_databricks import ApiError, FakeDatabricks, Raw, RecordedRequest
from fake_files import FilesApi
from governed_ft_dagster.processes import end_group, with_default_signals

MLFLOW = "/api/2.0/mlflow"
ARTIFACT_ROOT = "dbfs:/databricks/mlflow-tracking"
WORKSPACE_ROOT_BUCKET = "databricks-workspace-root"
# The tracking routes the workspace forwards to the server: those MLflow's RestStore calls for experiments, runs,
# params, metrics, tags and logged models (service.proto's MlflowService, as served under /api/2.0/mlflow).
FORWARDED = [
    ("GET", r"experiments/get-by-name"), ("POST", r"experiments/create"), ("GET", r"experiments/get"),
    ("POST", r"runs/create"), ("POST", r"runs/update"), ("GET", r"runs/get"), ("POST", r"runs/search"),
    ("POST", r"runs/log-metric"), ("POST", r"runs/log-parameter"), ("POST", r"runs/set-tag"),
    ("POST", r"runs/log-batch"), ("POST", r"runs/log-inputs"), ("POST", r"runs/outputs"),
    ("POST", r"logged-models"), ("GET", r"logged-models/[^/]+"), ("PATCH", r"logged-models/[^/]+"),
    ("POST", r"logged-models/search"), ("PATCH", r"logged-models/[^/]+/tags"),
    ("POST", r"logged-models/[^/]+/params"),
]
_LOGGED_MODEL_URI = re.compile(rf"({re.escape(ARTIFACT_ROOT)}/[^/\"]+)/models/(m-[0-9a-f]+)/artifacts")


class MlflowServer:
    """`mlflow server` on a loopback port with a sqlite store, stopped with its process group."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = Path(root), port
        self.url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "DATABRICKS_"))}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: tracking is all the tests ask of it
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--default-artifact-root", ARTIFACT_ROOT, "--no-serve-artifacts", "--workers", "1"]
        with open(self.root / "server.log", "wb") as log:
            self._process = subprocess.Popen(with_default_signals(command), cwd=self.root, env=env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._process.returncode}: "
                                   f"{(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout_s:g} s")

    def stop(self) -> None:
        if self._process is not None:
            end_group(self._process)
            self._process = None


@dataclass
class FakeMlflowTracking:
    """The workspace's MLflow tracking: the server it forwards to and where run and model files are kept."""

    fake: FakeDatabricks
    server_url: str
    files: FilesApi
    bucket: str = WORKSPACE_ROOT_BUCKET
    experiments: dict[str, str] = field(default_factory=dict)

    def forward(self, fake: FakeDatabricks, request: RecordedRequest) -> tuple[int, Any]:
        response = requests.request(request.method, f"{self.server_url}{request.path}", params=request.query,
                                    data=request.raw_body or None,
                                    headers={"Content-Type": request.headers.get("content-type", "application/json")},
                                    timeout=60)
        text = _LOGGED_MODEL_URI.sub(r"\1/logged_models/\2/artifacts", response.text)
        try:
            return response.status_code, json.loads(text)
        except ValueError:
            return response.status_code, Raw(text.encode(), response.headers.get("content-type", "text/plain"))

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = requests.get(f"{self.server_url}{MLFLOW}/{path}", params=params, timeout=30)
        if response.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in response.text:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"{path} {params} does not exist.")
        response.raise_for_status()
        return response.json()

    def artifacts(self, principal: str, rest: str, write: bool) -> str:
        """S3 URL of a path under /WorkspaceInternal/Mlflow/Artifacts: `<experiment>/Runs/<run>/...` or
        `<experiment>/LoggedModels/<model>/...`, once that run or logged model is known in that experiment."""
        match = re.fullmatch(r"(?P<experiment>[^/]+)/(?P<kind>Runs|LoggedModels)/(?P<id>[^/]+)(?P<rest>/.*)?", rest)
        if match is None:
            raise ApiError(404, "NOT_FOUND", f"/WorkspaceInternal/Mlflow/Artifacts/{rest} is not an artifact path.")
        experiment, kind, object_id = match["experiment"], match["kind"], match["id"]
        if object_id not in self.experiments:  # a run or logged model never moves to another experiment
            self.experiments[object_id] = (
                self.get("runs/get", run_id=object_id)["run"]["info"]["experiment_id"] if kind == "Runs"
                else self.get(f"logged-models/{object_id}")["model"]["info"]["experiment_id"])
        found = self.experiments[object_id]
        folder = f"{experiment}/{object_id}" if kind == "Runs" else f"{experiment}/logged_models/{object_id}"
        if found != experiment:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"{object_id} is not in experiment {experiment}.")
        return f"s3://{self.bucket}/mlflow-tracking/{folder}{match['rest'] or ''}"

    def run_page(self, fake: FakeDatabricks, request: RecordedRequest, experiment: str, run: str) -> tuple[int, Any]:
        """The run's page in the workspace UI: its name, params and tags, or 404 for a run not in that experiment."""
        try:
            found = self.get("runs/get", run_id=run)["run"]
        except ApiError:
            return 404, Raw(b"<html><body>Run not found</body></html>", "text/html")
        if found["info"]["experiment_id"] != experiment:
            return 404, Raw(b"<html><body>Run not found</body></html>", "text/html")
        data = found.get("data", {})
        rows = "".join(f"<tr><td>{html.escape(p['key'])}</td><td>{html.escape(p['value'])}</td></tr>"
                       for p in data.get("params", []))
        page = (f"<html><head><title>{html.escape(found['info'].get('run_name', run))}</title></head><body>"
                f"<h1>Run {html.escape(run)}</h1><table>{rows}</table></body></html>")
        return 200, Raw(page.encode(), "text/html")


def install(fake: FakeDatabricks, server_url: str, files: FilesApi) -> FakeMlflowTracking:
    """Serve MLflow tracking from fake, forwarded to the server at server_url; run and model files through files."""
    tracking = FakeMlflowTracking(fake, server_url, files)
    files.s3().create_bucket(Bucket=tracking.bucket)
    for method, path in FORWARDED:
        fake.add_route(method, rf"{MLFLOW}/{path}", tracking.forward)
    files.mount("/WorkspaceInternal/Mlflow/Artifacts/", tracking.artifacts)
    fake.add_route("GET", r"/ml/experiments/(?P<experiment>[^/]+)/runs/(?P<run>[^/]+)", tracking.run_page,
                   authenticated=False)
    return tracking


__all__ = ["ARTIFACT_ROOT", "FakeMlflowTracking", "MlflowServer", "WORKSPACE_ROOT_BUCKET", "install"]
