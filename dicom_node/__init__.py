"""The DICOM side of the node: storage SCP, spool, recorder, stability monitor, SCU."""
