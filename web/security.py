"""Passwords, login throttling and CSRF tokens for the console.

Passwords are hashed with argon2id (argon2-cffi); the session cookie is
signed (Starlette's SessionMiddleware, itsdangerous) and carries the user id
and a CSRF token that every POST must echo back.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.config import Settings

_HASHER = PasswordHasher()
#: Verified against when the user does not exist, so both cases take as long.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted, with the library's current parameters)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (a missing user never matches)."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_csrf_token() -> str:
    """A fresh random token for a session."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's token with the submitted one."""
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))


def secret_key(settings: Settings) -> str:
    """The cookie-signing key: ``AINODE_WEB_SECRET_KEY``, else one kept in the spool (0600).

    Kept in the spool so sessions survive a restart of the console.
    """
    if settings.web_secret_key:
        return settings.web_secret_key
    path: Path = settings.spool_path / "web-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip()


class LoginThrottle:
    """Refuses logins from an address or for a user name after too many recent failures.

    In memory: the console is one process.  ``attempts`` failures within
    ``window`` seconds lock the key until the oldest one leaves the window.
    """

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login for these keys is allowed again (0 when it is now)."""
        now = time.monotonic()
        with self._lock:
            waits = [
                failures[0] + self.window - now
                for key in keys
                if len(failures := self._recent(key, now)) >= self.attempts
            ]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        """Count one failed login against each key."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of these keys."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
