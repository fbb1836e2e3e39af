"""What the SCP stores and refuses, sent by real senders (storescu, pynetdicom, raw sockets).

The rule: every dataset a conformant archive stores is stored (deflate,
float pixel data, 4:2:2 colour, retired SOP classes, the pydicom corpus in
its own transfer syntaxes), and bytes that are not one complete dataset
(garbage after the last element, encapsulated pixel data cut short) get
0xC000 with nothing spooled and no row.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ParametricMapStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dsutils import encode
from sqlalchemy import select

from core.db.models import Instance
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.dicom_node.conftest import Node
from tests.support.dcmtk import storescu
from tests.support.raw_dicom import Part10, RawAssociation

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000


def _stored_uids(node: Node) -> set[str]:
    return {path.stem for path in node.spooled_files()}


def _nothing_kept(node: Node) -> None:
    assert node.spooled_files() == []
    assert node.receive_leftovers() == []
    assert node.count(Instance) == 0


def _pynetdicom_store(node: Node, dataset: Dataset, transfer_syntax: str) -> int:
    ae = AE(ae_title="PYNETDICOM")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(dataset.SOPClassUID, transfer_syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.settings.ae_title)
    try:
        assert assoc.is_established
        return int(assoc.send_c_store(dataset).Status)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


# ------------------------------------------------------------------ valid data (items 1-4)
def test_deflated_explicit_vr_is_stored(node: Node, tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=64, columns=64).datasets[0]
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    dataset.save_as(path, enforce_file_format=True)
    deflated = dcmread(path)

    assert _pynetdicom_store(node, deflated, DeflatedExplicitVRLittleEndian) == SUCCESS

    (stored,) = node.spooled_files()
    assert dcmread(stored).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert dcmread(stored).pixel_array.shape == (64, 64)


def test_deflated_from_storescu_is_stored(node: Node, tmp_path: Path) -> None:
    files = write_phantom(generate_ct_phantom(slices=2, rows=32, columns=32), tmp_path / "send")

    result = storescu("127.0.0.1", node.port, files, node.settings.ae_title, extra_args=["-xd"])

    assert result.returncode == 0, result.stderr
    assert sorted(result.succeeded) == sorted(map(str, files)), result.stderr
    with node.session() as session:
        syntaxes = session.scalars(select(Instance.transfer_syntax_uid)).all()
    assert syntaxes == [DeflatedExplicitVRLittleEndian] * 2


def _parametric_map(keyword: str, item_bytes: int) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = ParametricMapStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "MR"
    dataset.Rows = dataset.Columns = 8
    dataset.NumberOfFrames = 2
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = item_bytes * 8
    setattr(dataset, keyword, bytes(8 * 8 * 2 * item_bytes))
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


@pytest.mark.parametrize(
    ("keyword", "item_bytes"), [("FloatPixelData", 4), ("DoubleFloatPixelData", 8)]
)
def test_float_pixel_data_is_stored(node: Node, keyword: str, item_bytes: int) -> None:
    dataset = _parametric_map(keyword, item_bytes)

    assert _pynetdicom_store(node, dataset, ExplicitVRLittleEndian) == SUCCESS
    assert _stored_uids(node) == {dataset.SOPInstanceUID}


def test_short_float_pixel_data_is_still_refused(node: Node) -> None:
    dataset = _parametric_map("FloatPixelData", 4)
    dataset.FloatPixelData = bytes(8 * 8 * 4)  # one frame of the two declared

    assert _pynetdicom_store(node, dataset, ExplicitVRLittleEndian) == CANNOT_UNDERSTAND
    _nothing_kept(node)


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_422_uncompressed.dcm",  # 4:2:2 colour, uncompressed (item 3)
        "color-pl.dcm",  # retired Ultrasound Image Storage (item 4)
    ],
)
def test_reference_files_are_stored_by_storescu(node: Node, name: str) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]

    result = storescu("127.0.0.1", node.port, [path], node.settings.ae_title, extra_args=["-R"])

    assert result.succeeded == [str(path)], result.stderr
    assert _stored_uids(node) == {str(dcmread(path).SOPInstanceUID)}


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, process 14 (storescu has no -x flag for it)
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    ],
)
def test_syntaxes_storescu_cannot_propose_are_stored_from_pynetdicom(
    node: Node, syntax: str
) -> None:
    """The node never decodes pixel data: encapsulated fragments in any syntax are kept as sent."""
    dataset = dcmread(get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    dataset.file_meta.TransferSyntaxUID = syntax

    assert _pynetdicom_store(node, dataset, syntax) == SUCCESS

    with node.session() as session:
        assert session.scalars(select(Instance.transfer_syntax_uid)).all() == [syntax]


# ------------------------------------------------------------------ malformed data (items 5, 6)
def _phantom_part10(tmp_path: Path) -> Part10:
    (path,) = write_phantom(generate_ct_phantom(slices=1, rows=16, columns=16), tmp_path)
    return Part10.read(path)


def test_garbage_after_the_last_element_is_refused(node: Node, tmp_path: Path) -> None:
    item = _phantom_part10(tmp_path)
    with RawAssociation(node.port, abstract_syntaxes=(CTImageStorage,)) as assoc:
        for garbage in (b"GARBAGE!!", b"\x00\x01\x02", b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff"):
            status = assoc.c_store_bytes(item.sop_class, item.sop_instance, item.dataset + garbage)
            assert status == CANNOT_UNDERSTAND, garbage
        assert assoc.c_store(item) == SUCCESS  # the association goes on
    assert _stored_uids(node) == {item.sop_instance}
    assert node.count(Instance) == 1
    assert node.receive_leftovers() == []


def test_encapsulated_pixel_data_cut_short_is_refused(node: Node) -> None:
    item = Part10.read(Path(get_testdata_file("MR_small_RLE.dcm")))  # type: ignore[arg-type]
    with RawAssociation(
        node.port, abstract_syntaxes=(item.sop_class,), transfer_syntaxes=(item.transfer_syntax,)
    ) as assoc:
        for cut in (len(item.dataset) // 2, len(item.dataset) - 8, len(item.dataset) - 1):
            status = assoc.c_store_bytes(item.sop_class, item.sop_instance, item.dataset[:cut])
            assert status == CANNOT_UNDERSTAND, cut
    _nothing_kept(node)


# ------------------------------------------------------------------ the corpus
#: Corpus files a conformant archive would not store, each with the reason.
NOT_DATASETS = {
    "MR_truncated.dcm": "its pixel data is cut short",
}


def _corpus_files() -> list[Path]:
    """pydicom's bundled test files and pydicom-data's, each readable as one whole dataset."""
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent)
    except ImportError:
        pass
    wanted = []
    for path in sorted(p for root in roots for p in root.rglob("*") if p.is_file()):
        if path.name in NOT_DATASETS:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = dcmread(path)
                list(dataset.iterall())
            uids = [
                dataset.SOPClassUID,
                dataset.SOPInstanceUID,
                dataset.StudyInstanceUID,
                dataset.SeriesInstanceUID,
            ]
            meta = dataset.file_meta
            syntax = meta.TransferSyntaxUID
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoded = encode(
                    dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
                )
        except Exception:
            continue  # not a Part-10 dataset, or one without the UIDs every archive files by
        if (
            all(uids)
            and encoded is not None  # else no sender can send it
            and meta.get("MediaStorageSOPInstanceUID") == dataset.SOPInstanceUID
        ):
            wanted.append(path)
    return wanted


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """The corpus, with one file per SOP Instance UID (several test files share one)."""
    folder = tmp_path_factory.mktemp("corpus")
    seen: set[str] = set()
    files = []
    for path in _corpus_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if uid not in seen:
            seen.add(uid)
            files.append(Path(shutil.copy(path, folder / f"{len(files):03d}-{path.name}")))
    yield files


def _send_over_few_associations(node: Node, files: list[Path]) -> dict[str, int]:
    """C-STORE each file in its own transfer syntax: one context per (SOP class, syntax).

    pynetdicom proposes at most 128 contexts an association, so the corpus
    goes over as few associations as that allows.  Returns each file's status.
    """
    datasets = {path: dcmread(path) for path in files}
    for dataset in datasets.values():
        list(dataset.iterall())  # resolves the VRs of elements read in implicit VR
    pairs = sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets.values()}
    )
    statuses: dict[str, int] = {}
    for start in range(0, len(pairs), 128):
        batch = set(pairs[start : start + 128])
        ae = AE(ae_title="CORPUS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for sop_class, syntax in sorted(batch):
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.settings.ae_title)
        try:
            assert assoc.is_established
            for path, dataset in datasets.items():
                pair = (str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID))
                if pair in batch:
                    response = assoc.send_c_store(dataset)
                    statuses[path.name] = int(response.get("Status", -1))
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()
    return statuses


def test_the_pydicom_corpus_is_stored_in_its_own_transfer_syntaxes(
    node: Node, corpus: list[Path]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = _send_over_few_associations(node, corpus)

    assert len(statuses) == len(corpus) > 100
    refused = {name: hex(status) for name, status in statuses.items() if status != SUCCESS}
    assert refused == {}
    assert node.count(Instance) == len(corpus)
    assert node.receive_leftovers() == []
