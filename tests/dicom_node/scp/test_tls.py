"""DICOM TLS: the SCP requires a client certificate from the configured CA; the SCU verifies."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from core.config import Destination, Settings
from core.tls import client_context
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings
from dicom_node.scu import store_files
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.certificates import Identity, ThrowawayCA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = ThrowawayCA(folder / "ca"), ThrowawayCA(folder / "rogue", "rogue-ca")
    return {
        "ca": ca,
        "server": ca.issue("node"),
        "client": ca.issue("pacs"),
        "rogue_client": rogue.issue("intruder"),
    }


@pytest.fixture
def tls_scp(make_settings, session_factory, pki) -> Iterator[tuple[StorageSCP, Settings]]:
    server: Identity = pki["server"]  # type: ignore[assignment]
    settings = make_settings(
        tls_cert_file=server.cert, tls_key_file=server.key, tls_ca_file=pki["ca"].cert
    )
    scp = StorageSCP(ScpSettings.from_settings(settings), GroupCommitRecorder(session_factory))
    scp.start()
    yield scp, settings
    scp.stop()


def _client_settings(make_settings, pki, identity: Identity | None) -> Settings:
    values: dict[str, object] = {"tls_ca_file": pki["ca"].cert}
    if identity is not None:
        values.update(tls_cert_file=identity.cert, tls_key_file=identity.key)
    return make_settings(**values)


def _echo(port: int, settings: Settings) -> bool:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="AINODE", tls_args=(client_context(settings), "127.0.0.1")
    )
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status == 0


def test_client_with_a_certificate_from_the_ca_is_served(tls_scp, make_settings, pki) -> None:
    scp, _ = tls_scp
    assert _echo(scp.port, _client_settings(make_settings, pki, pki["client"]))


def test_client_with_a_foreign_certificate_is_refused(tls_scp, make_settings, pki) -> None:
    scp, _ = tls_scp
    assert not _echo(scp.port, _client_settings(make_settings, pki, pki["rogue_client"]))


def test_client_without_a_certificate_is_refused(tls_scp, make_settings, pki) -> None:
    scp, _ = tls_scp
    assert not _echo(scp.port, _client_settings(make_settings, pki, None))


def test_plain_dicom_is_refused_by_a_tls_scp(tls_scp) -> None:
    scp, _ = tls_scp
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assert not ae.associate("127.0.0.1", scp.port, ae_title="AINODE").is_established


def test_scu_sends_results_over_tls(tls_scp, make_settings, pki, tmp_path: Path) -> None:
    scp, _ = tls_scp
    files = write_phantom(generate_ct_phantom(slices=3, rows=32, columns=32), tmp_path / "ct")
    sender = _client_settings(make_settings, pki, pki["client"])
    destination = Destination(ae_title="AINODE", host="127.0.0.1", port=scp.port, tls=True)
    outcomes = store_files(destination, files, calling_ae="PACS", tls=client_context(sender))
    assert [outcome.ok for outcome in outcomes] == [True] * 3
    assert len(list(scp.spool.root.rglob("*.dcm"))) == 3


def test_destination_tls_flag_round_trips() -> None:
    destination = Destination.parse("PACS@127.0.0.1:2762/tls")
    assert destination.tls and str(destination) == "PACS@127.0.0.1:2762/tls"


def test_a_handshake_trickled_in_is_cut_at_the_acse_timeout(
    make_settings, session_factory, pki
) -> None:
    """ARTIM covers the TLS handshake too: slow bytes do not keep a connection open."""
    server: Identity = pki["server"]  # type: ignore[assignment]
    settings = make_settings(
        tls_cert_file=server.cert, tls_key_file=server.key, acse_timeout_seconds=1
    )
    scp = StorageSCP(ScpSettings.from_settings(settings), GroupCommitRecorder(session_factory))
    scp.start()
    hello = b"\x16\x03\x01\x02\x00" + bytes(512)  # a TLS record header, then a slow body
    try:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as sock:
            sent = 0
            for sent in range(len(hello)):
                try:
                    sock.sendall(hello[sent : sent + 1])
                except OSError:
                    break
                time.sleep(0.05)  # 20 bytes/s: every read well within 1 s
                if select.select([sock], [], [], 0)[0]:
                    break
            assert sent < len(hello) - 1, "the handshake was never cut off"
    finally:
        scp.stop()


def test_the_handshake_time_counts_against_the_acse_timeout(
    make_settings, session_factory, pki
) -> None:
    """ARTIM runs from the connection: a late handshake leaves the request only what is left."""
    server: Identity = pki["server"]  # type: ignore[assignment]
    client = _client_settings(make_settings, pki, pki["client"])
    settings = make_settings(
        tls_cert_file=server.cert,
        tls_key_file=server.key,
        tls_ca_file=pki["ca"].cert,
        acse_timeout_seconds=4,
    )
    scp = StorageSCP(ScpSettings.from_settings(settings), GroupCommitRecorder(session_factory))
    scp.start()
    try:
        raw = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
        time.sleep(3.0)  # 3 of the 4 s pass before the client says hello
        with client_context(client).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            handshaken = time.monotonic()
            assert sock.recv(1) == b""  # no A-ASSOCIATE-RQ: the node closes the connection
            waited = time.monotonic() - handshaken
    finally:
        scp.stop()
    assert waited < 3.0  # the remaining second, not a fresh 4 s
