"""Deterministic result UIDs: same job identity, same UIDs; anything else, different."""

from __future__ import annotations

import itertools

from pydicom.uid import UID

from core.uids import UID_ROOT, ResultUIDs, derived_uid, input_key

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOPS = [f"1.2.826.0.1.3680043.8.498.3.{n}" for n in range(5)]


def uids_for(**changes: str) -> ResultUIDs:
    identity = {
        "study_uid": STUDY,
        "series_uid": SERIES,
        "pipeline": "ct-lungs",
        "version": "1.0.0",
        "key": input_key(SOPS),
    }
    identity.update(changes)
    return ResultUIDs.for_job(**identity)


def all_of(uids: ResultUIDs) -> list[str]:
    return [uids.seg_series, uids.seg_instance, uids.sr_series, uids.sr_instance]


def test_input_key_is_order_independent() -> None:
    keys = {input_key(order) for order in itertools.permutations(SOPS[:4])}
    assert len(keys) == 1
    assert input_key(SOPS) == input_key(reversed(SOPS))
    assert input_key(SOPS) == input_key(iter(SOPS + SOPS[:2]))  # duplicates count once


def test_input_key_depends_on_the_set() -> None:
    assert input_key(SOPS) != input_key(SOPS[:-1])
    assert input_key(["1.2", "3"]) != input_key(["1.23"])
    key = input_key(SOPS)
    assert len(key) == 64
    assert int(key, 16) >= 0


def test_result_uids_are_deterministic() -> None:
    assert uids_for() == uids_for()
    assert uids_for(key=input_key(reversed(SOPS))) == uids_for()


def test_result_uids_are_distinct_per_role() -> None:
    assert len(set(all_of(uids_for()))) == 4


def test_result_uids_are_distinct_per_input() -> None:
    variants = [
        uids_for(),
        uids_for(key=input_key(SOPS[:-1])),
        uids_for(study_uid=STUDY + ".9"),
        uids_for(series_uid=SERIES + ".9"),
        uids_for(pipeline="ct-heart"),
        uids_for(version="1.0.1"),
    ]
    every_uid = [uid for variant in variants for uid in all_of(variant)]
    assert len(set(every_uid)) == len(every_uid)


def test_parts_are_not_simply_concatenated() -> None:
    # ("1.2.3", "45.6") and ("1.2.34", "5.6") must not give the same UIDs.
    assert uids_for(study_uid="1.2.3", series_uid="45.6") != uids_for(
        study_uid="1.2.34", series_uid="5.6"
    )
    assert uids_for(pipeline="ct-lungs", version="1.0") != uids_for(
        pipeline="ct-lungs1", version=".0"
    )
    assert derived_uid("ab", "c") != derived_uid("a", "bc")


def test_result_uids_are_valid_dicom_uids() -> None:
    long_ids = uids_for(study_uid="1." + "2" * 62, series_uid="1." + "3" * 62)
    for uid in all_of(uids_for()) + all_of(long_ids):
        assert len(uid) <= 64
        assert UID(uid).is_valid, uid
        assert uid.startswith(UID_ROOT)


def test_labelmap_uids_are_deterministic_and_their_own() -> None:
    binary = uids_for()
    labelmap = binary.for_seg_type("LABELMAP")

    assert binary.for_seg_type("BINARY") == binary  # results made before LABELMAP keep theirs
    assert labelmap == uids_for().for_seg_type("LABELMAP")  # a re-run gives the same
    assert len(set(all_of(binary) + all_of(labelmap))) == 8
    assert labelmap != uids_for(key=input_key(SOPS[:-1])).for_seg_type("LABELMAP")
    for uid in all_of(labelmap):
        assert UID(uid).is_valid and uid.startswith(UID_ROOT)


def test_viewer_format_uids_are_deterministic_per_format_and_variant() -> None:
    binary, labelmap = uids_for(), uids_for().for_seg_type("LABELMAP")
    captures = [binary.sc_instance(n) for n in (1, 2)]
    kos = [uids.kos(variant) for uids in (binary, labelmap) for variant in ("seg+sr", "sr+sc")]

    assert captures == [uids_for().sc_instance(n) for n in (1, 2)]  # a re-run gives the same
    assert kos[0] == uids_for().kos("seg+sr")
    instances = captures + [instance for _, instance in kos]
    assert len(set(instances + all_of(binary) + all_of(labelmap))) == len(instances) + 8
    assert kos[0][0] == kos[1][0] != kos[2][0]  # one KOS series per SEG type
    for uid in [*instances, binary.sc_series]:
        assert UID(uid).is_valid and uid.startswith(UID_ROOT)
