"""The node's DIMSE status codes against pynetdicom's tables of PS3.4 and PS3.7."""

from __future__ import annotations

from enum import IntEnum

import pytest
from pynetdicom.status import (
    GENERAL_STATUS,
    STORAGE_SERVICE_CLASS_STATUS,
    VERIFICATION_SERVICE_CLASS_STATUS,
)

from core.dicom_status import (
    PEER_STORED,
    EventReportStatus,
    GeneralStatus,
    StoreStatus,
    VerificationStatus,
)


@pytest.mark.parametrize(
    ("statuses", "table"),
    [
        (GeneralStatus, GENERAL_STATUS),
        (VerificationStatus, VERIFICATION_SERVICE_CLASS_STATUS),
        (StoreStatus, STORAGE_SERVICE_CLASS_STATUS),
        (EventReportStatus, GENERAL_STATUS),
    ],
)
def test_each_answered_status_is_the_standard_s_with_its_category(
    statuses: type[IntEnum], table: dict[int, tuple[str, str]]
) -> None:
    for status in statuses:
        category, _description = table[status]
        assert category == ("Success" if status.name == "SUCCESS" else "Failure"), status


def test_peer_stored_is_success_and_the_storage_warnings() -> None:
    known = {**GENERAL_STATUS, **STORAGE_SERVICE_CLASS_STATUS}
    # 0x0001, a warning outside pynetdicom's general and storage tables, is the one code not listed
    assert {known[code][0] for code in PEER_STORED - {0x0001}} == {"Success", "Warning"}
    warnings = {code for code, (category, _) in known.items() if category == "Warning"}
    assert warnings <= PEER_STORED
