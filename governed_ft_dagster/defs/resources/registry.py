"""Model registry and lineage resources: one interface each, a local and a Databricks implementation."""

import abc
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import dagster as dg
from pydantic import Field, field_validator

from governed_ft_dagster.catalog.base import CatalogError, Principal
from governed_ft_dagster.governance import PRODUCTION_MODEL_NAME, check_model_name
from governed_ft_dagster.lineage.derive import LineageGraph
from governed_ft_dagster.lineage.facts import OPENLINEAGE_FILE, openlineage_path
from governed_ft_dagster.training.tracking import databricks_run_url, local_mlflow_store, mlflow_run_url

if TYPE_CHECKING:
    from governed_ft_dagster.registry import RegisteredVersion
    from governed_ft_dagster.settings import Settings

REGISTRAR_SECRET_ID = "governed-ft/registrar"


class RegistryResource(dg.ConfigurableResource, abc.ABC):
    """Registers adapters as Unity Catalog model versions through MLflow, acting as the registrar."""

    experiment: str = Field(default="governed-ft", description="MLflow experiment of the registration runs.")
    model_name: str = Field(default=PRODUCTION_MODEL_NAME,
                            description="Registered model, in the ml schema, the adapters become versions of; the "
                                        "settings name it after the deployment's base model (GOVERNED_FT_MODEL_NAME).")

    @field_validator("model_name")
    @classmethod
    def _model_in_ml(cls, value: str) -> str:
        return check_model_name(value)

    @property
    @abc.abstractmethod
    def registry_uri(self) -> str:
        """MLflow registry URI."""

    @abc.abstractmethod
    def tracking(self) -> tuple[str, Optional[str]]:
        """MLflow tracking URI and the experiment's artifact location (None: the store's default)."""

    @abc.abstractmethod
    def credentials(self) -> contextlib.AbstractContextManager:
        """The registrar's registry credentials in the environment, for the block only."""

    @abc.abstractmethod
    def run_url(self, experiment_id: str, run_id: str) -> Optional[str]:
        """Where a person opens a registration run (the logged model and its files); None without a UI."""

    def register(self, *, model_full_name: str, adapter_dir: Path, base_model_ref: str, description: str,
                 tags: Mapping[str, str], hyperparameters: Optional[Mapping[str, Any]] = None,
                 attachments: Optional[Mapping[str, Path]] = None) -> "RegisteredVersion":
        """Register the adapter as a new version, or return the version that already holds identical files."""
        from governed_ft_dagster.registry import register_adapter

        tracking_uri, artifact_location = self.tracking()
        with self.credentials():
            return register_adapter(
                registry_uri=self.registry_uri, tracking_uri=tracking_uri, artifact_location=artifact_location,
                model_full_name=model_full_name, adapter_dir=Path(adapter_dir), base_model_ref=base_model_ref,
                description=description, tags=tags, experiment=self.experiment, hyperparameters=hyperparameters,
                attachments=attachments,
            )

    def version_facts(self, model_full_name: str, version: Optional[str] = None) -> dict[str, dict[str, str]]:
        """Version → its governance tags (all versions, or one), read as the registrar."""
        from governed_ft_dagster.registry import version_facts

        with self.credentials():
            return version_facts(self.registry_uri, self.tracking()[0], model_full_name, version)

    def read_attachment(self, model_full_name: str, version: str, path: str) -> bytes:
        """The bytes of one file of a model version, fetched with the registry's credentials for that version."""
        from governed_ft_dagster.registry import read_version_file

        with self.credentials():
            return read_version_file(self.registry_uri, self.tracking()[0], model_full_name, version, path)


