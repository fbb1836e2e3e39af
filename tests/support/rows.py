"""Rows of received instances as the Storage SCP records them, for recorder tests."""

from __future__ import annotations

from dicom_node.recording.received import ReceivedInstance


def received_instance(study: int = 1, sop: int = 1) -> ReceivedInstance:
    """The row of CT instance ``sop`` in the one series of study ``study``."""
    return ReceivedInstance(
        study_uid=f"1.2.3.{study}",
        series_uid=f"1.2.3.{study}.1",
        sop_instance_uid=f"1.2.3.{study}.1.{sop}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        body_part=None,
        series_description=None,
        calling_ae="SCU",
        path=f"{study}/{sop}.dcm",
        size_bytes=10,
    )
