"""What registering through the production tracking path costs against the stand-ins: one registration of a tiny
adapter with a local sqlite tracking store, and with tracking URI `databricks` (the fake workspace forwarding to a
real `mlflow server`) under each of MLflow's two upload paths for model-version files; plus starting and stopping
that server, which the tests do once per session.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import pytest  # noqa: E402

ROUNDS = 3
PATHS = (("sqlite", False), ("databricks", False), ("databricks", True))


def register_once(root: Path, server_url: str, adapter: tuple[Path, Path], tracking: str,
                  sdk_models_repo: bool) -> tuple[float, int]:
    """Seconds for one registration in a fresh fake workspace, and how many requests the workspace answered."""
    from aws_fixtures import CATALOG, application_id, secret_value, start_registry_world
    from conftest import free_port

    from governed_ft_dagster.catalog.base import Principal
    from governed_ft_dagster.governance import PRODUCTION_MODEL_NAME as MODEL_NAME
    from governed_ft_dagster.registry import register_adapter, registry_env_for_databricks

    with pytest.MonkeyPatch.context() as env:
        world, moto, _, _ = start_registry_world(env, free_port(), tracking_url=server_url,
                                                 sdk_models_repo=sdk_models_repo)
        try:
            store = ({"tracking_uri": "databricks"} if tracking == "databricks" else
                     {"tracking_uri": f"sqlite:///{root / 'local.db'}", "artifact_location": (root / "art").as_uri()})
            started = time.monotonic()
            with registry_env_for_databricks(world.databricks.url, application_id(Principal.REGISTRAR),
                                             secret_value(Principal.REGISTRAR)):
                register_adapter(registry_uri="databricks-uc", model_full_name=f"{CATALOG}.{MODEL_NAME}",
                                 adapter_dir=adapter[1], base_model_ref=str(adapter[0]), description="bench",
                                 tags={}, experiment="/Shared/governed-ft-bench", **store)
            return time.monotonic() - started, len(world.databricks.requests)
        finally:
            world.databricks.stop()
            moto.stop()


def main() -> int:
    from conftest import free_port, tiny_lora_adapter
    from fake_mlflow_tracking import MlflowServer

    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as scratch:
        root = Path(scratch)
        started = time.monotonic()
        server = MlflowServer(root / "server", free_port()).start()
        start_s = time.monotonic() - started
        try:
            adapter = tiny_lora_adapter(root / "adapter", ["Risk factors: suppliers, rates, litigation."] * 20,
                                        seed=1, name="adapter")
            register_once(root, server.url, adapter, "sqlite", False)  # warm-up: imports, first MLflow calls
            rows = []
            for tracking, sdk_models_repo in PATHS:
                runs = [register_once(root, server.url, adapter, tracking, sdk_models_repo) for _ in range(ROUNDS)]
                rows.append((tracking, sdk_models_repo, sorted(s for s, _ in runs)[ROUNDS // 2], runs[0][1]))
        finally:
            started = time.monotonic()
            server.stop()
            stop_s = time.monotonic() - started
    print(f"mlflow server: start {start_s:.1f} s, stop {stop_s:.1f} s (once per test session)")
    print("\n| tracking | model-version upload | registration, median of 3 (s) | workspace requests |")
    print("|---|---|---|---|")
    for tracking, sdk_models_repo, seconds, requests in rows:
        upload = "Files API /Models" if sdk_models_repo else "temporary credentials, S3"
        print(f"| {tracking} | {upload} | {seconds:.1f} | {requests} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
