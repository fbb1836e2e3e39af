"""Routing rules: each selector, the default rule, one match per pipeline."""

from __future__ import annotations

import dataclasses
import re

import pytest
from pydantic import ValidationError

from core.routing import CT_IMAGE_STORAGE, RoutingRule, SeriesFacts, default_rules, match_rules

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

CHEST_CT = SeriesFacts(
    modality="CT",
    sop_class_uid=CT_IMAGE_STORAGE,
    body_part="CHEST",
    series_description="Chest 1.0 B30f",
    calling_ae="CTSCANNER",
    instance_count=64,
)


def facts(**changes: object) -> SeriesFacts:
    return dataclasses.replace(CHEST_CT, **changes)


def rule(**selectors: object) -> RoutingRule:
    return RoutingRule(name="r", pipeline="p", **selectors)


def test_rule_without_selectors_matches_anything() -> None:
    empty = facts(
        modality=None,
        sop_class_uid=None,
        body_part=None,
        series_description=None,
        calling_ae=None,
        instance_count=1,
    )
    assert rule().matches(empty)


def test_modality() -> None:
    ct_or_pt = rule(modality=["ct", "PT"])
    assert ct_or_pt.modality == frozenset({"CT", "PT"})
    assert ct_or_pt.matches(CHEST_CT)
    assert ct_or_pt.matches(facts(modality="PT"))
    assert ct_or_pt.matches(facts(modality=" ct "))
    assert not ct_or_pt.matches(facts(modality="MR"))
    assert not ct_or_pt.matches(facts(modality=None))


def test_sop_class_uid() -> None:
    ct_images = rule(sop_class_uid=CT_IMAGE_STORAGE)
    assert ct_images.matches(CHEST_CT)
    assert not ct_images.matches(facts(sop_class_uid=MR_IMAGE_STORAGE))
    assert not ct_images.matches(facts(sop_class_uid=None))


def test_body_part_is_case_insensitive() -> None:
    chest = rule(body_part=["Chest", "thorax"])
    assert chest.matches(facts(body_part="CHEST"))
    assert chest.matches(facts(body_part="chest"))
    assert chest.matches(facts(body_part="Thorax"))
    assert not chest.matches(facts(body_part="ABDOMEN"))
    assert not chest.matches(facts(body_part=None))


def test_calling_ae() -> None:
    scanner = rule(calling_ae="CTSCANNER")
    assert scanner.matches(CHEST_CT)
    assert scanner.matches(facts(calling_ae="ctscanner"))
    assert not scanner.matches(facts(calling_ae="PACS"))
    assert not scanner.matches(facts(calling_ae=None))


def test_series_description_regex() -> None:
    lungs = rule(series_description=r"\b(chest|thorax)\b")
    assert isinstance(lungs.series_description, re.Pattern)
    assert lungs.matches(CHEST_CT)
    assert lungs.matches(facts(series_description="THORAX routine"))
    assert lungs.matches(facts(series_description="low-dose chest"))  # search, not match
    assert not lungs.matches(facts(series_description="Abdomen"))
    assert not lungs.matches(facts(series_description="chestnut"))
    assert not lungs.matches(facts(series_description=None))


def test_min_instances() -> None:
    ten = rule(min_instances=10)
    assert ten.matches(facts(instance_count=10))
    assert ten.matches(facts(instance_count=11))
    assert not ten.matches(facts(instance_count=9))
    assert not rule().matches(facts(instance_count=0))


def test_every_selector_must_match() -> None:
    combined = rule(modality="CT", body_part="CHEST", calling_ae="CTSCANNER")
    assert combined.matches(CHEST_CT)
    assert not combined.matches(facts(calling_ae="OTHER"))
    assert not combined.matches(facts(body_part="HEAD"))


def test_default_rules_route_ct_to_ct_lungs_and_mr_to_mr_brain() -> None:
    rules = default_rules()

    assert [(r.name, r.pipeline) for r in match_rules(rules, CHEST_CT)] == [
        ("ct-default", "ct-lungs")
    ]
    head_mr = facts(modality="MR", sop_class_uid=MR_IMAGE_STORAGE)
    assert [(r.name, r.pipeline) for r in match_rules(rules, head_mr)] == [
        ("mr-default", "mr-brain")
    ]
    # A CT dose report or localiser with a different SOP class is not routed.
    assert match_rules(rules, facts(sop_class_uid="1.2.840.10008.5.1.4.1.1.88.67")) == []
    assert match_rules(rules, facts(instance_count=2)) == []


def test_one_match_per_pipeline_first_rule_wins() -> None:
    rules = [
        RoutingRule(name="first", pipeline="ct-lungs", modality="CT"),
        RoutingRule(name="second", pipeline="ct-lungs", body_part="CHEST"),
        RoutingRule(name="other", pipeline="ct-heart", modality="CT"),
        RoutingRule(name="never", pipeline="mr-brain", modality="MR"),
    ]

    chosen = match_rules(rules, CHEST_CT)

    assert [(r.name, r.pipeline) for r in chosen] == [
        ("first", "ct-lungs"),
        ("other", "ct-heart"),
    ]


def test_later_rule_for_same_pipeline_used_when_first_does_not_match() -> None:
    rules = [
        RoutingRule(name="from-scanner", pipeline="ct-lungs", calling_ae="OTHER"),
        RoutingRule(name="fallback", pipeline="ct-lungs", modality="CT"),
    ]

    assert [r.name for r in match_rules(rules, CHEST_CT)] == ["fallback"]


def test_invalid_regex_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid series_description regex"):
        rule(series_description="[unclosed")


def test_min_instances_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        rule(min_instances=0)


def test_rules_are_immutable() -> None:
    with pytest.raises(ValidationError):
        rule().name = "changed"  # type: ignore[misc]
