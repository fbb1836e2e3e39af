"""Property-based fuzzing of the SCP's PDU and DIMSE parsing (hypothesis), on loopback.

Each example is one connection: an optional valid association, then PDUs
whose types, length fields, PDV items, command sets and datasets are drawn
from broken variants of valid ones (lying lengths, unknown types, truncated
or mutated command sets and datasets).  Whatever comes, the node must stay
alive, answer a normal storescu afterwards, and leave no partial file, and no
file without its row (nor a row without its file).

``make test`` runs a short, reproducible run (``FUZZ_EXAMPLES``, default 60,
derandomized); ``make fuzz`` a long random one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.db.models import Instance
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.dicom_node.conftest import Node
from tests.support.dcmtk import storescu
from tests.support.raw_dicom import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    VERIFICATION,
    Part10,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    pdv,
)
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
LONG_RUN = EXAMPLES > 1000
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: How long each example waits for the node's answer before it resets the connection.
ANSWER_WAIT_SECONDS = 0.05


def _valid_dataset() -> Part10:
    """A small CT instance as it goes on the wire (the seed of the mutated datasets)."""
    with tempfile.TemporaryDirectory() as folder:
        phantom = generate_ct_phantom(slices=1, rows=8, columns=8, seed=3)
        (path,) = write_phantom(phantom, Path(folder))
        return Part10.read(path)


VALID = _valid_dataset()


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut, extended, or with a few bytes overwritten."""
    flips = st.lists(
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8
    )

    def flip(changes: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for position, value in changes:
            out[position] = value
        return bytes(out)

    return st.one_of(
        st.integers(0, len(data)).map(lambda cut: data[:cut]),
        st.binary(max_size=64).map(lambda tail: data + tail),
        flips.map(flip),
    )


def _pdu(pdu_type: int, body: bytes, length: int | None) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body) if length is None else length) + body


LENGTHS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 3, 4, 5, 0xFFFF, 0x10000000, 0xFFFFFFFF]),
    st.integers(0, 1 << 20),
)
PDU_TYPES = st.one_of(st.integers(1, 7), st.integers(0, 255))

COMMANDS = st.one_of(
    _mutated(c_echo_rq(1)),
    _mutated(c_store_rq(2, CT_IMAGE, VALID.sop_instance)),
    st.binary(max_size=256),
)
DATASETS = st.one_of(_mutated(VALID.dataset), st.binary(max_size=512))


@st.composite
def p_data_pdus(draw: st.DrawFn) -> bytes:
    """A P-DATA-TF PDU with a command and/or dataset PDV, each possibly broken."""
    items = []
    context_id = draw(st.sampled_from([1, 3, 5, 255]))
    if draw(st.booleans()):
        items.append(pdv(context_id, draw(COMMANDS), command=True, last=draw(st.booleans())))
    if draw(st.booleans()):
        items.append(pdv(context_id, draw(DATASETS), command=False, last=draw(st.booleans())))
    if draw(st.booleans()):
        items.append(draw(st.binary(max_size=32)))  # a stray or broken item header
    return _pdu(0x04, b"".join(items), draw(st.one_of(st.none(), LENGTHS)))


OTHER_PDUS = st.builds(_pdu, PDU_TYPES, st.binary(max_size=128), LENGTHS)
REQUEST = associate_rq(
    "AINODE", "FUZZ", [(1, VERIFICATION, [IMPLICIT_VR_LE]), (3, CT_IMAGE, [EXPLICIT_VR_LE])]
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """(first bytes, then PDUs): a valid or mutated association request, then the rest."""
    first = draw(st.one_of(st.just(REQUEST), _mutated(REQUEST), OTHER_PDUS))
    rest = draw(st.lists(st.one_of(p_data_pdus(), OTHER_PDUS), max_size=4))
    return first, rest


def _converse(port: int, first: bytes, rest: list[bytes]) -> None:
    """Send ``first``, read the answer briefly, send the rest, then reset the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        sock.sendall(first)
        for data in rest:
            sock.settimeout(ANSWER_WAIT_SECONDS)
            with contextlib.suppress(OSError):
                if sock.recv(65536) == b"":
                    return  # the node closed it
            sock.sendall(data)
        sock.settimeout(ANSWER_WAIT_SECONDS)
        with contextlib.suppress(OSError):
            sock.recv(65536)
    except OSError:
        return  # the node closed or reset it
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _consistent(node: Node) -> None:
    """No partial file; every spooled file has its row and every row its file."""
    assert node.receive_leftovers() == []
    with node.session() as session:
        recorded = {
            node.settings.incoming_dir / path for path in session.scalars(select(Instance.path))
        }
    assert set(node.spooled_files()) == recorded


@pytest.mark.timeout(3600 if LONG_RUN else 600)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the fuzzed UIDs it decodes
def test_fuzzed_pdus_leave_the_node_alive_and_consistent(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not LONG_RUN,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(conversations())
    def fuzz(conversation: tuple[bytes, list[bytes]]) -> None:
        _converse(node.port, *conversation)

    fuzz()
    tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert tracebacks == [], "a peer's bytes raised an unexpected exception"

    files = write_phantom(generate_ct_phantom(slices=2, rows=16, columns=16, seed=4), tmp_path)
    result = storescu("127.0.0.1", node.port, files, node.settings.ae_title)
    assert result.returncode == 0, result.stderr
    assert sorted(result.succeeded) == sorted(map(str, files)), result.stderr
    # Threads of connections the fuzz reset may still be closing their files.
    wait_until(lambda: node.receive_leftovers() == [], 10, 0.05)
    _consistent(node)
