"""The image's install steps and the built pod's command, run here without Docker or Kubernetes.

A build context is laid out as .dockerignore and the Dockerfile's COPY lines make it; the
Dockerfile's own `pip wheel` builds the wheel from it (offline: no dependencies, no build
isolation) and its own `pip install --no-index --find-links` installs that wheel into a clean
virtualenv (whose dependencies are the test environment's, linked in, since nothing may be
downloaded). Then, for each mesh, the built overlay's container is started from that venv the
way the kubelet would: the image's ENTRYPOINT plus the Deployment's args, its environment, its
ConfigMap volumes as files, against a fake Kubernetes API on loopback that holds the mesh's
trust roots. It must turn ready, answer its probes, publish the mesh's root, make only the API
calls the built ClusterRole allows, and stop within 5 s of SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes

from meshprobe import __version__
from meshprobe.config.discovery import TRUST_PRESETS
from meshprobe.demo import pki
from tests.integration.kubefake import FakeKube, configmap, free_port
from tests.unit.test_deploy import (
    DEFAULT_MESH,
    ROOT,
    SHUTDOWN_BOUND,
    Obj,
    build,
    container,
    localize,
    materialize,
    one,
    pod_env,
)
from tests.unit.test_deploy_image import (
    build_pip_wheel,
    dockerignore_patterns,
    final_pip_install,
    in_context,
    parse_dockerfile,
)

DOCKERFILE = parse_dockerfile((ROOT / "Dockerfile").read_text())
# The test venv's own packages a clean venv may borrow: not meshprobe (that comes from the
# wheel), not the installer.
_NOT_BORROWED = ("meshprobe", "__editable__", "_meshprobe", "pip", "setuptools", "_distutils")


def build_context(dest: Path) -> Path:
    """What the Dockerfile's build stage has in /src: its COPY sources, filtered by
    .dockerignore as Docker filters the context."""
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for copy in DOCKERFILE.stages[0].all("COPY"):
        *sources, target = copy.split()
        for source in sources:
            origin = ROOT / source
            files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
            for path in files:
                rel = path.relative_to(ROOT).as_posix()
                if path.is_file() and in_context(rel, patterns):
                    where = dest / (rel if target != "./" else Path(rel).name)
                    if target not in ("./", f"./{source}"):
                        raise AssertionError(f"unexpected COPY target {target}")
                    where.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, where)
    return dest


def borrowed_site_packages(dest: Path) -> Path:
    dest.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.endswith(".pth") or entry.name.startswith(_NOT_BORROWED):
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with meshprobe installed from its wheel by the Dockerfile's commands."""
    work = tmp_path_factory.mktemp("image")
    context = build_context(work / "src")
    wheels = work / "wheels"
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    wheel_cmd = [w.replace("/wheels", str(wheels)) for w in build_pip_wheel(DOCKERFILE)]
    wheel_cmd = [sys.executable, *wheel_cmd[1:4], *offline, *wheel_cmd[4:]]
    subprocess.run(wheel_cmd, cwd=context, check=True, capture_output=True)
    (wheel,) = wheels.glob("meshprobe-*.whl")
    assert wheel.name == f"meshprobe-{__version__}-py3-none-any.whl"

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = borrowed_site_packages(work / "deps")
    (Path(venv_site) / "_borrowed_deps.pth").write_text(f"{deps}\n")
    install = [w.replace("/wheels", str(wheels)) for w in final_pip_install(DOCKERFILE)]
    subprocess.run(
        [str(python), *install[1:]], cwd=work, check=True, capture_output=True, text=True
    )
    return venv


