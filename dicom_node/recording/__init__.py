"""The database rows of received instances: where a stored instance's row is written.

:mod:`~dicom_node.recording.received` is what the SCP hands on for each instance
(no SQLAlchemy: receiver processes import it); :mod:`~dicom_node.recording.recorder`
writes the study, series and instance rows; :mod:`~dicom_node.recording.group_commit`
commits the rows that arrive together in one transaction;
:mod:`~dicom_node.recording.remote` records the rows of receiver processes in the
main process; :mod:`~dicom_node.recording.refusals` counts refused instances off the
path of the SCP's answers.  Nothing is imported here, so that a receiver process loading
``received`` loads nothing of the database layer.
"""
