"""Console users: create, list, change password, remove (``ainode users`` and the console)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Role, User, utcnow
from web.security import hash_password

_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD_LENGTH = 10


class UserError(ValueError):
    """A user operation was refused (bad name, weak password, unknown or duplicate user)."""


def check_username(username: str) -> str:
    """``username`` if it is 1-64 letters, digits or ``._@-``."""
    if not _USERNAME.match(username):
        raise UserError("user names are 1-64 letters, digits or . _ @ -")
    return username


def check_password(password: str) -> str:
    """``password`` if it is long enough."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"passwords have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def parse_role(text: str) -> Role:
    """The role named ``text`` (viewer, operator, admin)."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}") from None


def add_user(session: Session, username: str, password: str, role: Role) -> User:
    """Create a user with a hashed password."""
    check_username(username)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise UserError(f"user {username} exists")
    user = User(
        username=username,
        password_hash=hash_password(check_password(password)),
        role=role,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User:
    """The user called ``username``."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username}")
    return user


def set_password(session: Session, username: str, password: str) -> None:
    """Replace a user's password."""
    find_user(session, username).password_hash = hash_password(check_password(password))


def set_role(session: Session, username: str, role: Role) -> None:
    """Change a user's role."""
    find_user(session, username).role = role


def remove_user(session: Session, username: str) -> None:
    """Delete a user (their audit events keep the name)."""
    session.delete(find_user(session, username))


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.username)))
