"""The Storage SCP's settings: taken from the node's, sent to a receiver process as JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.config import Settings
from dicom_node.scp.settings import ScpSettings


def test_the_allow_list_admits_callers_by_ae_title_and_host(
    make_settings: Callable[..., Settings],
) -> None:
    scp = ScpSettings.from_settings(make_settings(allowed_callers="MODALITY, PACS@10.0.0.5"))

    assert scp.admits("MODALITY", "192.168.1.1")
    assert scp.admits("MODALITY  ", "192.168.1.1")  # AE titles are space-padded on the wire
    assert not scp.admits("OTHER", "192.168.1.1")
    assert scp.admits("PACS", "10.0.0.5")
    assert not scp.admits("PACS", "10.0.0.6")
    # MODALITY may call from anywhere, so no host is refused before its AE title is known
    assert scp.allowed_hosts is None


def test_callers_pinned_to_hosts_refuse_other_hosts_outright(
    make_settings: Callable[..., Settings],
) -> None:
    scp = ScpSettings.from_settings(make_settings(allowed_callers="PACS@10.0.0.5, CT@10.0.0.9"))

    assert scp.allowed_hosts == frozenset({"10.0.0.5", "10.0.0.9"})


def test_an_empty_allow_list_admits_every_caller(make_settings: Callable[..., Settings]) -> None:
    scp = ScpSettings.from_settings(make_settings())

    assert scp.admits("ANYONE", "10.1.2.3")
    assert scp.allowed_hosts is None


def test_the_settings_arrive_in_a_receiver_process_unchanged(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        allowed_callers="PACS@10.0.0.5, CT",
        tls_cert_file=tmp_path / "node.crt",
        tls_key_file=tmp_path / "node.key",
        max_pdu_size=1 << 20,
    )
    scp = ScpSettings.from_settings(settings)

    assert ScpSettings.from_json(scp.to_json()) == scp
    assert scp.incoming_dir == settings.incoming_dir
    assert scp.max_pdu_size == 1 << 20 and scp.ae_title == settings.ae_title
    assert scp.allowed_callers == (("PACS", "10.0.0.5"), ("CT", None))
    assert scp.tls_enabled and scp.tls_ca_file is None
