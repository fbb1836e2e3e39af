"""The Storage SCP: the node's own acceptor, in pynetdicom's layers.

:mod:`~dicom_node.scp.server` listens and runs a thread per association;
:mod:`~dicom_node.scp.association` is the Upper Layer loop of one association
(A-ASSOCIATE to release or abort) and answers each DIMSE request;
:mod:`~dicom_node.scp.pdu` reads and writes PDUs, :mod:`~dicom_node.scp.dimse`
command sets, :mod:`~dicom_node.scp.negotiation` decides who may associate and on
what terms.  :mod:`~dicom_node.scp.settings` is what the SCP reads of the
node's settings.
"""