class LocalRegistryResource(RegistryResource):
    """MLflow's `uc:` registry on the local open-source catalog, with the local sqlite tracking store."""

    url: str = Field(description="Base URL of the local catalog server.")
    home: str = Field(description="State folder with the registrar's token and the MLflow store.")
    mlflow_ui_url: Optional[str] = Field(default=None, description="MLflow UI on the local store, for run links.")

    @property
    def registry_uri(self) -> str:
        return f"uc:{self.url.rstrip('/')}"

    def tracking(self) -> tuple[str, Optional[str]]:
        (Path(self.home) / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        return local_mlflow_store(Path(self.home))

    @contextlib.contextmanager
    def credentials(self) -> Iterator[None]:
        from governed_ft_dagster.registry import registry_env_for_oss
        from governed_ft_dagster.stack.bootstrap import read_token

        with registry_env_for_oss(self.url, read_token(Path(self.home), Principal.REGISTRAR)):
            yield

    def run_url(self, experiment_id: str, run_id: str) -> Optional[str]:
        return mlflow_run_url(self.mlflow_ui_url, experiment_id, run_id) if self.mlflow_ui_url else None


def local_registry_resource(settings: "Settings") -> LocalRegistryResource:
    """The local stack's registry resource for these settings."""
    return LocalRegistryResource(url=settings.uc_url, home=str(settings.home), mlflow_ui_url=settings.mlflow_ui_url,
                                 model_name=settings.model_name)


class DatabricksRegistryResource(RegistryResource):
    """MLflow's `databricks-uc` registry, signed in with the registrar's OAuth client from Secrets Manager."""

    host: str = Field(description="Workspace URL, e.g. https://dbc-1234.cloud.databricks.com.")
    region: str = Field(description="AWS region of the registrar's secret.")
    secret_id: str = Field(default=REGISTRAR_SECRET_ID, description="Secrets Manager id of the registrar's client.")
    tracking_uri: str = Field(default="databricks", description="MLflow tracking URI of the registration runs.")
    artifact_location: Optional[str] = Field(default=None, description="Artifact location of a new experiment.")
    aws_endpoint_url: Optional[str] = Field(default=None, description="AWS endpoint for Secrets Manager (tests only).")
    experiment: str = Field(default="/Shared/governed-ft", description="MLflow experiment of the registration runs.")

    @property
    def registry_uri(self) -> str:
        return "databricks-uc"

    def tracking(self) -> tuple[str, Optional[str]]:
        return self.tracking_uri, self.artifact_location

    @contextlib.contextmanager
    def credentials(self) -> Iterator[None]:
        from governed_ft_dagster.catalog.databricks import secret_from_aws
        from governed_ft_dagster.registry import registry_env_for_databricks

        client_id, client_secret = secret_from_aws(self.secret_id, self.region, self.aws_endpoint_url)
        with registry_env_for_databricks(self.host, client_id, client_secret):
            yield

    def run_url(self, experiment_id: str, run_id: str) -> Optional[str]:
        return databricks_run_url(self.host, experiment_id, run_id) if self.tracking_uri == "databricks" else None


def push_counts(result: Any) -> dict[str, int]:
    """Created, updated and unchanged record counts of a sink's PushResult."""
    return {"created": len(result.created), "updated": len(result.updated), "unchanged": len(result.unchanged)}


class LineageResource(dg.ConfigurableResource, abc.ABC):
    """Pushes lineage records derived from the asset graph; a re-push updates, never duplicates."""

    @abc.abstractmethod
    def push(self, graph: LineageGraph) -> dict[str, int]:
        """Write the records; counts of created, updated and unchanged ones."""

    @abc.abstractmethod
    def where(self, model_full_name: str, version: str) -> str:
        """Where a person sees the lineage of a model version."""

    @abc.abstractmethod
    def preflight(self) -> None:
        """Fail before anything is registered when lineage could not be written."""


class OpenLineageFileLineageResource(LineageResource):
    """OpenLineage run events in a JSON-lines file of the state folder (the open-source catalog has no lineage API)."""

    path: str = Field(description="The OpenLineage JSON-lines file.")
    catalog_host: str = Field(default="local", description="Host in the datasets' uc://host namespace.")

    def push(self, graph: LineageGraph) -> dict[str, int]:
        from governed_ft_dagster.lineage.sinks import OpenLineageFileSink

        return push_counts(OpenLineageFileSink(Path(self.path), catalog_host=self.catalog_host).push(graph))

    def where(self, model_full_name: str, version: str) -> str:
        return str(Path(self.path).resolve())

    def preflight(self) -> None:
        folder = Path(self.path).resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"the lineage folder {folder} cannot be created ({exc.strerror}); "
                               "point the state folder at a writable place") from None
        if not os.access(folder, os.W_OK):
            raise CatalogError(f"the lineage folder {folder} is not writable; fix its permissions or point the "
                               "state folder elsewhere")


