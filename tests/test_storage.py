"""Archive extraction that stays inside its folder, on every Python 3.11 patch release."""

import io
import tarfile
from pathlib import Path

import pytest

from governed_ft_dagster.storage import extract_tar


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:gz")


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_plain_files_and_folders_are_extracted(tmp_path: Path) -> None:
    with archive((member("adapter", tarfile.DIRTYPE), b""), (member("adapter/config.json"), b"{}"),
                 (member("training_summary.json"), b"{\"ok\": true}")) as tar:
        extract_tar(tar, tmp_path)
    assert (tmp_path / "adapter" / "config.json").read_text() == "{}"
    assert (tmp_path / "training_summary.json").exists()


@pytest.mark.parametrize("bad", [
    member("../outside.txt"), member("/etc/owned"), member("a/../../outside.txt"),
    member("link", tarfile.SYMTYPE, "/etc/passwd"), member("hard", tarfile.LNKTYPE, "adapter/config.json"),
    member("fifo", tarfile.FIFOTYPE),
], ids=["parent", "absolute", "nested-parent", "symlink", "hardlink", "fifo"])
def test_members_that_leave_the_folder_or_are_not_plain_are_refused_before_anything_is_written(tmp_path, bad):
    with archive((member("first.txt"), b"x"), (bad, b"")) as tar, pytest.raises(ValueError, match=bad.name):
        extract_tar(tar, tmp_path / "dest")
    assert not (tmp_path / "dest" / "first.txt").exists() and not (tmp_path / "outside.txt").exists()