def test_wheel_holds_the_whole_package(image_venv: Path) -> None:
    out = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import meshprobe; print(meshprobe.__file__)"],
        cwd=image_venv,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    installed = Path(out).parent
    assert installed.is_relative_to(image_venv)  # the wheel's copy, not the checkout
    source = {p.relative_to(ROOT / "meshprobe") for p in (ROOT / "meshprobe").rglob("*.py")}
    assert {p.relative_to(installed) for p in installed.rglob("*.py")} == source
    # The status page's files are package data, not modules: the wheel must carry them too.
    page = {p.relative_to(ROOT / "meshprobe") for p in (ROOT / "meshprobe/web/page").iterdir()}
    assert page and all((installed / p).is_file() for p in page), page
    assert (image_venv / "bin" / "meshprobe").exists()  # the ENTRYPOINT's console script


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def _run_pod(docs: list[Obj], mesh: str, venv: Path, work: Path) -> dict[str, Any]:
    """Run the built pod's container as the kubelet would; returns what was observed."""
    root = pki.make_root(f"{mesh} mesh root")
    pem = root.cert_pem().decode()
    deployment = one(docs, "Deployment")
    main = container(deployment)
    _, istio_name, istio_key = TRUST_PRESETS["istio"]
    mounts = materialize(docs, work / "volumes", {istio_name: {istio_key: pem}})
    async with FakeKube() as kube:
        ns, name, key = TRUST_PRESETS["linkerd"]
        kube.put("configmaps", configmap(ns, name, {key: pem}))
        port = free_port()
        env = {k: localize(v, mounts) for k, v in pod_env(deployment).items()}
        env |= {
            # What a pod has and this machine has not: the port to itself, the API server.
            "MESHPROBE_LISTEN": f"127.0.0.1:{port}",
            "MESHPROBE_DISCOVERY__KUBERNETES__KUBECONFIG": str(
                kube.write_kubeconfig(work / "kubeconfig")
            ),
            # The peer's name resolves only in a cluster: no DNS query leaves this machine.
            "MESHPROBE_PEERS": "[]",
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        }
        (entrypoint,) = DOCKERFILE.stages[-1].all("ENTRYPOINT")
        argv = json.loads(entrypoint) + [localize(a, mounts) for a in main["args"]]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=work,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        observed: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as session:
                ready = main["readinessProbe"]["httpGet"]["path"]
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if (await _get(session, base + ready))[0] == 200:
                            break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert proc.returncode is None, "meshprobe exited before it was ready"
                    assert time.monotonic() < deadline, "not ready within 20 s"
                    await asyncio.sleep(0.1)
                live = main["livenessProbe"]["httpGet"]["path"]
                observed["live"] = (await _get(session, base + live))[0]
                observed["identity"] = json.loads((await _get(session, base + "/v1/identity"))[1])
                observed["metrics"] = (await _get(session, base + "/metrics"))[1]
                observed["page"] = {
                    path: (await _get(session, base + path))[0]
                    for path in ("/", "/page/status.js", "/page/status.css", "/v1/status")
                }
            observed["requests"] = list(kube.requests)
        finally:
            started = time.monotonic()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            stderr = await asyncio.wait_for(proc.stderr.read(), 30) if proc.stderr else b""
            observed["exit"] = await asyncio.wait_for(proc.wait(), 30)
            observed["stop_seconds"] = time.monotonic() - started
            observed["stderr"] = stderr.decode(errors="replace")
    observed["root_fingerprint"] = root.cert.fingerprint(hashes.SHA256()).hex()
    return observed


def _allowed(role: Obj, verb: str, resource: str, query: dict[str, str]) -> bool:
    for rule in role["rules"]:
        if "" not in rule["apiGroups"] or resource not in rule["resources"]:
            continue
        if verb not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if not names:
            return True
        selected = query.get("fieldSelector", "")
        if selected.startswith("metadata.name=") and selected.split("=", 1)[1] in names:
            return True
    return False


@pytest.mark.parametrize("mesh", ["linkerd", "istio"])
def test_built_pod_runs_from_the_wheel(
    image_venv: Path, mesh: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    docs = build("cluster1", mesh, tmp_path_factory.mktemp("deploy"))
    observed = asyncio.run(_run_pod(docs, mesh, image_venv, tmp_path))
    detail = observed["stderr"][-3000:]
    assert observed["live"] == 200, detail
    identity = observed["identity"]
    assert identity["cluster"] == "cluster1"
    # The mesh's root reached meshprobe: through the API (Linkerd) or the mounted file (Istio).
    assert [r["fingerprint_sha256"] for r in identity["roots"]] == [observed["root_fingerprint"]]
    assert (
        'meshprobe_trust_bundle_reload_success{source_cluster="cluster1"} 1.0'
        in (observed["metrics"])
    )
    assert 'discovery="kubernetes"' in observed["metrics"]
    assert set(observed["page"].values()) == {200}, observed["page"]  # the image's status page
    role = one(docs, "ClusterRole")
    calls = {(r.verb, r.resource, r.query.get("fieldSelector", "")) for r in observed["requests"]}
    assert ("list", "services", "") in calls and ("watch", "services", "") in calls
    for request in observed["requests"]:
        assert _allowed(role, request.verb, request.resource, request.query), request
    if mesh == DEFAULT_MESH:
        assert any(resource == "configmaps" for _, resource, _ in calls)
    else:
        assert not any(resource == "configmaps" for _, resource, _ in calls)
    assert observed["exit"] == 0, detail
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert observed["stop_seconds"] < min(SHUTDOWN_BOUND, grace), detail
