"""The container, checked without a Docker engine: the Dockerfile is parsed (base image
pinned by digest, hash-locked installs, health check with a start period, the service
key outside the data volume), the locks are checked against pyproject.toml, and
docker/entrypoint.sh is run with bash against a stand-in `tandem` on PATH."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending
    return out


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


# --- Dockerfile ------------------------------------------------------------------------


def test_every_base_image_is_pinned_by_digest() -> None:
    froms = args_of("FROM")
    assert froms
    for image in froms:
        ref = image.split()[0]
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", ref), ref


def test_installs_come_from_hash_locks_only() -> None:
    runs = " && ".join(args_of("RUN"))
    installs = [c.strip() for c in re.split(r"&&", runs) if "pip install" in c]
    assert installs
    for command in installs:
        words = shlex.split(command)
        if "-r" in words:
            assert "--require-hashes" in words, command
            assert words[words.index("-r") + 1] in {"requirements/build.lock", "requirements/server.lock"}
        else:  # Tandem itself: nothing fetched, nothing resolved
            assert {"--no-deps", "--no-index", "--no-build-isolation"} <= set(words), command


def test_health_check_follows_health_with_a_start_period() -> None:
    (check,) = args_of("HEALTHCHECK")
    start = re.search(r"--start-period=(\d+)s", check)
    assert start is not None
    assert int(start.group(1)) >= 60
    assert "/v1/health" in check
    assert "status == 200" in check  # a sealed 503 is unhealthy (urlopen raises on it too)


def test_service_key_lives_outside_the_data_volume() -> None:
    env = " ".join(args_of("ENV"))
    key = re.search(r"TANDEM_SERVICE_KEY_FILE=(\S+)", env)
    data = re.search(r"TANDEM_DATA_DIR=(\S+)", env)
    assert key is not None
    assert data is not None
    (volume,) = args_of("VOLUME")
    volumes = json.loads(volume)
    assert volumes == [data.group(1)]
    assert not any(key.group(1).startswith(v.rstrip("/") + "/") for v in volumes)


def test_entrypoint_passes_arguments_through() -> None:
    (entry,) = args_of("ENTRYPOINT")
    assert json.loads(entry) == ["tandem-entrypoint"]  # exec form: signals reach the server
    assert json.loads(args_of("CMD")[0]) == ["serve"]
    assert any("docker/entrypoint.sh /usr/local/bin/tandem-entrypoint" in c for c in args_of("COPY"))
    assert 'exec tandem serve' in ENTRYPOINT.read_text()
    assert args_of("USER") == ["tandem"]


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", "**/.venv", "**/demo-out", "**/.tools", "**/*.keystore", "**/service.key"):
        assert needed in entries, needed


# --- locks -----------------------------------------------------------------------------


def lock_entries(path: Path) -> dict[str, tuple[Version, list[str]]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, tuple[Version, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --hash=")
        name, _, version = spec.strip().partition("==")
        assert version, f"{path.name}: {line!r} is not pinned"
        hashes = [h.strip() for h in options]
        assert hashes, f"{path.name}: {name} has no hash"
        for h in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), (name, h)
        out[str(canonicalize_name(name))] = (Version(version), hashes)
    return out


def test_server_lock_covers_every_server_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = lock_entries(ROOT / "requirements" / "server.lock")
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["server"]]
    for req in wanted:
        name = str(canonicalize_name(req.name))
        assert name in locked, f"{name} is in pyproject.toml but not in requirements/server.lock"
        version, _ = locked[name]
        assert req.specifier.contains(version, prereleases=True), (name, str(version), str(req.specifier))
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            assert f"{name}-{extra}" in locked, f"{name}[{extra}]"
    # Nothing the dev extra alone brings is in the image.
    assert "pytest" not in locked
    assert "hypothesis" not in locked


def test_build_lock_pins_the_build_backend() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    locked = lock_entries(ROOT / "requirements" / "build.lock")
    for req in map(Requirement, build):
        name = str(canonicalize_name(req.name))
        assert name in locked, name
        assert req.specifier.contains(locked[name][0]), name


# --- entrypoint ------------------------------------------------------------------------

FAKE_TANDEM = """#!/usr/bin/env bash
# Stand-in for the real CLI: records its arguments and environment, prints like init.
printf '%s\\n' "$*" >> "$FAKE_LOG"
if [ "$1" = init ]; then
  printf 'TANDEM_SERVICE_KEY_FILE=%s TANDEM_DATA_DIR=%s\\n' \\
    "$TANDEM_SERVICE_KEY_FILE" "$TANDEM_DATA_DIR" >> "$FAKE_LOG"
  echo 'service key exists: /run/tandem/service.key'
  echo '{"sign_public": "aa11", "seal_public": "bb22"}'
  echo 'service key id: sk_0123'
  echo 'claim token (shown once; give it to whoever submits genesis):'
  echo '  tclaim_SECRETSECRET'
fi
exit 0
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tandem"
    fake.write_text(FAKE_TANDEM)
    fake.chmod(0o755)
    (tmp_path / "key").mkdir()
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "TANDEM_DATA_DIR": str(tmp_path / "data"),
        "TANDEM_SERVICE_KEY_FILE": str(tmp_path / "key" / "service.key"),
        "TANDEM_ALLOW_UNMOUNTED_KEY": "1",
    }


