"""Who made a result: the equipment and algorithm recorded in SEG and SR.

Both output objects must name the device that created them (General
Equipment module: Manufacturer, Manufacturer's Model Name, Device Serial
Number, Software Versions) and the algorithm behind every segment or
measurement.  :class:`ResultProvenance` carries these facts once so that
the SEG and the SR of a job can never disagree about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = ["ResultProvenance"]


@dataclass(frozen=True, kw_only=True)
class ResultProvenance:
    """The node and pipeline that produced one SEG/SR pair.

    Parameters
    ----------
    manufacturer:
        Developer of the software (``Manufacturer``).
    node_version:
        Version of pacs-ai-node itself.
    pipeline_name:
        Name of the pipeline; used as ``ManufacturerModelName`` and as the
        algorithm name.
    pipeline_version:
        Version of the pipeline; used as the algorithm version.
    device_serial_number:
        The node's AE title, so a result can be traced back to the node
        that produced it (``DeviceSerialNumber``).
    parameters:
        Algorithm parameters worth recording (name to value), written to
        the SEG algorithm identification and the SR algorithm parameters.
    demo:
        A demonstration model: the algorithm name and the series
        descriptions say so.
    algorithm_family:
        Family of the algorithm from DICOM CID 7162 "Surface Processing
        Algorithm Families": ``ArtificialIntelligence`` for learned models
        (default); a classical pipeline should say what it is, e.g.
        ``codes.cid7162.HistogramAnalysis`` for thresholding or
        ``codes.cid7162.MorphologicalOperations``.
    """

    manufacturer: str = "pacs-ai-node"
    node_version: str
    pipeline_name: str
    pipeline_version: str
    device_serial_number: str
    parameters: dict[str, str] = field(default_factory=dict, hash=False)
    demo: bool = False
    algorithm_family: Code = codes.cid7162.ArtificialIntelligence

    @property
    def software_versions(self) -> tuple[str, str]:
        """``SoftwareVersions`` values: the node's and the pipeline's version.

        Returns
        -------
        tuple of str
            E.g. ``("pacs-ai-node 0.1.0", "ct-lungs 1.0.0")``.
        """
        return (
            f"{self.manufacturer} {self.node_version}",
            f"{self.pipeline_name} {self.pipeline_version}",
        )

    @property
    def manufacturer_model_name(self) -> str:
        """``ManufacturerModelName``: the pipeline name (the "model" of device)."""
        return self.pipeline_name

    @property
    def algorithm_name(self) -> str:
        """Algorithm name: the pipeline name, marked ``DEMO MODEL`` for a demonstration model."""
        return f"{self.pipeline_name} DEMO MODEL" if self.demo else self.pipeline_name

    @property
    def algorithm_parameters(self) -> list[str]:
        """Parameters as ``"name=value"`` strings, sorted for reproducibility."""
        return [f"{key}={value}" for key, value in sorted(self.parameters.items())]

    def equipment(self) -> dict[str, object]:
        """General Equipment keyword arguments shared by every result constructor."""
        return {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.manufacturer_model_name,
            # a list: pydicom warns when a multi-valued LO is given as a tuple
            "software_versions": list(self.software_versions),
            "device_serial_number": self.device_serial_number,
        }

    def default_series_description(self, kind: str) -> str:
        """Default ``SeriesDescription``, e.g. ``"AI SEG ct-lungs 1.0.0"``.

        A demonstration model's description starts ``"DEMO MODEL AI SEG"``.

        Parameters
        ----------
        kind:
            Short object kind, ``"SEG"`` or ``"SR"``.

        Returns
        -------
        str
            The description cut to the 64 characters a LO value allows.
        """
        prefix = "DEMO MODEL AI" if self.demo else "AI"
        return f"{prefix} {kind} {self.pipeline_name} {self.pipeline_version}"[:64]
