"""Storage Commitment (push model, PS3.4 Annex J), both halves.

:mod:`~dicom_node.commitment.request` sends the N-ACTION asking a destination to
commit what it was sent; :mod:`~dicom_node.commitment.inbox` keeps the
N-EVENT-REPORT the destination sends back to the SCP, durably, until it is applied.
"""
