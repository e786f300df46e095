"""Project settings, read from the environment in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

Deployment = Literal["local", "aws"]
DEPLOYMENTS: tuple[Deployment, ...] = ("local", "aws")


class SettingsError(ValueError):
    """A setting has a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the project runs and where its local state lives."""

    deployment: Deployment
    home: Path
    catalog_name: str
    uc_port: int
    uc_host: str = "127.0.0.1"

    @property
    def uc_url(self) -> str:
        return f"http://{self.uc_host}:{self.uc_port}"


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
    return Settings(
        deployment=deployment,  # type: ignore[arg-type]
        home=home,
        catalog_name=env.get("GOVERNED_FT_CATALOG", "governed_ft"),
        uc_port=port,
    )
