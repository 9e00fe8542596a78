"""Sign-in for staff: argon2 password hashes (pwdlib), random session tokens, CSRF tokens, a login rate limit.

- A password is kept only as its argon2 hash (``pwdlib``'s recommended settings).
- Signing in opens a session row with a random token (the cookie: HttpOnly, SameSite=Strict, Secure unless the
  dashboard serves plain HTTP on purpose) and a CSRF token that every form and htmx request must send back.
- Before sign-in, the login form is protected by a double-submit token (a cookie and a form field that match).
- :class:`LoginLimiter` refuses sign-in after 5 failures in 5 minutes from one address or for one name.

Roles: ``staff`` see everything, acknowledge alerts and send rack actions; ``admin`` may also list the users.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import defaultdict, deque

SESSION_COOKIE = "rackwatch_session"
LOGIN_CSRF_COOKIE = "rackwatch_login_csrf"
SESSION_HOURS = 12.0


def _hasher():
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher().verify(password, password_hash)
    except Exception:   # a malformed hash is a failed sign-in, not a crash
        return False


# Spent on unknown names too, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH: str | None = None


def dummy_verify(password: str) -> None:
    global _DUMMY_HASH
    _DUMMY_HASH = _DUMMY_HASH or hash_password("not a password")
    verify_password(password, _DUMMY_HASH)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a, b)


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per ``window_s`` for each key (an address, a user name)."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] < time.monotonic() - self.window_s:
            failures.popleft()
        return failures

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._recent(key).append(time.monotonic())

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
