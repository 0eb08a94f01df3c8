"""The console's login: the password hash, its sessions, single-use form tokens and the login limiter.

Pure and synchronous: no I/O, no clock (every method that needs the time takes ``now``, wall-clock
seconds), no environment. The randomness of tokens and salts comes from :mod:`secrets`.

**Password.** ``portero console passwd`` stores :func:`hash_password`'s string in the store's
``settings`` (key :data:`PASSWORD_KEY`): ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64). scrypt is in the
standard library (OpenSSL), so no dependency; n = 2**14, r = 8 takes 16 MiB and some 50 ms per check, run
in a worker thread. :func:`verify_password` compares in constant time and answers False for a malformed
string.

**Sessions.** A login makes a random 256-bit token, the ``portero_console`` cookie (``HttpOnly``,
``SameSite=Strict``, ``Path=/console``, ``Secure`` under TLS). Sessions live in memory: a restart logs
everyone out. A session ends after ``idle`` seconds without a request, ``max_age`` in all, at logout, or
when the password changes (each session remembers the hash it logged in with).

**Form tokens (CSRF).** Every page that has forms gets one fresh token of its session; a POST must carry
one that the session issued and has not used: used tokens are gone, so a replayed form is refused. A
session keeps at most :data:`MAX_FORM_TOKENS` unused tokens (the oldest go first). The login form's tokens
are kept apart (:class:`LoginForms`), bounded and short-lived.

**Limiter.** Failed logins count per peer address (:data:`PEER_FAILURES` in :data:`LIMIT_WINDOW`) and in
all (:data:`TOTAL_FAILURES`); past either, logins are refused without checking the password until the
window has moved on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque

import attrs

PASSWORD_KEY = "console.password"  # the settings row that holds the hash
MIN_PASSWORD_LENGTH = 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_MAX_STORED_N = 2**20  # a hash string asking for more work than this is refused, not computed

MAX_FORM_TOKENS = 256  # unused form tokens a session keeps
LOGIN_FORM_TTL = 900.0  # seconds a login form's token stays good
MAX_LOGIN_FORMS = 1024
LIMIT_WINDOW = 600.0  # seconds over which failed logins count
PEER_FAILURES = 5
TOTAL_FAILURES = 20


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The string to store for ``password`` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (:func:`hash_password`'s string) was made from."""
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, digest = base64.b64decode(salt_text), base64.b64decode(digest_text)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= _MAX_STORED_N) or not (0 < r <= 32) or not (0 < p <= 16):
        return False
    try:
        given = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(digest) or 32
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(given, digest)


def password_problem(password: str, tokens: list[str]) -> str | None:
    """Why ``password`` may not be the console's, or None: too short, or one of the MCP ``tokens`` (the
    bearer token never logs into the console)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the console password must have at least {MIN_PASSWORD_LENGTH} characters"
    if any(t and hmac.compare_digest(password.encode(), t.encode()) for t in tokens):
        return "the console password must not be an MCP bearer token"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@attrs.define(eq=False)
class Session:
    """One logged-in browser."""

    token: str = attrs.field(repr=False)
    created: float
    last_seen: float
    password: str = attrs.field(repr=False)  # the stored hash it logged in with
    peer: str = ""
    forms: OrderedDict[str, None] = attrs.field(factory=OrderedDict, repr=False)
    flash: str = ""  # one message for the next page (the outcome of a form)

    def take_flash(self) -> str:
        text, self.flash = self.flash, ""
        return text

    def issue_form_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.forms[token] = None
        while len(self.forms) > MAX_FORM_TOKENS:
            self.forms.popitem(last=False)
        return token

    def has_form_token(self, token: str) -> bool:
        return token in self.forms

    def use_form_token(self, token: str | None) -> bool:
        """Whether ``token`` is one this session issued and has not used; it is used up either way."""
        if not token:
            return False
        return self.forms.pop(token, False) is None


class Sessions:
    """The console's sessions, by cookie token."""

    def __init__(self, *, idle: float, max_age: float) -> None:
        self.idle = idle
        self.max_age = max_age
        self._by_token: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def new(self, now: float, password: str, peer: str = "") -> Session:
        token = secrets.token_urlsafe(32)
        session = Session(token=token, created=now, last_seen=now, password=password, peer=peer)
        self._by_token[token] = session
        return session

    def get(self, token: str | None, now: float, password: str | None) -> Session | None:
        """The live session of cookie ``token``, touched; None (and forgotten) when it has expired or the
        password is no longer the one it logged in with (``password`` None: none is set now)."""
        self.expire(now)
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        if password is None or not hmac.compare_digest(session.password, password):
            del self._by_token[token]
            return None
        session.last_seen = now
        return session

    def end(self, token: str | None) -> bool:
        return token is not None and self._by_token.pop(token, None) is not None

    def expire(self, now: float) -> int:
        dead = [
            t
            for t, s in self._by_token.items()
            if now - s.last_seen > self.idle or now - s.created > self.max_age
        ]
        for t in dead:
            del self._by_token[t]
        return len(dead)


class LoginForms:
    """The login form's single-use tokens (there is no session yet): bounded, each good for
    :data:`LOGIN_FORM_TTL` seconds."""

    def __init__(self) -> None:
        self._issued: OrderedDict[str, float] = OrderedDict()

    def issue(self, now: float) -> str:
        token = secrets.token_urlsafe(24)
        self._issued[token] = now + LOGIN_FORM_TTL
        while len(self._issued) > MAX_LOGIN_FORMS:
            self._issued.popitem(last=False)
        return token

    def use(self, token: str | None, now: float) -> bool:
        if not token:
            return False
        expires = self._issued.pop(token, None)
        return expires is not None and now <= expires


class LoginLimiter:
    """Counts failed logins per peer and in all over :data:`LIMIT_WINDOW`; see the module docstring."""

    def __init__(
        self, *, window: float = LIMIT_WINDOW, per_peer: int = PEER_FAILURES, total: int = TOTAL_FAILURES
    ) -> None:
        self.window = window
        self.per_peer = per_peer
        self.total = total
        self._failures: deque[tuple[float, str]] = deque()

    def _forget(self, now: float) -> None:
        while self._failures and now - self._failures[0][0] > self.window:
            self._failures.popleft()

    def allowed(self, peer: str, now: float) -> bool:
        self._forget(now)
        if len(self._failures) >= self.total:
            return False
        return sum(1 for _, p in self._failures if p == peer) < self.per_peer

    def failed(self, peer: str, now: float) -> None:
        self._forget(now)
        self._failures.append((now, peer))
        while len(self._failures) > self.total:  # only the last `total` matter
            self._failures.popleft()

    def succeeded(self, peer: str) -> None:
        """A right password clears that peer's failures (not the others')."""
        self._failures = deque(f for f in self._failures if f[1] != peer)
