"""What a T1-weighted head MR looks like in its header: the domain ``mr-brain`` accepts.

deepbet was trained and validated on T1-weighted head MR (3D MPRAGE/SPGR and
2D T1).  Weighting is read from the sequence attributes where the header has
them, from the series description where it has none (images converted from
NIfTI often lose every sequence attribute); an image the header says is a
diffusion, perfusion or projection image, a T2 or a FLAIR, or another body
part, is outside.  What the header cannot tell (does the image show a whole
brain?) is checked on the result by the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field
from pydicom import Dataset

from pipelines.domain import InputDomain

__all__ = ["T1HeadDomain", "t1_head_reasons"]

#: ImageType values of images that are not a structural T1 acquisition.
_NOT_STRUCTURAL = frozenset(
    {"ADC", "DIFFUSION", "TRACEW", "FA", "PERFUSION", "LOCALIZER", "MIP", "MOSAIC", "SUBTRACTION"}
)
#: SeriesDescription / ProtocolName naming a T1-weighted sequence.
_T1_NAMES = re.compile(r"t1|mprage|mp2rage|spgr|bravo|tfe\b|flash", re.IGNORECASE)
#: ... or a sequence of another weighting.
_OTHER_NAMES = re.compile(r"t2|flair|dwi|diffusion|adc|swi|bold|pd\b|stir", re.IGNORECASE)


def _number(dataset: Dataset, keyword: str) -> float | None:
    value = dataset.get(keyword)
    return float(value) if value not in (None, "") else None


def _values(dataset: Dataset, keyword: str) -> set[str]:
    value = dataset.get(keyword)
    if value in (None, ""):
        return set()
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return {str(item).strip().upper() for item in items}


def _timing_reasons(
    dataset: Dataset, max_echo_ms: float, inversion_ms: tuple[float, float]
) -> list[str]:
    """Why the echo, inversion and repetition times are not those of a T1-weighted sequence."""
    echo = _number(dataset, "EchoTime")
    inversion = _number(dataset, "InversionTime") or 0.0
    repetition = _number(dataset, "RepetitionTime")
    inverted = inversion > 0 or "IR" in _values(dataset, "ScanningSequence")
    reasons = []
    if echo is not None and echo > max_echo_ms:
        reasons.append(f"echo time {echo:g} ms is T2-weighted (T1: <= {max_echo_ms:g} ms)")
    if inversion and not inversion_ms[0] <= inversion <= inversion_ms[1]:
        kind = "FLAIR" if inversion > inversion_ms[1] else "STIR"
        reasons.append(
            f"inversion time {inversion:g} ms is {kind}-like "
            f"(T1 inversion recovery: {inversion_ms[0]:g}-{inversion_ms[1]:g} ms)"
        )
    limit = 3500.0 if inverted else 1000.0
    if repetition is not None and repetition > limit:
        reasons.append(
            f"repetition time {repetition:g} ms is too long for T1 weighting "
            f"({'with' if inverted else 'without'} inversion: <= {limit:g} ms)"
        )
    return reasons


def t1_head_reasons(
    dataset: Dataset,
    *,
    max_echo_ms: float = 30.0,
    inversion_ms: tuple[float, float] = (300.0, 1500.0),
    body_parts: frozenset[str] = frozenset({"BRAIN", "HEAD", "SKULL", "HEADNECK"}),
) -> list[str]:
    """Why ``dataset`` is not a T1-weighted 2D/3D head MR image (empty: it is one).

    Parameters
    ----------
    dataset:
        One image of the series (the loader has checked the series is consistent).
    max_echo_ms:
        Longest echo time of a T1-weighted sequence; T2 weighting needs 60 ms and more.
    inversion_ms:
        Inversion times of T1 inversion recovery (MPRAGE about 900-1100 ms);
        FLAIR inverts at 1800 ms and more, STIR at 100-250 ms.
    body_parts:
        Accepted BodyPartExamined values; an absent value is accepted (the
        pipeline checks the image shows a brain).
    """
    reasons = []
    image_type = _values(dataset, "ImageType") & _NOT_STRUCTURAL
    if image_type:
        reasons.append(f"image type {'/'.join(sorted(image_type))} is not a structural image")
    acquisition = str(dataset.get("MRAcquisitionType") or "").upper()
    if acquisition not in ("", "2D", "3D"):
        reasons.append(f"MR acquisition type {acquisition} is neither 2D nor 3D")
    if "EP" in _values(dataset, "ScanningSequence"):
        reasons.append("echo-planar sequence (diffusion or functional), not T1-weighted")
    reasons.extend(_timing_reasons(dataset, max_echo_ms, inversion_ms))
    timed = any(_number(dataset, keyword) is not None for keyword in ("EchoTime", "RepetitionTime"))
    names = f"{dataset.get('SeriesDescription', '')} {dataset.get('ProtocolName', '')}"
    if not timed and (not _T1_NAMES.search(names) or _OTHER_NAMES.search(names)):
        reasons.append(
            "T1 weighting unknown: no echo or repetition time, and the series description "
            f"{str(dataset.get('SeriesDescription', '')).strip() or '(none)'!r} does not name T1"
        )
    body_part = str(dataset.get("BodyPartExamined") or "").strip().upper()
    if body_part and body_part not in body_parts:
        reasons.append(f"body part {body_part} is not the head ({'/'.join(sorted(body_parts))})")
    return reasons


class T1HeadDomain(InputDomain):
    """:class:`InputDomain` bounds plus the sequence and body-part checks of a T1 head MR.

    Parameters
    ----------
    max_echo_ms, inversion_ms, head_body_parts:
        See :func:`t1_head_reasons`.
    """

    max_echo_ms: float = Field(default=30.0, gt=0)
    inversion_ms: tuple[float, float] = (300.0, 1500.0)
    head_body_parts: frozenset[str] = frozenset({"BRAIN", "HEAD", "SKULL", "HEADNECK"})

    def violations(self, datasets: Sequence[Dataset], **options: bool) -> list[str]:
        """The generic bounds' reasons (``options`` go to them), then the T1 head ones."""
        return [
            *super().violations(datasets, **options),
            *t1_head_reasons(
                datasets[0],
                max_echo_ms=self.max_echo_ms,
                inversion_ms=self.inversion_ms,
                body_parts=self.head_body_parts,
            ),
        ]
