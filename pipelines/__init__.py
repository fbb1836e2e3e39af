"""Modality pipelines (one module each), their volume loading and their DICOM outputs."""
