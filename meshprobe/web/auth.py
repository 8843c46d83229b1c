"""Basic auth for the listener: bcrypt hashes, verified off the event loop, successes cached.

bcrypt costs tens to hundreds of milliseconds by design. A scrape every 15 s must not pay that
each time, and the event loop that times the probes must never block on it, so:

- verifications run in one dedicated worker thread (not the loop's default executor, which the
  probes' DNS lookups use), one at a time as exporter-toolkit does, and at most `MAX_PENDING`
  may wait: a flood of guesses gets 429 instead of a queue that grows without bound;
- a success is remembered in a bounded LRU keyed by an HMAC of (user, stored hash, password)
  under a per-process random key, so the cache holds no password (nor anything a password can be
  tested against offline), and changing a user's hash on reload invalidates the entry by itself;
- an unknown user is checked against a dummy hash of the same cost, so response time does not
  tell which users exist; bcrypt's own comparison is constant-time, and so is the final check.

Failures are never cached: a wrong password costs a bcrypt run each time, which is exactly what
makes guessing slow.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

import bcrypt

CACHE_SIZE = 128
MAX_PENDING = 16
# bcrypt reads at most 72 bytes of a password; longer ones are refused rather than truncated.
MAX_PASSWORD_BYTES = 72


class Verdict(Enum):
    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"


class BasicAuth:
    """`users` maps a name to its bcrypt hash (bytes)."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        cache_size: int = CACHE_SIZE,
        on_bcrypt: Callable[[bool], None] = lambda _ok: None,
    ) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._dummy: dict[bytes, bytes] = {}  # cost -> a hash of a random password
        self._on_bcrypt = on_bcrypt  # after each verification that reached bcrypt: its verdict

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def set_users(self, users: Mapping[str, bytes]) -> None:
        """Reload: new users and hashes apply to the next request; the cache starts over."""
        self._users = dict(users)
        self._cache.clear()

    async def verify(self, authorization: str | None) -> Verdict:
        credentials = parse_basic(authorization)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        stored = self._users.get(user)
        known = stored is not None
        digest = self._digest(user, stored or b"", password)
        if known and digest in self._cache:
            self._cache.move_to_end(digest)
            return Verdict.OK
        if self._pending >= MAX_PENDING:
            return Verdict.BUSY
        self._pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self._pool(), self._check, stored, password
            )
        finally:
            self._pending -= 1
        granted = ok & known  # both evaluated: no early exit on an unknown user
        self._on_bcrypt(granted)
        if granted:
            self._remember(digest)
            return Verdict.OK
        return Verdict.DENIED

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="meshprobe-bcrypt"
            )
        return self._executor

    def _check(self, stored: bytes | None, password: bytes) -> bool:
        """In the worker thread."""
        if len(password) > MAX_PASSWORD_BYTES:
            return False
        target = stored if stored is not None else self._dummy_hash()
        try:
            return bcrypt.checkpw(password, target)
        except ValueError:  # a hash bcrypt cannot use after all: deny, never crash the request
            return False

    def _dummy_hash(self) -> bytes:
        """A hash as costly as the most costly real one, made once per cost (in the worker)."""
        cost = max((int(h[4:6]) for h in self._users.values()), default=10)
        key = str(cost).encode()
        if key not in self._dummy:
            self._dummy[key] = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        return self._dummy[key]

    def _digest(self, user: str, stored: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode(), stored, password):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def _remember(self, digest: bytes) -> None:
        self._cache[digest] = None
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def parse_basic(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password bytes) from `Authorization: Basic ...`, or None for anything else.

    The password stays bytes: what the scraper sent is what bcrypt compares, with no decoding
    in between that could make two passwords equal."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
