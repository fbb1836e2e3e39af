"""What the SCP negotiates, and that the conformance statement says so."""

from __future__ import annotations

import re
from pathlib import Path

from pynetdicom import AllStoragePresentationContexts

from dicom_node.scp.negotiation import (
    preferred_transfer_syntaxes,
    storage_sop_classes,
    supported_contexts,
)

STATEMENT = Path(__file__).parents[3] / "docs" / "conformance-statement.md"


def test_every_storage_class_is_accepted_retired_ones_included() -> None:
    classes = storage_sop_classes()
    assert {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} <= set(classes)
    assert "1.2.840.10008.5.1.4.1.1.6" in classes  # Ultrasound Image Storage (retired)
    assert "1.2.840.10008.1.20.1" not in classes  # Storage Commitment is a service, not storage
    assert len(classes) == len(set(classes))
    accepted = {str(cx.abstract_syntax) for cx in supported_contexts()}
    assert set(classes) <= accepted


def test_the_conformance_statement_lists_what_the_node_accepts() -> None:
    text = STATEMENT.read_text()
    listed = set(re.findall(r"^\| [^|]+ \| `([0-9.]+)` \|$", text, re.MULTILINE))
    assert listed == set(storage_sop_classes())
    syntaxes = re.findall(r"^\| \d+ \| [^|]+ \| `([0-9.]+)` \|$", text, re.MULTILINE)
    assert syntaxes == preferred_transfer_syntaxes()
