"""The training job's staged Python environment, put ahead of the container's own packages at start (stdlib only).

SageMaker copies the staged environment.tar.gz into the job's `environment` channel. The job unpacks it once per
container (every torchrun worker may ask; one unpacks, the others use its folder) and imports from it first, so the
packages come from the code prefix and torch from the container, and nothing is installed from an index.
"""

from __future__ import annotations

import importlib
import os
import shutil
import site
import sys
import tarfile
import tempfile
from pathlib import Path

CHANNEL = "environment"
ARCHIVE = "environment.tar.gz"
UNPACKED = "site-packages"


class EnvironmentNotStaged(RuntimeError):
    """The job was started with an environment channel that holds no environment."""


def channel_dir() -> Path | None:
    """The mounted environment channel, or None where the job runs without one (a local process)."""
    mounted = os.environ.get(f"SM_CHANNEL_{CHANNEL.upper()}")
    return Path(mounted) if mounted else None


def activate(folder: Path | None = None) -> Path | None:
    """Put the staged site-packages first on sys.path (and PYTHONPATH, for worker processes); its path, or None."""
    folder = folder or channel_dir()
    if folder is None:
        return None
    archive = folder / ARCHIVE
    target = folder / UNPACKED
    if not target.is_dir():
        if not archive.is_file():
            raise EnvironmentNotStaged(f"the {CHANNEL} channel {folder} holds no {ARCHIVE}; run `governed-ft aws stage` "
                                       "and start the job again")
        _unpack(archive, target)
    path = str(target)
    if path not in sys.path:
        sys.path.insert(0, path)
        site.addsitedir(path)  # already on sys.path: only runs its .pth files
        importlib.invalidate_caches()
    inherited = os.environ.get("PYTHONPATH", "")
    if path not in inherited.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, inherited) if p)
    return target


def _unpack(archive: Path, target: Path) -> None:
    """Unpack into a private folder, then rename it into place; a worker that lost the race keeps the winner's."""
    staging = Path(tempfile.mkdtemp(prefix=f".{UNPACKED}-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
