"""One server per deployment: a second `tandem serve` on the same data directory (or the
same PostgreSQL schema) refuses to start, naming the process that holds the lock."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.helpers.servers import TANDEM, free_port, serve

from tandem.server_lock import FileLock, PostgresLock, ServerRunningError, advisory_key

PG_URL = os.environ.get("TANDEM_TEST_POSTGRES_URL", "")
SRC = Path(__file__).resolve().parents[2] / "src"


def _env(data: Path, database_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["TANDEM_DATA_DIR"] = str(data)
    if database_url:
        env["TANDEM_DATABASE_URL"] = database_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    return env


def _second(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A second server on the same state, started without waiting: it is expected to refuse."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*TANDEM, "serve", "--port", str(free_port())], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _two_servers(tmp_path: Path, env: dict[str, str], data: Path) -> tuple[int, str, int]:
    """Start one server, then a second on the same state; the second's exit status and
    output, and the first's pid."""
    subprocess.run([*TANDEM, "init", "--data-dir", str(data)], env=env, check=True, capture_output=True)
    first, port = serve(env, tmp_path / "first.log")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
        second = _second(env, tmp_path / "second.log")
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
    first, _port = serve(env_one, tmp_path / "first.log")
    try:
        second = _second(_env(two, url), tmp_path / "second.log")
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


def test_an_interrupted_server_closes_its_database_and_lock_and_leaves(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) ends `tandem serve` with status 0: the SQLite write-ahead log is
    checkpointed away (the database was closed, not abandoned), the lock is free, and the
    process does not linger tearing down its interpreter."""
    import signal
    import time

    data = tmp_path / "data"
    env = _env(data)
    subprocess.run([*TANDEM, "init", "--data-dir", str(data)], env=env, check=True, capture_output=True)
    server, port = serve(env, tmp_path / "server.log")
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
        assert (data / "tandem.db-wal").exists()
        server.send_signal(signal.SIGINT)
        started = time.monotonic()
        status = server.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    log = (tmp_path / "server.log").read_text()
    assert status == 0, log
    assert "Finished server process" in log
    assert "Traceback" not in log
    assert not (data / "tandem.db-wal").exists()
    assert took < 30, f"the server took {took:.1f} s to leave after SIGINT"
    lock = FileLock(data / "tandem.lock")
    lock.acquire()
    lock.release()
