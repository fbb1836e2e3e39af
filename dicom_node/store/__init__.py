"""A received C-STORE dataset, from its receive file to its durable place in the spool.

:mod:`~dicom_node.store.c_store` answers a C-STORE: it checks the dataset
(:mod:`~dicom_node.store.header`, :mod:`~dicom_node.store.structure`), moves it
durably into the spool (:mod:`~dicom_node.store.spool`), has its row recorded
(:mod:`dicom_node.recording`) and returns the status to send.  The dataset
arrives into a :mod:`~dicom_node.store.receive` file whose writeback starts
early (:mod:`~dicom_node.store.writeback`).
"""
