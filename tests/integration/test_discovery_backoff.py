"""The backoff escalation against the fake API server: a watch that answers 200 and ends at once
(a misbehaving proxy) is a failure, retried at growing, capped, jittered intervals, and
`meshprobe_discovery_up` falls once and stays down instead of flapping on every retry.

Timing is read from the fake server's own request log; the test waits on its request events and
the daemon's discovery activity, never on sleeps.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from meshprobe.config.settings import load_settings
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.discovery import services as ann
from meshprobe.discovery.pacing import Backoff, WatchSettings
from tests.integration.daemonkit import samples, scrape_daemon
from tests.integration.kubefake import FakeKube, service
from tests.integration.kubekit import daemon_config, targets_of, until_discovered

BACKOFF = Backoff(initial=0.05, cap=0.4, factor=2.0, jitter=0.5)
HOLLOW = WatchSettings(
    resync_period=300.0,
    request_timeout=2.0,
    backoff=BACKOFF,
    healthy_after=0.5,
    down_after_failures=3,
)
WATCHES = 8  # the first watch and seven retries: 0.05, 0.1, 0.2, then the 0.4 s cap


class RecordingUp(dict[str, bool]):
    """`DiscoveryHealth.up`, remembering every value written, so a flap cannot hide between two
    scrapes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bool]] = []

    def __setitem__(self, key: str, value: bool) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)

    def of(self, source: str) -> list[bool]:
        return [value for key, value in self.writes if key == source]


def _up(text: str) -> list[float]:
    return [
        v for lbl, v in samples(text, "meshprobe_discovery_up") if lbl["discovery"] == "kubernetes"
    ]


async def test_the_backoff_escalation_against_the_fake_api_server(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.put("services", service("default", "a", annotations={ann.PROBE: "true"}))
        fake.hollow = True  # every watch: 200, no event, closed at once
        path = tmp_path / "meshprobe.yaml"
        path.write_text(yaml.safe_dump(daemon_config(kubeconfig)))
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={}, watch=HOLLOW)
        up = RecordingUp()
        daemon.status.discovery.up = up
        await daemon.start()
        try:
            assert daemon.discovery is not None

            def watches() -> list[float]:
                return [r.at for r in fake.requests if r.verb == "watch"]

            await fake.wait_for(lambda: len(watches()) >= WATCHES, limit=15.0)
            (loop,) = daemon.discovery.loops
            times = watches()[:WATCHES]
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            # Each retry waits at least half its step (jitter takes up to half off), and the steps
            # double up to the cap: the gaps grow, never fall back to the first step.
            floors = [0.5 * min(BACKOFF.cap, BACKOFF.initial * 2**k) for k in range(len(gaps))]
            assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), gaps
            assert min(gaps[3:]) > gaps[0], gaps
            assert max(gaps) < BACKOFF.cap + 1.0, gaps  # capped (with slack for a busy machine)
            # So a fixed window holds few requests: a loop stuck at the first step would have sent
            # hundreds in the time these eight took.
            assert times[-1] - times[0] >= sum(floors)
            assert loop.stats.lists == 1

            # Up after the list, kept through two failed watches, down at the third, then down:
            # one transition, not one per retry.
            assert loop.stats.failures >= WATCHES - 1
            seen = up.of("kubernetes")
            assert seen[:4] == [True, True, True, False], seen
            assert not any(seen[4:]), seen
            text = await scrape_daemon(daemon)
            assert _up(text) == [0.0]
            errors = [
                v
                for lbl, v in samples(text, "meshprobe_discovery_errors_total")
                if lbl["discovery"] == "kubernetes"
            ]
            assert errors == [float(loop.stats.failures)]

            # The proxy is fixed: the next watch delivers an event, and up comes back for good.
            fake.hollow = False
            fake.put("services", service("default", "b", annotations={ann.PROBE: "true"}))
            await until_discovered(
                daemon,
                lambda: ("default/b", "cluster1") in targets_of(daemon) and up["kubernetes"],
            )
            seen = up.of("kubernetes")
            assert [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]] == [
                True,
                False,
                True,
            ]
            assert _up(await scrape_daemon(daemon)) == [1.0]
            assert loop.stats.lists == 1  # resumed from its version: nothing listed again
        finally:
            await daemon.stop()


async def test_a_quiet_watch_that_stays_open_counts_as_working(tmp_path: Path) -> None:
    """No events at all, but open for `healthy_after`: a healthy quiet collection, up stays 1
    and the failure streak of the hollow watches before it is forgiven."""
    quick = WatchSettings(
        resync_period=300.0,
        request_timeout=2.0,
        backoff=BACKOFF,
        healthy_after=0.3,
        down_after_failures=2,
    )
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.hollow = True
        path = tmp_path / "meshprobe.yaml"
        path.write_text(yaml.safe_dump(daemon_config(kubeconfig)))
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={}, watch=quick)
        up = RecordingUp()
        daemon.status.discovery.up = up
        await daemon.start()
        try:
            assert daemon.discovery is not None
            await until_discovered(daemon, lambda: up.of("kubernetes")[-1:] == [False])
            fake.hollow = False
            # The next watch stays open and silent; the proof timer marks it working.
            await until_discovered(daemon, lambda: up.get("kubernetes", False), limit=5.0)
            (loop,) = daemon.discovery.loops
            assert loop.stats.events == 0 and loop.stats.bookmarks == 0
            assert fake.active_watches == 1
        finally:
            await daemon.stop()


async def test_watches_expired_at_once_slow_down_the_relists(tmp_path: Path) -> None:
    """A server that expires every watch, even from the version its list just gave: the first
    relist is immediate (a 410 is routine), the following ones back off; never an error."""
    async with FakeKube() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.always_gone = True
        path = tmp_path / "meshprobe.yaml"
        path.write_text(yaml.safe_dump(daemon_config(kubeconfig)))
        daemon = Daemon(load_settings(path, environ={}), config_path=path, environ={}, watch=HOLLOW)
        await daemon.start()
        try:

            def lists() -> list[float]:
                return [r.at for r in fake.requests if r.verb == "list"]

            await fake.wait_for(lambda: len(lists()) >= 6, limit=15.0)
            times = lists()[:6]
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            # list 1 -> Gone -> list 2 at once -> Gone again -> 0.05, 0.1, 0.2, 0.4 steps.
            floors = [0.0] + [0.5 * min(BACKOFF.cap, BACKOFF.initial * 2**k) for k in range(4)]
            assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), gaps
            assert daemon.status.discovery.errors["kubernetes"] == 0
            assert daemon.status.discovery.up["kubernetes"]  # every list works: the view is current
        finally:
            await daemon.stop()
