"""Basic auth: bcrypt off the loop, successes cached, failures not, floods bounded."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import bcrypt
import pytest

from meshprobe.web import auth as webauth
from meshprobe.web.auth import BasicAuth, Verdict, parse_basic

PASSWORD = b"correct horse"


def header(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


@pytest.fixture(scope="module")
def fast_hash() -> bytes:
    return bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4))


class Runs:
    """Counts the verifications that reached bcrypt, through the hook BasicAuth offers."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, _granted: bool) -> None:
        self.n += 1


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
async def auth(fast_hash: bytes, runs: Runs) -> AsyncIterator[BasicAuth]:
    basic = BasicAuth({"prometheus": fast_hash}, on_bcrypt=runs)
    try:
        yield basic
    finally:
        basic.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!notbase64", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), None),
        (header("prometheus", b"a:b"), ("prometheus", b"a:b")),  # the first ':' splits
        ("basic " + base64.b64encode(b"u:").decode(), ("u", b"")),
        (header("jörg", "pässword".encode()), ("jörg", "pässword".encode())),
    ],
)
def test_parse_basic(value: str | None, expected: tuple[str, bytes] | None) -> None:
    assert parse_basic(value) == expected


async def test_success_is_cached_and_failures_are_not(auth: BasicAuth, runs: Runs) -> None:
    assert await auth.verify(header("prometheus", PASSWORD)) is Verdict.OK
    assert runs.n == 1
    for _ in range(5):
        assert await auth.verify(header("prometheus", PASSWORD)) is Verdict.OK
    assert runs.n == 1  # every later scrape is a dictionary lookup
    for _ in range(2):
        assert await auth.verify(header("prometheus", b"wrong")) is Verdict.DENIED
    assert runs.n == 3  # a wrong password costs bcrypt every time


async def test_unknown_user_costs_a_bcrypt_run_and_is_denied(auth: BasicAuth, runs: Runs) -> None:
    # Same password as the real user: only the user name differs.
    assert await auth.verify(header("mallory", PASSWORD)) is Verdict.DENIED
    assert runs.n == 1
    assert await auth.verify(None) is Verdict.DENIED
    assert await auth.verify("Basic garbage") is Verdict.DENIED
    assert runs.n == 1  # nothing to verify: no bcrypt


async def test_new_hash_on_reload_invalidates_the_cached_success(
    auth: BasicAuth, fast_hash: bytes
) -> None:
    assert await auth.verify(header("prometheus", PASSWORD)) is Verdict.OK
    auth.set_users({"prometheus": bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4))})
    assert await auth.verify(header("prometheus", PASSWORD)) is Verdict.DENIED
    assert await auth.verify(header("prometheus", b"rotated")) is Verdict.OK
    auth.set_users({})
    assert not auth.enabled


async def test_passwords_longer_than_bcrypt_reads_are_refused(fast_hash: bytes) -> None:
    long_password = PASSWORD + b"x" * 80  # bcrypt would see only the first 72 bytes
    basic = BasicAuth({"prometheus": bcrypt.hashpw(long_password[:72], bcrypt.gensalt(rounds=4))})
    try:
        assert await basic.verify(header("prometheus", long_password)) is Verdict.DENIED
        assert await basic.verify(header("prometheus", long_password[:72])) is Verdict.OK
    finally:
        basic.close()


async def test_cache_is_bounded(fast_hash: bytes, runs: Runs) -> None:
    users = {f"u{i}": fast_hash for i in range(3)}
    basic = BasicAuth(users, cache_size=2, on_bcrypt=runs)
    try:
        for user in users:
            assert await basic.verify(header(user, PASSWORD)) is Verdict.OK
        assert runs.n == 3
        assert await basic.verify(header("u2", PASSWORD)) is Verdict.OK  # newest: cached
        assert runs.n == 3
        assert await basic.verify(header("u0", PASSWORD)) is Verdict.OK  # oldest: evicted
        assert runs.n == 4
    finally:
        basic.close()


async def test_bcrypt_runs_off_the_event_loop() -> None:
    # Cost 12 takes a few hundred milliseconds: run on the loop, the verification would be
    # finished before this coroutine got control back.
    slow = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=12))
    basic = BasicAuth({"prometheus": slow})
    try:
        task = asyncio.create_task(basic.verify(header("prometheus", PASSWORD)))
        await asyncio.sleep(0.01)
        assert not task.done()
        assert await task is Verdict.OK
    finally:
        basic.close()


async def test_a_flood_of_guesses_is_bounded(
    fast_hash: bytes, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webauth, "MAX_PENDING", 2)
    slow = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=10))
    basic = BasicAuth({"prometheus": slow}, on_bcrypt=runs)
    try:
        verdicts = await asyncio.gather(
            *(basic.verify(header("prometheus", b"guess%d" % i)) for i in range(5))
        )
        assert sorted(v.value for v in verdicts) == ["busy"] * 3 + ["denied"] * 2
        assert runs.n == 2
    finally:
        basic.close()
