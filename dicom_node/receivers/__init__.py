"""The optional pool of receiver processes behind the DICOM port (off by default).

With the default ``AINODE_RECEIVER_PROCESSES=1`` none of this runs: the main
process serves every association itself.  With N > 1,
:mod:`~dicom_node.receivers.pool` starts N children
(:mod:`~dicom_node.receivers.process`, ``python -m dicom_node.receivers.process``)
and hands each accepted connection to one of them
(:mod:`~dicom_node.receivers.handoff`).  Nothing is imported here, so that a
child stays lean.
"""
