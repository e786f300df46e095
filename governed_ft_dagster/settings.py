"""Project settings, read from the environment in this one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from governed_ft_dagster.governance import ModelNameError, check_model_name, registered_model_name
from governed_ft_dagster.training.base_model import BASE_MODEL_ID, TINY_FAMILY, staged_identity, tiny_identity
from governed_ft_dagster.retention import DEFAULT_RETENTION_DAYS
from governed_ft_dagster.training.tracking import local_mlflow_store

Deployment = Literal["local", "aws"]
DEPLOYMENTS: tuple[Deployment, ...] = ("local", "aws")
DEFAULT_STACK = "governed-ft"
STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$")
# At most 4 steps of a pool at once; the only pool is 'edgar' (the raw partitions, which share 10 requests/s).
DAGSTER_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 4\n"


class SettingsError(ValueError):
    """A setting has a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the project runs and where its local state lives."""

    deployment: Deployment
    home: Path
    catalog_name: str
    uc_port: int
    edgar_source: str = "sample"
    fiscal_years: tuple[int, ...] = (2023, 2024)
    jar_mirror: Path | None = None
    edgar_refresh_cron: str = "0 6 * * *"
    retrain_policy: str = "on_demand"
    uc_host: str = "127.0.0.1"
    stack_name: str = DEFAULT_STACK
    mlflow_ui_port: int = 5000
    base_model: str = ""  # hub id or local folder; empty: the tiny local base (local) or the production base (aws)
    base_model_revision: str = ""  # the pinned hub revision of base_model
    model_name_override: str = ""

    @property
    def tiny_base(self) -> bool:
        """Whether the deployment trains the tiny stand-in built in the state folder."""
        return self.deployment == "local" and not self.base_model

    @property
    def base_model_ref(self) -> str:
        """The base model the training job starts from: a hub id or a local folder."""
        if self.base_model:
            return self.base_model
        return str(self.home / "models" / f"tiny-{TINY_FAMILY}") if self.tiny_base else BASE_MODEL_ID

    @property
    def model_name(self) -> str:
        """The registered model the adapters go to: GOVERNED_FT_MODEL_NAME, else named after the base model."""
        if self.model_name_override:
            return self.model_name_override
        folder = Path(self.base_model_ref)
        tiny = TINY_FAMILY if self.tiny_base else tiny_identity(folder).get("family")
        staged = staged_identity(folder).get("id") if folder.is_dir() else None
        return registered_model_name(staged or self.base_model_ref, production_base=BASE_MODEL_ID, tiny_family=tiny)
    table_retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def uc_url(self) -> str:
        return f"http://{self.uc_host}:{self.uc_port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """The local MLflow store: training runs with their loss curves, and registration runs."""
        return local_mlflow_store(self.home)[0]

    @property
    def mlflow_artifact_location(self) -> str:
        return local_mlflow_store(self.home)[1]

    @property
    def mlflow_ui_url(self) -> str:
        """Where `governed-ft ui` serves the MLflow UI on that store; materializations link into it."""
        return f"http://127.0.0.1:{self.mlflow_ui_port}"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance of every command (`run`, `ui`): runs, events and checks live here."""
        return self.home / "dagster"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def prepare_dagster_home(self) -> Path:
        """Create the instance folder (telemetry off, pools limited) unless DAGSTER_HOME names another; return it."""
        home = Path(os.environ.get("DAGSTER_HOME") or self.dagster_home)
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            (home / "dagster.yaml").write_text(DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(home)
        return home


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read GOVERNED_FT_* variables; defaults give the embedded local stack under ./.governed_ft."""
    env = os.environ if environ is None else environ
    deployment = env.get("GOVERNED_FT_DEPLOYMENT", "local").strip().lower()
    if deployment not in DEPLOYMENTS:
        raise SettingsError(
            f"GOVERNED_FT_DEPLOYMENT={deployment!r} is not a deployment; set it to 'local' or 'aws'"
        )
    port_text = env.get("GOVERNED_FT_UC_PORT", "8080")
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"GOVERNED_FT_UC_PORT={port_text!r} is not a port number") from None
    home = Path(env.get("GOVERNED_FT_HOME", ".governed_ft")).expanduser().resolve()
    edgar_source = env.get("GOVERNED_FT_EDGAR_SOURCE", "sample" if deployment == "local" else "live").strip().lower()
    if edgar_source not in ("sample", "live"):
        raise SettingsError(f"GOVERNED_FT_EDGAR_SOURCE={edgar_source!r} is not a source; set it to 'sample' or 'live'")
    fiscal_years = _years(env.get("GOVERNED_FT_FISCAL_YEARS", "2023-2024"))
    revision = env.get("GOVERNED_FT_MODEL_REVISION", "").strip()
    mlflow_port_text = env.get("GOVERNED_FT_MLFLOW_UI_PORT", "5000")
    if not mlflow_port_text.isdigit():
        raise SettingsError(f"GOVERNED_FT_MLFLOW_UI_PORT={mlflow_port_text!r} is not a port number")
    retention_text = env.get("GOVERNED_FT_TABLE_RETENTION_DAYS", str(DEFAULT_RETENTION_DAYS)).strip()
    if not retention_text.isdigit() or int(retention_text) < 1:
        raise SettingsError(f"GOVERNED_FT_TABLE_RETENTION_DAYS={retention_text!r} is not a number of days; give the "
                            f"days every table version stays readable (default {DEFAULT_RETENTION_DAYS})")
    return Settings(
        deployment=deployment,  # type: ignore[arg-type]
        home=home,
        catalog_name=env.get("GOVERNED_FT_CATALOG", "governed_ft"),
        uc_port=port,
        edgar_source=edgar_source,
        fiscal_years=fiscal_years,
        jar_mirror=Path(env["GOVERNED_FT_JAR_MIRROR"]).expanduser() if env.get("GOVERNED_FT_JAR_MIRROR") else None,
        edgar_refresh_cron=env.get("GOVERNED_FT_EDGAR_REFRESH_CRON", "0 6 * * *"),
        retrain_policy=_policy(env.get("GOVERNED_FT_RETRAIN_POLICY", "on_demand")),
        stack_name=_stack_name(env.get("GOVERNED_FT_STACK", DEFAULT_STACK)),
        mlflow_ui_port=int(mlflow_port_text),
        base_model=_base_model(env.get("GOVERNED_FT_BASE_MODEL", "").strip(), revision),
        base_model_revision=revision,
        model_name_override=_model_name(env.get("GOVERNED_FT_MODEL_NAME", "").strip()),
        table_retention_days=int(retention_text),
    )


def _base_model(ref: str, revision: str) -> str:
    """A local folder, or a hub id with its revision pinned (a download is then always the same files)."""
    if not ref or Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser().resolve()) if ref else ""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
        raise SettingsError(f"GOVERNED_FT_BASE_MODEL={ref!r} is neither a folder nor a hub id (owner/name)")
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise SettingsError(f"GOVERNED_FT_BASE_MODEL={ref} is a hub id: pin its revision with "
                            "GOVERNED_FT_MODEL_REVISION=<40-hex commit>")
    return ref


def _model_name(text: str) -> str:
    try:
        return check_model_name(text) if text else ""
    except ModelNameError as exc:
        raise SettingsError(f"GOVERNED_FT_MODEL_NAME: {exc}") from None


def _stack_name(text: str) -> str:
    """The aws deployment's stack: prefix of the EMR application, the secrets and every provisioned name."""
    name = text.strip()
    if not STACK_NAME.match(name):
        raise SettingsError(f"GOVERNED_FT_STACK={text!r} is not a stack name; use 3-24 lower-case letters, digits "
                            "and hyphens, starting with a letter")
    return name


def _policy(text: str) -> str:
    from governed_ft_dagster.refresh import RetrainPolicy

    try:
        RetrainPolicy.parse(text)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return text.strip()


def _years(text: str) -> tuple[int, ...]:
    """'2023-2024' or '2022,2024' as a tuple of years."""
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
            years = tuple(range(first, last + 1))
        else:
            years = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        years = ()
    if not years or any(y < 1994 or y > 2100 for y in years):
        raise SettingsError(f"GOVERNED_FT_FISCAL_YEARS={text!r} is not a period; write it as 2023-2024 or 2022,2024")
    return years
