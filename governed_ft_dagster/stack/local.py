"""The local stack as one object: fetch, up, down and status over the state folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from governed_ft_dagster.settings import Settings
from governed_ft_dagster.stack import jars, server
from governed_ft_dagster.stack.errors import StackError
from governed_ft_dagster.stack.versions import JAR_GROUPS

# hadoop: local Spark runs on the EMR release's Hadoop client (stack/spark_runtime.py).
REQUIRED_GROUPS = ("uc-server", "spark", "hadoop")
# uc-spark: the local Spark job reads and writes its tables through the catalog's Spark connector; where it
# cannot be fetched, `stack fetch` says so and the curated job stops with the sentence naming the fix.
OPTIONAL_GROUPS = ("uc-spark",)
MLFLOW_EXPERIMENT = "governed-ft"


@dataclass(frozen=True)
class LocalStack:
    """Catalog server, jars, MLflow store and warehouse under one state folder."""

    settings: Settings

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.settings.mlflow_tracking_uri

    @property
    def mlflow_artifact_root(self) -> str:
        return self.settings.mlflow_artifact_location

    @property
    def server_paths(self) -> server.ServerPaths:
        return server.ServerPaths.under(self.home)

    def admin_token(self) -> str:
        token = server.admin_token(self.server_paths)
        if token is None:
            raise StackError("the catalog has no admin token yet; run `governed-ft stack up` first")
        return token

    def fetch(self, groups: tuple[str, ...] = REQUIRED_GROUPS + OPTIONAL_GROUPS) -> dict[str, str]:
        """Fetch every group; optional groups that cannot be fetched are reported, not raised."""
        required = tuple(g for g in groups if g in REQUIRED_GROUPS)
        outcome = {g: "present" for g in jars.fetch_groups(self.home, required, mirror=self.settings.jar_mirror)}
        for group in (g for g in groups if g not in REQUIRED_GROUPS):
            try:
                jars.fetch_group(self.home, group, mirror=self.settings.jar_mirror)
                outcome[group] = "present"
            except StackError as exc:
                outcome[group] = f"missing: {exc}"
        return {g: outcome[g] for g in groups}

    def up(self) -> int:
        """Create the state folder, fetch what is missing, start the catalog and wait for it."""
        server.check_can_start(self.home, self.settings.uc_host, self.settings.uc_port)
        for directory in (self.warehouse, self.mlflow_dir / "artifacts", self.home / "tokens"):
            directory.mkdir(parents=True, exist_ok=True)
        self.init_mlflow()
        self.fetch()
        return server.start(self.home, self.settings.uc_host, self.settings.uc_port)

    def init_mlflow(self) -> str:
        """Create the MLflow tracking store (schema migrations run once); return its experiment id."""
        import logging

        import mlflow

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # one-off schema migration chatter
        client = mlflow.MlflowClient(tracking_uri=self.mlflow_tracking_uri)
        experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=self.mlflow_artifact_root)

    def down(self) -> bool:
        return server.stop(self.home)

    def status(self) -> dict:
        """Health of the catalog and what is present in the state folder."""
        paths = self.server_paths
        pid = server.read_pid(paths)
        token = server.admin_token(paths)
        is_healthy = pid is not None and server.healthy(self.settings.uc_url, token)
        return {
            "home": str(self.home),
            "deployment": self.settings.deployment,
            "catalog_server": {
                "url": self.settings.uc_url,
                "running": pid is not None,
                "pid": pid,
                "healthy": is_healthy,
                "log": str(paths.log_file),
                "database": str(paths.database),
            },
            "jars": {group: jars.group_status(self.home, group).as_dict() for group in JAR_GROUPS},
            "mlflow": {
                "tracking_uri": self.mlflow_tracking_uri,
                "present": (self.mlflow_dir / "mlflow.db").exists(),
            },
            "warehouse": str(self.warehouse),
        }
