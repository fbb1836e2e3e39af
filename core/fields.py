"""Field types shared by the configuration models (settings, routing rules, pipeline manifests)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def upper_set(value: object) -> object:
    """Normalise one string or a collection of them to a frozenset of stripped upper-case strings.

    DICOM code strings (modality, body part, AE title) compare case-insensitively
    in configuration; normalising once at load time keeps every comparison a
    plain set lookup.  Anything else is left for pydantic to reject.
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | set | tuple | frozenset):
        return frozenset(str(item).strip().upper() for item in value)
    return value


UpperSet = Annotated[frozenset[str], BeforeValidator(upper_set)]
"""A set of case-insensitive code strings, stored upper-case."""
