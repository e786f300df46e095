"""The job scripts and the code a job runs with, found through the installed packages, never a source checkout."""

from __future__ import annotations

import importlib.resources
import importlib.util
import shutil
from pathlib import Path

SCRIPTS_PACKAGE = "job_scripts"
PREPROCESS_SCRIPT = "preprocess_risk_factors.py"
TRAIN_SCRIPT = "train_lora.py"
_LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc")


def job_script(name: str) -> Path:
    """The path of one job script of the installed `job_scripts` package."""
    path = Path(str(importlib.resources.files(SCRIPTS_PACKAGE).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"job script {name} is not in the installed {SCRIPTS_PACKAGE} package ({path.parent}); "
                                f"reinstall governed-ft-dagster")
    return path


def package_dir(package: str) -> Path:
    """The folder an importable package is installed in."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package} is not an importable package")
    return Path(list(spec.submodule_search_locations)[0])


def training_source_dir(out_dir: Path) -> tuple[Path, Path]:
    """A script-mode source folder: the training script under job_scripts/ and the project package beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts = out_dir / SCRIPTS_PACKAGE
    scripts.mkdir(exist_ok=True)
    shutil.copy2(job_script(TRAIN_SCRIPT), scripts / TRAIN_SCRIPT)
    shutil.copytree(package_dir("governed_ft_dagster"), out_dir / "governed_ft_dagster", ignore=_LEFT_OUT,
                    dirs_exist_ok=True)
    return scripts / TRAIN_SCRIPT, out_dir
