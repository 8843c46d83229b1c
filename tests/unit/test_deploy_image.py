"""The Dockerfile and .dockerignore, checked without a Docker engine (none runs here).

hadolint lints the Dockerfile; the tests read its instructions and hold them to what the issue
and the Deployment need (multi-stage, slim base, no build tools in the final stage, the
Deployment's UID, `meshprobe run`, OCI labels), and evaluate .dockerignore the way Docker does.
tests/integration/test_deploy_run.py then runs the same pip steps from a freshly built wheel.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from meshprobe import __version__
from meshprobe.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOYMENT = ROOT / "deploy" / "base" / "deployment.yaml"
BASE_CONFIG = ROOT / "deploy" / "base" / "meshprobe.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OCI_LABELS = {"title", "description", "version", "revision", "licenses"}
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|gcc|g\+\+|cc|make|build-essential|python3?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) with their defaults
    stages: list[Stage]

    def resolve(self, text: str, extra: dict[str, str] | None = None) -> str:
        values = {**self.args, **(extra or {})}
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the file"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def stage_args(stage: Stage) -> dict[str, str]:
    out = {}
    for arg in stage.all("ARG"):
        key, _, default = arg.partition("=")
        out[key] = default
    return out


def final_pip_install(dockerfile: Dockerfile) -> list[str]:
    """The final stage's `python -m pip install ...`, as argv with ${VERSION} resolved."""
    final = dockerfile.stages[-1]
    (run,) = [r for r in final.all("RUN") if "pip install" in r]
    command = next(c for c in run.split("&&") if "pip install" in c)
    words = shlex.split(dockerfile.resolve(command, stage_args(final)))
    return [w for w in words if not w.startswith("--mount=")]


def build_pip_wheel(dockerfile: Dockerfile) -> list[str]:
    (run,) = dockerfile.stages[0].all("RUN")
    return shlex.split(run)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:].strip() if negated else line
        patterns.append((negated, _pattern_regex(line.strip("/"))))
    return patterns


def in_context(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return not excluded


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_does_find_things(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_multi_stage_from_a_slim_python_of_our_version(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) == 2
    build, final = dockerfile.stages
    assert build.name == "build"
    for stage in dockerfile.stages:
        image = dockerfile.resolve(stage.base)
        # OpenSSL 3.5 (trixie) instead of 3.0 (bookworm): docs/tls-cpu.md has the figures.
        assert re.fullmatch(r"python:3\.13-slim-trixie", image), image
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
    assert build_pip_wheel(dockerfile)[:4] == ["python", "-m", "pip", "wheel"]
    assert final.name is None


def test_final_stage_has_no_build_tools_and_no_sources(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    assert final.all("COPY") == [] and final.all("ADD") == []
    (run,) = final.all("RUN")
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in run
    assert not BUILD_TOOLS.search(run), run
    pip = final_pip_install(dockerfile)
    assert pip[:4] == ["python", "-m", "pip", "install"]
    assert "--no-index" in pip and "--find-links=/wheels" in pip
    # The image installs exactly the version it is labelled with.
    assert pip[-1] == f"meshprobe[fast]=={__version__}"


def test_runs_as_the_deployments_non_root_user(dockerfile: Dockerfile) -> None:
    (user,) = dockerfile.stages[-1].all("USER")
    uid, gid = (int(x) for x in user.split(":"))  # numeric, so runAsNonRoot can verify it
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    for context in (pod["securityContext"], main["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert uid != 0
    assert f"--uid {uid} --gid {gid}" in dockerfile.stages[-1].all("RUN")[0]


def test_entrypoint_with_the_deployments_args_is_meshprobe_run(dockerfile: Dockerfile) -> None:
    (entrypoint,) = dockerfile.stages[-1].all("ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: meshprobe is PID 1 and gets SIGTERM itself
    assert argv == ["meshprobe", "run"]
    assert PYPROJECT["project"]["scripts"]["meshprobe"] == "meshprobe.cli.main:main"
    (main,) = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    assert "command" not in main  # the image's entrypoint stays
    parsed = build_parser().parse_args(argv[1:] + main["args"])
    assert parsed.func.__name__ == "cmd_run"
    assert parsed.config == "/etc/meshprobe/config/meshprobe.yaml"


def test_oci_labels_and_version(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    labels = dict(w.split("=", 1) for label in final.all("LABEL") for w in shlex.split(label))
    prefix = "org.opencontainers.image."
    assert {k.removeprefix(prefix) for k in labels if k.startswith(prefix)} >= OCI_LABELS
    assert labels[prefix + "version"] == "${VERSION}"
    assert stage_args(final)["VERSION"] == __version__
    assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]
    assert labels[prefix + "title"] == "meshprobe"


def test_exposes_the_configured_port(dockerfile: Dockerfile) -> None:
    listen = yaml.safe_load(BASE_CONFIG.read_text())["listen"]
    assert dockerfile.stages[-1].all("EXPOSE") == [listen.rsplit(":", 1)[1]]


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else(
    dockerfile: Dockerfile,
) -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    sources = [w for copy in dockerfile.stages[0].all("COPY") for w in copy.split()[:-1]]
    assert sources == ["pyproject.toml", "README.md", "meshprobe"]
    for source in sources:
        assert in_context(source, patterns), source
    package = [p.relative_to(ROOT).as_posix() for p in (ROOT / "meshprobe").rglob("*.py")]
    assert len(package) > 10
    for path in package:
        assert in_context(path, patterns), path
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_deploy.py",
        "deploy/base/deployment.yaml",
        "grafana/meshprobe-overview.json",
        "Dockerfile",
        "meshprobe/__pycache__/cli.cpython-311.pyc",
        "meshprobe.egg-info/PKG-INFO",
    ):
        assert not in_context(path, patterns), path


def test_dockerignore_matcher_follows_docker() -> None:
    patterns = dockerignore_patterns("*\n!keep/\nkeep/**/*.log\n")
    assert not in_context("top.txt", patterns)
    assert not in_context("dir/file", patterns)
    assert in_context("keep/a/b.txt", patterns)
    assert not in_context("keep/a/b.log", patterns)
    assert not in_context("keep/b.log", patterns)
