"""Routing rules: which pipelines run on which series.

Rules are declarative selectors (sets, a regular expression compiled when the
configuration is loaded), in the spirit of MONAI Deploy's series selection:
nothing is evaluated as code at run time.  A series matches a rule when every
selector the rule sets matches; unset selectors match anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.fields import UpperSet

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class SeriesFacts:
    """What routing may look at for one series (no patient data)."""

    modality: str | None
    sop_class_uid: str | None
    body_part: str | None
    series_description: str | None
    calling_ae: str | None
    instance_count: int


class RoutingRule(BaseModel):
    """One selector and the pipeline it sends matching series to.

    Parameters
    ----------
    name:
        Unique rule name, recorded on every job it creates.
    pipeline:
        Registered pipeline name, e.g. ``ct-lungs``.
    modality, sop_class_uid, body_part, calling_ae:
        Sets of accepted values (case-insensitive); ``None`` accepts any.
    series_description:
        Regular expression searched in the series description (case-insensitive).
    min_instances:
        Fewer instances than this and the series is not routed.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    pipeline: str
    modality: UpperSet | None = None
    sop_class_uid: UpperSet | None = None
    body_part: UpperSet | None = None
    calling_ae: UpperSet | None = None
    series_description: re.Pattern[str] | None = None
    min_instances: int = Field(default=1, ge=1)

    @field_validator("series_description", mode="before")
    @classmethod
    def _compile(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"invalid series_description regex {value!r}: {exc}") from exc
        return value

    def matches(self, series: SeriesFacts) -> bool:
        """Whether every selector this rule sets accepts ``series``."""
        return not self.mismatches(series)

    def mismatches(self, series: SeriesFacts) -> list[str]:
        """Why this rule does not accept ``series``: one reason per selector that refuses it."""
        checks = (
            ("modality", self.modality, series.modality),
            ("SOP class", self.sop_class_uid, series.sop_class_uid),
            ("body part", self.body_part, series.body_part),
            ("calling AE", self.calling_ae, series.calling_ae),
        )
        reasons = [
            f"{label} {value or '(none)'} not in {sorted(accepted)}"
            for label, accepted, value in checks
            if accepted is not None and (value or "").strip().upper() not in accepted
        ]
        if self.series_description is not None and not self.series_description.search(
            series.series_description or ""
        ):
            reasons.append(f"series description does not match /{self.series_description.pattern}/")
        if series.instance_count < self.min_instances:
            reasons.append(f"{series.instance_count} instances, fewer than {self.min_instances}")
        return reasons


def default_rules() -> list[RoutingRule]:
    """The routes a fresh node has: CT image series to ``ct-lungs``, MR to ``mr-brain``.

    ``mr-brain`` skips, with the reason, every MR series that is not a
    T1-weighted head image; it needs the ``[brain]`` extra.
    """
    return [
        RoutingRule(
            name="ct-default",
            pipeline="ct-lungs",
            modality=frozenset({"CT"}),
            sop_class_uid=frozenset({CT_IMAGE_STORAGE}),
            min_instances=3,
        ),
        RoutingRule(
            name="mr-default",
            pipeline="mr-brain",
            modality=frozenset({"MR"}),
            sop_class_uid=frozenset({MR_IMAGE_STORAGE}),
            min_instances=3,
        ),
    ]


def match_rules(rules: list[RoutingRule], series: SeriesFacts) -> list[RoutingRule]:
    """Rules that accept ``series``, one per pipeline (the first rule naming it wins)."""
    chosen: dict[str, RoutingRule] = {}
    for rule in rules:
        if rule.pipeline not in chosen and rule.matches(series):
            chosen[rule.pipeline] = rule
    return list(chosen.values())
