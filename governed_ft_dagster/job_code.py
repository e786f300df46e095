"""The job scripts and the code a job runs with, found through the installed packages, never a source checkout."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import importlib.util
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from governed_ft_dagster import __version__

SCRIPTS_PACKAGE = "job_scripts"
PY_FILES_SUFFIX = ".zip"
PREPROCESS_SCRIPT = "preprocess_risk_factors.py"
TRAIN_SCRIPT = "train_lora.py"
# Every SageMaker training job of the graph is named with this prefix (the orchestrator's policy names it).
TRAINING_JOB_PREFIX = "lora-risk-factors-"
PROJECT_PACKAGES = ("governed_ft_dagster", SCRIPTS_PACKAGE)
# The ML stack comes from the staged training environment (or the image); the Pipes protocol package also travels
# with the code, pure Python, so a job on an image that holds every package still reports.
TRAINING_SOURCE_PACKAGES = ("governed_ft_dagster", "dagster_pipes")
EXCLUDED_FROM_CODE = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                      ".governed_ft", "node_modules", ".ipynb_checkpoints"}
MAX_CODE_BYTES = 256 * 1024 * 1024
_LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


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


def _package_files(package: str) -> list[tuple[str, Path]]:
    root = package_dir(package)
    return [(f"{package}/{path.relative_to(root).as_posix()}", path) for path in sorted(root.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]


def training_source_dir(out_dir: Path) -> tuple[Path, Path]:
    """A script-mode source folder: the training script under job_scripts/ and the packages it imports beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scripts = out_dir / SCRIPTS_PACKAGE
    scripts.mkdir(exist_ok=True)
    shutil.copy2(job_script(TRAIN_SCRIPT), scripts / TRAIN_SCRIPT)
    for package in TRAINING_SOURCE_PACKAGES:
        shutil.copytree(package_dir(package), out_dir / package, ignore=_LEFT_OUT, dirs_exist_ok=True)
    return scripts / TRAIN_SCRIPT, out_dir


def source_tarball(source_dir: str) -> bytes:
    """A reproducible sourcedir.tar.gz of the folder (sorted, zeroed times and owners, caches left out)."""
    root = Path(source_dir).resolve()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part in EXCLUDED_FROM_CODE for part in rel.parts) or path.suffix == ".pyc" or not path.is_file():
                continue
            info = tar.gettarinfo(str(path), arcname=rel.as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    data = buffer.getvalue()
    if len(data) > MAX_CODE_BYTES:
        raise ValueError(f"source_dir {source_dir} packs to {len(data) // 2**20} MiB; point it at the job's code")
    return data


def project_wheel(out_dir: Path, suffix: str = ".whl") -> Path:
    """A byte-for-byte reproducible pure-Python wheel of the installed project packages.

    Spark puts --py-files on the executors' path only when they end in .zip, .egg or .jar: pass suffix=".zip" for
    the same bytes under a name Spark imports from.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"governed_ft_dagster-{__version__}.dist-info"
    target = out_dir / f"governed_ft_dagster-{__version__}-py3-none-any{suffix}"
    entries = [(name, path.read_bytes()) for package in PROJECT_PACKAGES for name, path in _package_files(package)]
    entries += [
        (f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: governed-ft-dagster\nVersion: {__version__}\n".encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: governed-ft\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for name, data in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            info = zipfile.ZipInfo(name, _ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return target
