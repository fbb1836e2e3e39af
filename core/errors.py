"""Error taxonomy of the node (DIMSE status codes: :mod:`core.dicom_status`).

Errors are split by what the caller should do about them:

* :class:`InputRejected` - the input itself is unusable; retrying is pointless.
* :class:`TransientError` - a peer or resource is briefly unavailable; retry.
* :class:`PipelineError` - a pipeline could not analyse a series (bad
  geometry, too few slices); the job fails with this reason, others go on.
"""

from __future__ import annotations

from core.dicom_status import StoreStatus


class NodeError(Exception):
    """Base of every error the node raises on purpose."""


class InputRejected(NodeError):
    """The received data cannot be used (missing UIDs, unreadable dataset).

    ``status`` is the DIMSE status the Storage SCP answers for it.
    """

    def __init__(self, message: str, status: int = StoreStatus.CANNOT_UNDERSTAND) -> None:
        super().__init__(message)
        self.status = status


class TransientError(NodeError):
    """A resource or peer is unavailable for now; the operation may be retried."""


class PipelineError(NodeError):
    """A pipeline cannot produce a result for this input; the reason is recorded."""


class ContentOutsideDomain(PipelineError):
    """The image does not show what the pipeline analyses (checked on the pixels, not the tags).

    The job is skipped with this reason, like a header outside the validated
    domain: a pipeline never reports an organ the image does not show.
    """


class ConfigurationError(NodeError):
    """The settings are inconsistent (unknown pipeline, bad destination)."""