class DatabricksLineageResource(LineageResource):
    """Unity Catalog External Metadata and External Lineage, written as the registrar principal."""

    host: str = Field(description="Workspace URL, e.g. https://dbc-1234.cloud.databricks.com.")
    region: str = Field(description="AWS region of the registrar's secret.")
    secret_id: str = Field(default=REGISTRAR_SECRET_ID, description="Secrets Manager id of the registrar's client.")
    aws_endpoint_url: Optional[str] = Field(default=None, description="AWS endpoint for Secrets Manager (tests only).")
    timeout_s: float = Field(default=30, description="Seconds per HTTP request to the workspace.")

    def _registrar(self) -> Any:
        from governed_ft_dagster.catalog.databricks import DatabricksCatalogClient

        return DatabricksCatalogClient.from_aws_secret(
            self.host, Principal.REGISTRAR.value, self.secret_id, self.region, catalog="",
            endpoint_url=self.aws_endpoint_url, timeout_s=self.timeout_s,
        )

    def registrar_client(self) -> Any:
        """The registrar's catalog client: its application id and a fail-fast, secret-redacting OAuth M2M set-up."""
        return self._registrar()

    def workspace_client(self) -> Any:
        """A WorkspaceClient signed in as the registrar, after a fast reachability check."""
        return self._registrar()._ws()

    def preflight(self) -> None:
        from governed_ft_dagster.catalog.base import Privilege

        registrar = self._registrar()
        registrar.require(registrar.client_id, [
            ("metastore", registrar.metastore_id(), Privilege.CREATE_EXTERNAL_METADATA)],
            display=f"{Principal.REGISTRAR.value} ({registrar.client_id})")

    def push(self, graph: LineageGraph) -> dict[str, int]:
        from governed_ft_dagster.lineage.sinks import DatabricksLineageSink

        registrar = self.registrar_client()
        with databricks_lineage_errors(self.host, grantee=registrar.client_id):
            return push_counts(DatabricksLineageSink(registrar._ws()).push(graph))

    def where(self, model_full_name: str, version: str) -> str:
        catalog, schema, name = model_full_name.split(".")
        return f"{self.host.rstrip('/')}/explore/data/models/{catalog}/{schema}/{name}/version/{version}"


@contextlib.contextmanager
def databricks_lineage_errors(host: str, operation: str = "writing lineage", grantee: str = "") -> Iterator[None]:
    """SDK and transport failures of the lineage APIs as one-sentence CatalogErrors."""
    import requests
    from databricks.sdk.errors import DatabricksError, PermissionDenied

    from governed_ft_dagster.catalog.refusals import refusal_error, sdk_refusal

    principal = Principal.REGISTRAR.value
    try:
        yield
    except CatalogError:
        raise
    except PermissionDenied as exc:
        refusal = sdk_refusal(exc, _first_line(exc))
        if refusal.cause != "unknown":
            raise refusal_error(refusal, principal=principal, grantee=grantee or principal, operation=operation,
                                host=host) from None
        raise CatalogError(
            f"principal '{principal}' may not write lineage at {host} ({_first_line(exc)}); "
            "grant it CREATE EXTERNAL METADATA on the metastore (`governed-ft catalog apply` does)"
        ) from None
    except DatabricksError as exc:
        raise CatalogError(f"the lineage API at {host} failed: {exc.error_code or type(exc).__name__}: "
                           f"{_first_line(exc)}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise CatalogError(f"the lineage API at {host} is unreachable ({type(exc).__name__}); retry when the "
                           "workspace answers") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).split(" Config: ")[0].splitlines()[0][:300] if str(exc) else type(exc).__name__


__all__ = [
    "DatabricksLineageResource",
    "DatabricksRegistryResource",
    "LineageResource",
    "LocalRegistryResource",
    "OPENLINEAGE_FILE",
    "OpenLineageFileLineageResource",
    "RegistryResource",
    "databricks_lineage_errors",
    "openlineage_path",
    "push_counts",
]
