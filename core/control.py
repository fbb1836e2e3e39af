"""Operators' switches kept in the database: routing paused, a destination paused.

The scheduler leaves stable studies ``receiving`` while routing is paused (so
nothing is lost: they are routed on resume) and workers hold deliveries to a
paused destination ``pending`` without spending an attempt.  The rows live in
``control_flags``, so every process sees the same switch.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db.models import ControlFlag, utcnow

ROUTING = "routing"
DESTINATION_PREFIX = "destination:"


def destination_flag(destination: str) -> str:
    """The flag name that pauses deliveries to ``destination`` (its canonical form)."""
    return f"{DESTINATION_PREFIX}{destination}"


def is_paused(session: Session, name: str) -> bool:
    """Whether the switch ``name`` is on."""
    return session.get(ControlFlag, name) is not None


def paused_flags(session: Session) -> dict[str, ControlFlag]:
    """Every switch that is on, by name."""
    return {flag.name: flag for flag in session.scalars(select(ControlFlag))}


def set_paused(session: Session, name: str, paused: bool, username: str | None) -> bool:
    """Turn the switch ``name`` on or off; returns whether that changed anything."""
    current = session.get(ControlFlag, name)
    if paused and current is None:
        session.add(ControlFlag(name=name, set_by=username, set_at=utcnow()))
        return True
    if not paused and current is not None:
        session.execute(delete(ControlFlag).where(ControlFlag.name == name))
        return True
    return False
