"""The DICOM side of the node, in rooms named by role.

- :mod:`dicom_node.scp`: the Storage SCP - listening socket, associations (the
  Upper Layer loop), PDUs, DIMSE command sets, negotiation; where a C-STORE is
  received and its status sent back.
- :mod:`dicom_node.store`: what happens to a received dataset - the receive
  file, the header scan and full parse, the spool; :mod:`dicom_node.store.c_store`
  decides the status a C-STORE is answered with.
- :mod:`dicom_node.recording`: the instance's study, series and instance rows
  (:mod:`dicom_node.recording.recorder` writes them).
- :mod:`dicom_node.receivers`: the optional pool of receiver processes (off by default).
- :mod:`dicom_node.commitment`: Storage Commitment, the request sent and the reports received.
- :mod:`dicom_node.scu`: C-STORE of results to destinations.
"""
