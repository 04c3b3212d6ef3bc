"""One server per deployment: a second `tandem serve` on the same data directory (or the
same PostgreSQL schema) refuses to start, naming the process that holds the lock."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tandem.server_lock import FileLock, PostgresLock, ServerRunningError, advisory_key

TANDEM = [sys.executable, "-m", "tandem.cli"]
PG_URL = os.environ.get("TANDEM_TEST_POSTGRES_URL", "")
SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data: Path, database_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["TANDEM_DATA_DIR"] = str(data)
    if database_url:
        env["TANDEM_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    return env


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*TANDEM, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return proc, port


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not become healthy:\n{log.read_text()}")


def _two_servers(tmp_path: Path, env: dict[str, str], data: Path) -> tuple[int, str, int]:
    """Start one server, then a second on the same state; the second's exit status and
    output, and the first's pid."""
    subprocess.run([*TANDEM, "init", "--data-dir", str(data)], env=env, check=True, capture_output=True)
    first, port = _serve(env, tmp_path / "first.log")
    try:
        _wait_healthy(first, port, tmp_path / "first.log")
        second, _ = _serve(env, tmp_path / "second.log")
        try:
            status = second.wait(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        # The first keeps serving.
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
        return status, (tmp_path / "second.log").read_text(), first.pid
    finally:
        first.terminate()
        first.wait(timeout=20)


def test_second_server_on_one_data_directory_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    status, output, first_pid = _two_servers(tmp_path, _env(data), data)
    assert status != 0
    assert f"pid {first_pid}" in output
    assert "server_already_running" in output
    assert "Traceback" not in output
    # Once the first has gone, the lock is free again.
    lock = FileLock(data / "tandem.lock")
    lock.acquire()
    assert lock.held
    lock.release()


def test_file_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    """A lock held by another process (a real child holding flock) is refused with its pid."""
    path = tmp_path / "tandem.lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; sys.path.insert(0, sys.argv[2]);"
            "from pathlib import Path; from tandem.server_lock import FileLock;"
            "lock = FileLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)",
            str(path),
            str(SRC),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"held"
        with pytest.raises(ServerRunningError) as err:
            FileLock(path).acquire()
        assert f"pid {child.pid}" in err.value.message
        assert err.value.details["pid"] == child.pid
    finally:
        child.kill()
        child.wait()
    again = FileLock(path)
    again.acquire()
    again.release()


def test_advisory_key_is_stable_and_signed_64_bit() -> None:
    a, b = advisory_key("public"), advisory_key("t_abc")
    assert a == advisory_key("public")
    assert a != b
    assert -(1 << 63) <= a < (1 << 63)


needs_pg = pytest.mark.skipif(not PG_URL, reason="TANDEM_TEST_POSTGRES_URL not set")


@pytest.fixture
def pg_schema() -> str:
    import psycopg

    schema = "t_lock_" + secrets.token_hex(6)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema  # type: ignore[misc]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
@needs_pg
def test_postgres_advisory_lock_is_per_schema(pg_schema: str) -> None:
    first = PostgresLock(PG_URL, schema=pg_schema)
    first.acquire()
    try:
        with pytest.raises(ServerRunningError) as err:
            PostgresLock(PG_URL, schema=pg_schema, wait_seconds=0.5).acquire()
        assert err.value.code == "server_already_running"
        assert pg_schema in err.value.message
        assert "backend pid" in err.value.message
        other = PostgresLock(PG_URL, schema=pg_schema + "_other")
        other.acquire()  # another schema is another deployment
        other.release()
    finally:
        first.release()
    again = PostgresLock(PG_URL, schema=pg_schema)
    again.acquire()  # released with its connection
    again.release()


@pytest.mark.postgres
@needs_pg
def test_second_server_on_one_postgres_schema_refuses(tmp_path: Path, pg_schema: str) -> None:
    """Two real servers with different data directories but one PostgreSQL schema."""
    from urllib.parse import quote

    url = PG_URL + ("&" if "?" in PG_URL else "?") + "options=" + quote(f"-csearch_path={pg_schema}")
    one, two = tmp_path / "one", tmp_path / "two"
    env_one = _env(one, url)
    subprocess.run([*TANDEM, "init", "--data-dir", str(one)], env=env_one, check=True, capture_output=True)
    (two).mkdir()
    (two / "service.key").write_bytes((one / "service.key").read_bytes())
    first, port = _serve(env_one, tmp_path / "first.log")
    try:
        _wait_healthy(first, port, tmp_path / "first.log")
        second, _ = _serve(_env(two, url), tmp_path / "second.log")
        status = second.wait(timeout=60)
        output = (tmp_path / "second.log").read_text()
        assert status != 0
        assert "server_already_running" in output
        assert pg_schema in output
    finally:
        first.terminate()
        first.wait(timeout=20)


@pytest.mark.postgres
@needs_pg
def test_a_restart_after_the_holder_dies_waits_for_its_lock(pg_schema: str) -> None:
    """The holder's connection closes a moment after the new server asks: it waits."""
    import threading

    first = PostgresLock(PG_URL, schema=pg_schema)
    first.acquire()
    timer = threading.Timer(1.0, first.release)
    timer.start()
    try:
        second = PostgresLock(PG_URL, schema=pg_schema, wait_seconds=10)
        second.acquire()
        assert second.held
        second.release()
    finally:
        timer.cancel()
        first.release()
