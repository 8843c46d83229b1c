"""Debian's chromium, driven through chromedriver by the W3C WebDriver protocol over aiohttp.

Why not selenium: the daemon under test runs on the test's own event loop, and selenium's client
blocks; every wait would freeze the very daemon the page is waiting for (or need a thread per
call). The protocol subset a status-page test needs is a dozen HTTP calls, so they are made
here with the aiohttp the project already has, and no test dependency is added.

Waits are event-driven: `wait_for` runs a condition in the page under a MutationObserver and
returns when the DOM first satisfies it, or fails at its deadline.

Every process started here is ended by its own handle: chromedriver runs in a session (process
group) of its own, so the chromium it starts is in that group; at the end the group is killed
if anything is left, and `leftovers` lists any process still naming this browser's profile
directory, which the tests assert is none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The flags the issue names, plus QUIC off; a fresh profile directory is added per browser.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element reference key


def installed() -> bool:
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


class WebDriverError(AssertionError):
    pass


class Browser:
    def __init__(self, http: aiohttp.ClientSession, base: str, session: str) -> None:
        self._http = http
        self._url = f"{base}/session/{session}"

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._http.request(method, self._url + path, json=body) as resp:
            answer = await resp.json(content_type=None)
        value = answer.get("value") if isinstance(answer, dict) else None
        if resp.status != 200:
            raise WebDriverError(f"{method} {path}: {resp.status} {json.dumps(value)[:2000]}")
        return value

    async def get(self, url: str) -> None:
        await self._call("POST", "/url", {"url": url})

    async def run(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body; `arguments` are `args`) in the page."""
        return await self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def wait_for(self, condition: str, *args: Any, within: float = 15.0) -> Any:
        """The first truthy value of `condition` (a function body over `args`), evaluated now
        and at each DOM change; fails with the page's text after `within` seconds (a deadline
        the page keeps itself, so the wait is one WebDriver call)."""
        script = f"""
            const done = arguments[arguments.length - 1];
            const args = Array.prototype.slice.call(arguments, 0, -1);
            const cond = function () {{ {condition} }};
            let observer = null;
            let timer = null;
            const check = () => {{
                let value = null;
                try {{ value = cond.apply(null, args); }} catch (e) {{ value = null; }}
                if (value) {{
                    if (observer) observer.disconnect();
                    clearTimeout(timer);
                    done({{ok: true, value: value}});
                    return true;
                }}
                return false;
            }};
            if (check()) return;
            observer = new MutationObserver(check);
            observer.observe(document, {{subtree: true, childList: true, characterData: true,
                                         attributes: true}});
            timer = setTimeout(() => {{
                observer.disconnect();
                done({{ok: false, value: document.body ? document.body.innerText : null}});
            }}, {int(within * 1000)});
        """
        await self._call("POST", "/timeouts", {"script": int(within * 1000) + 5000})
        result = await self._call("POST", "/execute/async", {"script": script, "args": list(args)})
        if not result["ok"]:
            raise WebDriverError(
                f"not within {within}s: {condition}\n--- page text ---\n{result['value']}"
            )
        return result["value"]

    async def find(self, css: str) -> str:
        value = await self._call("POST", "/element", {"using": "css selector", "value": css})
        assert isinstance(value, dict) and ELEMENT in value, (css, value)
        return str(value[ELEMENT])

    async def click(self, css: str) -> None:
        await self._call("POST", f"/element/{await self.find(css)}/click", {})

    async def type(self, css: str, text: str) -> None:
        """Keys as a person types them into the element (focused first); `\\ue007` is Enter."""
        await self._call("POST", f"/element/{await self.find(css)}/value", {"text": text})

    async def screenshot(self) -> bytes:
        return base64.b64decode(await self._call("GET", "/screenshot"))


def leftovers(profile: Path) -> list[int]:
    """PIDs of processes whose command line names `profile` (this browser's own directory)."""
    mark = str(profile).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmdline:
            found.append(int(entry.name))
    return found


@contextlib.asynccontextmanager
async def browser(profile: Path, *, size: tuple[int, int] = (1280, 1000)) -> AsyncIterator[Browser]:
    """A headless chromium with a fresh, empty profile directory: `profile`, a path in the
    test's own temporary directory that chromium creates."""
    driver = await asyncio.create_subprocess_exec(
        CHROMEDRIVER,
        "--port=0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: chromium joins it
    )
    try:
        assert driver.stdout is not None
        port = None
        async with asyncio.timeout(20):
            while port is None:  # "ChromeDriver was started successfully on port 43211."
                line = (await driver.stdout.readline()).decode()
                assert line, "chromedriver exited before it listened"
                if "started successfully on port" in line:
                    port = int(line.rsplit(" ", 1)[1].strip().rstrip("."))
        base = f"http://127.0.0.1:{port}"
        args = [*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }
            }
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async with http.post(f"{base}/session", json=capabilities) as resp:
                created = await resp.json(content_type=None)
                assert resp.status == 200, created
            session = created["value"]["sessionId"]
            try:
                yield Browser(http, base, session)
            finally:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.delete(f"{base}/session/{session}"):
                        pass
    finally:
        if driver.returncode is None:
            driver.terminate()
            try:
                async with asyncio.timeout(5):
                    await driver.wait()
            except TimeoutError:
                driver.kill()
                await driver.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # whatever chromium left in the group
        for pid in leftovers(profile):  # a child that made a session of its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
