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


def test_put_json_from_concurrent_writers_never_fails_nor_publishes_a_partial_file(tmp_path: Path) -> None:
    import json
    import threading

    from governed_ft_dagster.catalog.base import VendedCredentials
    from governed_ft_dagster.storage import put_json

    target = tmp_path / "landing" / "risk_factors.json"
    creds = VendedCredentials(tmp_path.as_uri(), "PATH_READ_WRITE", None)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for i in range(300):
                put_json(target.as_uri(), {"writer": writer, "i": i, "text": "x" * 20_000}, creds)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 299
    assert [p.name for p in target.parent.iterdir()] == ["risk_factors.json"]  # no temp file left behind


def test_put_json_that_cannot_publish_raises_and_leaves_no_temp_file(tmp_path: Path) -> None:
    from governed_ft_dagster.catalog.base import VendedCredentials
    from governed_ft_dagster.storage import put_json

    blocked = tmp_path / "landing" / "risk_factors.json"
    (blocked / "inside").mkdir(parents=True)  # a folder where the document goes: written, then not renamed
    with pytest.raises(OSError):
        put_json(blocked.as_uri(), {"a": 1}, VendedCredentials(tmp_path.as_uri(), "PATH_READ_WRITE", None))
    assert [p.name for p in blocked.parent.iterdir()] == ["risk_factors.json"]


def test_a_fetch_failure_row_fills_a_gap_but_never_replaces_a_row_made_from_the_document(tmp_path: Path) -> None:
    import pyarrow as pa

    from governed_ft_dagster.edgar.landing import AMENDMENT_COLUMNS
    from governed_ft_dagster.ingest import CHANGED_WHEN
    from governed_ft_dagster.storage import merge_rows, read_delta

    location = str(tmp_path / "raw")
    schema = pa.schema([("accession_number", pa.string()), ("status", pa.string()), ("text_sha256", pa.string()),
                        ("extractor_version", pa.string()), *((c, pa.string()) for c in AMENDMENT_COLUMNS)])
    rows = lambda *r: pa.Table.from_pylist([dict(zip(schema.names, x)) for x in r], schema=schema)  # noqa: E731
    merge_rows(location, rows(("a", "extracted", "h1", "v1"), ("b", "fetch_failed", "e0", "v1")), "accession_number",
               {}, CHANGED_WHEN)
    merge_rows(location, rows(("a", "fetch_failed", "e0", "v1"), ("b", "extracted", "h2", "v1"),
                              ("c", "fetch_failed", "e0", "v1")), "accession_number", {}, CHANGED_WHEN)
    table, _ = read_delta(location, {})
    assert sorted((r["accession_number"], r["status"], r["text_sha256"]) for r in table.to_pylist()) == [
        ("a", "extracted", "h1"), ("b", "extracted", "h2"), ("c", "fetch_failed", "e0")]
