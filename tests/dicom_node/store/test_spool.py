"""The instance spool: durable placement, safe names, no partial files."""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

import pytest

from core.files import PARTIAL_SUFFIX
from dicom_node.store.receive import ReceiveFile
from dicom_node.store.spool import InstanceSpool, safe_component

STUDY = "1.2.826.0.1.3680043.8.498.10"
SERIES = "1.2.826.0.1.3680043.8.498.11"
SOP = "1.2.826.0.1.3680043.8.498.12"


@pytest.fixture
def spool(tmp_path: Path) -> InstanceSpool:
    return InstanceSpool(tmp_path / "spool" / "incoming")


def receive_file(tmp_path: Path, content: bytes) -> ReceiveFile:
    folder = tmp_path / "spool" / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return ReceiveFile(folder, content)


@pytest.fixture
def received(tmp_path: Path) -> ReceiveFile:
    return receive_file(tmp_path, b"\0" * 128 + b"DICM" + b"payload")


def only_from(received: ReceiveFile, error: int) -> object:
    """An ``os.replace`` that fails with ``error`` when moving the received file."""
    real_replace = os.replace

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(src) == received.path:
            raise OSError(error, os.strerror(error))
        real_replace(src, dst)

    return replace


def all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_commit_renames_into_study_series_sop(spool: InstanceSpool, received: ReceiveFile) -> None:
    content = b"\0" * 128 + b"DICM" + b"payload"
    relative = spool.relative_path(STUDY, SERIES, SOP)

    stored = spool.commit(received, relative)

    assert relative == PurePosixPath(STUDY, SERIES, SOP + ".dcm")
    final = spool.root / STUDY / SERIES / f"{SOP}.dcm"
    assert stored.relative_path == relative
    assert stored.size_bytes == len(content)
    assert final.read_bytes() == content
    assert oct(final.stat().st_mode & 0o777) == oct(0o600)
    assert not received.path.exists()  # moved, not copied
    assert all_files(spool.root) == [final]


def test_commit_copies_across_file_systems(
    spool: InstanceSpool, received: ReceiveFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"\0" * 128 + b"DICM" + b"payload"
    monkeypatch.setattr(os, "replace", only_from(received, errno.EXDEV))

    stored = spool.commit(received, spool.relative_path(STUDY, SERIES, SOP))

    assert spool.absolute(stored.relative_path).read_bytes() == content
    assert stored.size_bytes == len(content)
    assert all_files(spool.root) == [spool.absolute(stored.relative_path)]


def test_commit_replaces_an_earlier_copy(spool: InstanceSpool, tmp_path: Path) -> None:
    relative = spool.relative_path(STUDY, SERIES, SOP)
    for payload in (b"first", b"second, longer"):
        stored = spool.commit(receive_file(tmp_path, payload), relative)

    assert spool.absolute(relative).read_bytes() == b"second, longer"
    assert stored.size_bytes == len(b"second, longer")
    assert len(all_files(spool.root)) == 1


def test_commit_makes_a_removed_series_folder_again(spool: InstanceSpool, tmp_path: Path) -> None:
    first = spool.relative_path(STUDY, SERIES, SOP)
    spool.commit(receive_file(tmp_path, b"first"), first)
    # an operator removes the study while the node runs; the spool remembered its folder
    for path in all_files(spool.root):
        path.unlink()
    spool.absolute(first).parent.rmdir()
    spool.absolute(first).parent.parent.rmdir()
    second = spool.relative_path(STUDY, SERIES, SOP + ".2")

    stored = spool.commit(receive_file(tmp_path, b"second"), second)

    assert spool.absolute(stored.relative_path).read_bytes() == b"second"
    assert spool.holds(second) and not spool.holds(first)


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc",
        "..",
        "/etc/passwd",
        "1.2.3/../../x",
        "1.2.3\\..\\x",
        "1.2." + "3" * 100,  # a plain UID, but too long
        "x" * 300,  # longer than a file name may be
        "",
    ],
)
def test_hostile_uids_become_hashed_names_inside_the_spool(
    spool: InstanceSpool, received: ReceiveFile, hostile: str
) -> None:
    relative = spool.relative_path(hostile, hostile, hostile)

    stored = spool.commit(received, relative)

    final = spool.absolute(stored.relative_path).resolve()
    assert final.is_relative_to(spool.root.resolve())
    assert len(relative.parts) == 3
    for part in relative.parts:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\\" not in part
        assert len(part) <= 64
    assert relative.parts[0].startswith("x")
    assert final.is_file()


def test_safe_component() -> None:
    assert safe_component(SOP) == SOP
    hashed = safe_component("../../etc")
    assert hashed == safe_component("../../etc")  # stable
    assert hashed != safe_component("../../etd")
    assert hashed.startswith("x") and len(hashed) == 41
    assert safe_component("1.2.3.") != "1.2.3."  # not a plain UID


def test_failing_rename_leaves_nothing_in_the_spool(
    spool: InstanceSpool, received: ReceiveFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", only_from(received, errno.ENOSPC))
    relative = spool.relative_path(STUDY, SERIES, SOP)

    with pytest.raises(OSError) as raised:
        spool.commit(received, relative)

    assert raised.value.errno == errno.ENOSPC
    assert not spool.absolute(relative).exists()
    assert all_files(spool.root) == []


def test_failing_copy_leaves_no_partial_file(
    spool: InstanceSpool, received: ReceiveFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", only_from(received, errno.EXDEV))
    monkeypatch.setattr("shutil.copyfileobj", disk_full)
    relative = spool.relative_path(STUDY, SERIES, SOP)

    with pytest.raises(OSError, match="No space left"):
        spool.commit(received, relative)

    assert all_files(spool.root) == []
    assert received.path.exists()  # the received file is untouched; the caller may retry


def test_remove_partials(spool: InstanceSpool) -> None:
    folder = spool.root / STUDY / SERIES
    folder.mkdir(parents=True)
    keep = folder / f"{SOP}.dcm"
    keep.write_bytes(b"complete")
    leftovers = [
        folder / f".{SOP}.dcm.0123abcd{PARTIAL_SUFFIX}",
        spool.root / STUDY / f".other.dcm.ffff{PARTIAL_SUFFIX}",
    ]
    for path in leftovers:
        path.write_bytes(b"half")

    assert spool.remove_partials() == 2
    assert all_files(spool.root) == [keep]
    assert spool.remove_partials() == 0


def test_discarding_a_stored_file_leaves_its_old_name_alone(
    spool: InstanceSpool, received: ReceiveFile
) -> None:
    spool.commit(received, spool.relative_path(STUDY, SERIES, SOP))
    # Another association's new receive file may get the freed temp name.
    received.path.write_bytes(b"someone else's instance")

    received.discard()

    assert received.path.read_bytes() == b"someone else's instance"


def test_discarding_after_a_copy_removes_the_received_file(
    spool: InstanceSpool, received: ReceiveFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", only_from(received, errno.EXDEV))
    spool.commit(received, spool.relative_path(STUDY, SERIES, SOP))
    monkeypatch.undo()

    received.discard()

    assert not received.path.exists()