def run_entry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def test_default_is_init_then_serve(sandbox: dict[str, str]) -> None:
    result = run_entry(sandbox)
    assert result.returncode == 0, result.stderr
    log = calls(sandbox)
    assert log[0] == f"init --data-dir {sandbox['TANDEM_DATA_DIR']}"
    key, data = sandbox["TANDEM_SERVICE_KEY_FILE"], sandbox["TANDEM_DATA_DIR"]
    assert log[1] == f"TANDEM_SERVICE_KEY_FILE={key} TANDEM_DATA_DIR={data}"
    assert log[2] == "serve --host 0.0.0.0 --port 8600"
    # The public key is printed and kept in the data volume; the claim token only printed.
    assert '"sign_public": "aa11"' in result.stdout
    assert "tclaim_SECRETSECRET" in result.stdout
    kept = (Path(sandbox["TANDEM_DATA_DIR"]) / "service-public.txt").read_text()
    assert '"sign_public": "aa11"' in kept
    assert "sk_0123" in kept
    assert "tclaim_" not in kept
    assert not list(Path(sandbox["TANDEM_DATA_DIR"]).glob("*.tmp"))


def test_serve_arguments_are_passed_through(sandbox: dict[str, str]) -> None:
    result = run_entry(sandbox, "serve", "--port", "9000")
    assert result.returncode == 0, result.stderr
    assert calls(sandbox)[-1] == "serve --host 0.0.0.0 --port 8600 --port 9000"
    result = run_entry(sandbox, "--host", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    assert calls(sandbox)[-1] == "serve --host 0.0.0.0 --port 8600 --host 127.0.0.1"


def test_other_commands_run_as_given(sandbox: dict[str, str]) -> None:
    result = run_entry(sandbox, "audit", "verify", "--full", "two words")
    assert result.returncode == 0, result.stderr
    assert calls(sandbox) == ["audit verify --full two words"]  # no init, no serve
    result = run_entry(sandbox, "tandem", "--version")
    assert calls(sandbox)[-1] == "--version"
    shell = run_entry(sandbox, "sh", "-c", "echo from-sh")
    assert shell.stdout.strip() == "from-sh"


def test_tandem_commands_win_over_programs_of_the_same_name(sandbox: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "bin" / "init"
    other.write_text("#!/bin/sh\necho not-tandem\n")
    other.chmod(0o755)
    result = run_entry(sandbox, "init", "--new-claim-token")
    assert result.returncode == 0, result.stderr
    assert "not-tandem" not in result.stdout
    assert calls(sandbox)[0] == "init --new-claim-token"
    assert not any(c.startswith("serve") for c in calls(sandbox))


def test_key_inside_the_data_volume_is_refused(sandbox: dict[str, str]) -> None:
    sandbox["TANDEM_SERVICE_KEY_FILE"] = sandbox["TANDEM_DATA_DIR"] + "/keys/../service.key"
    result = run_entry(sandbox)
    assert result.returncode == 64
    assert "inside the data volume" in result.stderr
    assert calls(sandbox) == []


def test_unmounted_key_directory_is_refused(sandbox: dict[str, str]) -> None:
    del sandbox["TANDEM_ALLOW_UNMOUNTED_KEY"]
    result = run_entry(sandbox)
    assert result.returncode == 64
    assert "is not a mount" in result.stderr
    assert calls(sandbox) == []


def test_a_mounted_key_directory_is_accepted(sandbox: dict[str, str]) -> None:
    """/proc is a mount point on every Linux host; a key file below it passes the check."""
    if not Path("/proc/self/mountinfo").exists():
        pytest.skip("no /proc/self/mountinfo")
    del sandbox["TANDEM_ALLOW_UNMOUNTED_KEY"]
    sandbox["TANDEM_SERVICE_KEY_FILE"] = "/proc/service.key"
    result = run_entry(sandbox)
    assert result.returncode == 0, result.stderr
    assert calls(sandbox)[-1] == "serve --host 0.0.0.0 --port 8600"


def test_a_failing_init_stops_the_start(sandbox: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "tandem"
    fake.write_text(FAKE_TANDEM.replace("exit 0", 'if [ "$1" = init ]; then exit 3; fi; exit 0'))
    result = run_entry(sandbox)
    assert result.returncode == 3
    assert not any(c.startswith("serve") for c in calls(sandbox))


def test_entrypoint_passes_bash_syntax_check() -> None:
    assert subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)


# --- the health check's own command, against real servers ---------------------------------


def health_command() -> list[str]:
    (check,) = args_of("HEALTHCHECK")
    command: list[str] = json.loads(check[check.index("CMD ") + 4 :])
    return command


def _serve(tmp_path: Path, name: str, *, tamper: bool) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    import socket
    import sqlite3
    import sys
    import time

    import httpx

    data = tmp_path / name
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update(TANDEM_DATA_DIR=str(data), TANDEM_PORT=port, PYTHONPATH=str(ROOT / "src"))
    cli = [sys.executable, "-m", "tandem.cli"]
    subprocess.run([*cli, "init", "--data-dir", str(data)], env=env, check=True, capture_output=True)
    if tamper:
        with sqlite3.connect(data / "tandem.db") as conn:
            conn.execute(
                "INSERT INTO auditrow (seq, hash, kind, line) VALUES (0, ?, 'x', '{}')", ("00" * 32,)
            )
    proc = subprocess.Popen(
        [*cli, "serve", "--port", port], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
            return proc, env
        except httpx.TransportError:
            assert proc.poll() is None
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def test_health_check_command_follows_the_seal(tmp_path: Path) -> None:
    command = health_command()
    assert command[0] == "python"
    command = [__import__("sys").executable, *command[1:]]
    sound, env = _serve(tmp_path, "sound", tamper=False)
    sealed, sealed_env = _serve(tmp_path, "sealed", tamper=True)
    try:
        assert subprocess.run(command, env=env, capture_output=True, check=False).returncode == 0
        assert subprocess.run(command, env=sealed_env, capture_output=True, check=False).returncode != 0
    finally:
        for proc in (sound, sealed):
            proc.terminate()
            proc.wait(timeout=20)
    # Nothing listening (still starting, or gone): unhealthy.
    assert subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0
