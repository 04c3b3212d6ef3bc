"""One error boundary for the CLI: no traceback ever reaches a person, every refusal
prints its stable code beside the message, and each kind of outcome has its own exit
status (tandem.cli.exit_codes)."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import World, new_member
from tests.helpers.cli import ks, wire
from tests.helpers.servers import free_port
from typer.testing import CliRunner

from tandem.cli import errors_boundary, exit_codes
from tandem.cli import main as cli_main
from tandem.client import transport as client_module
from tandem.client.members import draft_genesis
from tandem.core.roles import Role
from tandem.errors import InvalidStateError, RemoteError, TotpReplayError

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "cli error test passphrase"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli_main.app, list(args), env={"COLUMNS": "200", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    path = tmp_path / "alice.keystore"
    path.write_bytes(new_member("alice", Role.MANAGER).to_keystore(PASSPHRASE, log2_n=14))
    return path


# --- the server cannot be reached -----------------------------------------------------------


def test_connection_refused_says_what_to_check(keystore: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out = run("member", "list", "-k", str(keystore), "--server", url)
    assert code == exit_codes.UNREACHABLE
    assert f"cannot connect to the Tandem server at {url}" in out
    assert "tandem serve" in out
    assert "TANDEM_SERVER" in out
    assert "[unreachable]" in out


@pytest.mark.parametrize("url", ["127.0.0.1:8600", "localhost:8600", "tandem.example"])
def test_url_without_a_scheme_is_refused_before_anything_is_sent(keystore: Path, url: str) -> None:
    code, out = run("member", "list", "-k", str(keystore), "--server", url)
    assert code == exit_codes.UNREACHABLE
    assert f"the server URL '{url}' needs a scheme and a host" in out
    assert "http://HOST:PORT" in out
    assert "[server_url_invalid]" in out


def test_credentials_in_the_url_are_not_printed(keystore: Path) -> None:
    url = f"http://admin:hunter2secret@127.0.0.1:{free_port()}"
    code, out = run("member", "list", "-k", str(keystore), "--server", url)
    assert code == exit_codes.UNREACHABLE
    assert "hunter2secret" not in out


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_timeout_says_the_server_did_not_answer(
    keystore: Path, silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "REQUEST_TIMEOUT", 0.5)
    code, out = run("member", "list", "-k", str(keystore), "--server", silent_server)
    assert code == exit_codes.UNREACHABLE
    assert f"the Tandem server at {silent_server} did not answer within" in out
    assert "[server_timeout]" in out


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    """A TLS listener whose certificate nobody trusts."""
    cert_file, key_file = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = sock.accept()[0]
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://localhost:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def test_tls_failure_names_the_certificate_problem(keystore: Path, tls_server: str) -> None:
    code, out = run("member", "list", "-k", str(keystore), "--server", tls_server)
    assert code == exit_codes.UNREACHABLE
    assert f"TLS with the Tandem server at {tls_server} failed" in out
    assert "certificate" in out
    assert "SSL_CERT_FILE" in out
    assert "[server_tls_failed]" in out


def test_the_installed_command_prints_no_traceback(keystore: Path) -> None:
    """The console script itself (a subprocess, as a person runs it)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "member",
            "list",
            "-k",
            str(keystore),
            "--server",
            "localhost:1",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "TANDEM_PASSPHRASE": PASSPHRASE, "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert done.returncode == exit_codes.UNREACHABLE
    assert "Traceback" not in done.stderr + done.stdout
    assert "server_url_invalid" in done.stderr


# --- the server answers: refused, not found, conflict, bad input ------------------------------


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE)


def test_refused_not_found_conflict_and_bad_input_exit_apart(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    card = tmp_path / "nina.json"
    card.write_text(json.dumps(new_member("nina", Role.CUSTODIAN).card().to_json()))

    # refused: an auditor may not propose members (the server says so, with its code)
    code, out = run("member", "propose-add", str(card), *ks(tmp_path, "olga"))
    assert code == exit_codes.REFUSED, out
    assert "HTTP 403" in out

    # not found
    code, out = run("proposal", "show", "prop_0000000000000000", *ks(tmp_path, "alice"))
    assert code == exit_codes.NOT_FOUND, out
    assert "[not_found, HTTP 404]" in out

    # conflict: rejecting a proposal that was rejected already
    code, out = run("member", "propose-add", str(card), *ks(tmp_path, "alice"))
    assert code == exit_codes.OK, out
    prop = json.loads(out)["id"]
    code, out = run("proposal", "reject", prop, "--reason", "not yet", *ks(tmp_path, "bob"))
    assert code == exit_codes.OK, out
    code, out = run("proposal", "reject", prop, "--reason", "again", *ks(tmp_path, "cora"))
    assert code == exit_codes.CONFLICT, out
    assert "HTTP 409" in out

    # bad input: a card file that is not JSON
    card.write_text('{"name": "nina",\n  "role": custodian}\n')
    code, out = run("member", "propose-add", str(card), *ks(tmp_path, "alice"))
    assert code == exit_codes.BAD_INPUT, out
    assert "[malformed_json]" in out
    assert world.client.get(world["alice"], "/v1/proposals", status="pending") == []


def test_a_usage_error_is_bad_input() -> None:
    code, out = run("member", "list", "--no-such-option")
    assert code == exit_codes.BAD_INPUT
    assert "No such option" in out


def test_a_fault_in_the_program_is_one_line_without_its_text(
    keystore: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise ValueError("secret-looking detail 1234")

    monkeypatch.setattr(cli_main, "load_member", broken)
    code, out = run("member", "list", "-k", str(keystore))
    assert code == exit_codes.INTERNAL
    assert "internal error: ValueError at cli/main.py:" in out
    assert "secret-looking detail" not in out
    assert "[internal_error]" in out


def test_remote_codes_map_to_the_same_kinds_as_local_errors() -> None:
    assert errors_boundary.exit_status(RemoteError("not_found", "no", 404)) == exit_codes.NOT_FOUND
    assert errors_boundary.exit_status(RemoteError("invalid_state", "no", 409)) == exit_codes.CONFLICT
    assert errors_boundary.exit_status(InvalidStateError("no")) == exit_codes.CONFLICT
    assert errors_boundary.exit_status(RemoteError("malformed_json", "no", 422)) == exit_codes.BAD_INPUT
    assert errors_boundary.exit_status(RemoteError("role_not_allowed", "no", 403)) == exit_codes.REFUSED
    assert errors_boundary.exit_status(RemoteError("totp_replayed", "no", 401)) == exit_codes.REFUSED
    assert errors_boundary.exit_status(RemoteError("sealed", "no", 503)) == exit_codes.SERVER_ERROR
    assert errors_boundary.exit_status(RemoteError("internal_error", "boom", 500)) == exit_codes.SERVER_ERROR
    assert errors_boundary.exit_status(RemoteError("someday_new", "no", 404)) == exit_codes.NOT_FOUND
    assert errors_boundary.exit_status(TotpReplayError("used")) == exit_codes.REFUSED


def test_help_documents_the_exit_statuses() -> None:
    code, out = run("--help")
    assert code == 0
    flat = " ".join(out.split())
    for status, meaning in exit_codes.MEANINGS:
        assert f"{status} {' '.join(meaning.split())}" in flat
    doc = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    for status, _meaning in exit_codes.MEANINGS:
        assert f"| {status} |" in doc


def test_a_question_on_closed_input_stops_without_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`genesis sign` asks before signing; with no answer it stops and writes nothing."""
    from tandem.core.service_key import ServiceKey

    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    member = new_member("alice", Role.MANAGER)
    keystore = tmp_path / "alice.keystore"
    keystore.write_bytes(member.to_keystore(PASSPHRASE, log2_n=14))
    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity="Example Fund",
        created_at=1_790_000_000,
        service=ServiceKey.generate().public_json(),
        cards=[member.card()],
    )
    file = tmp_path / "genesis.json"
    file.write_text(json.dumps({"genesis": doc, "signatures": {}}))
    before = file.read_text()
    result = CliRunner().invoke(cli_main.app, ["genesis", "sign", str(file), "-k", str(keystore)], input="")
    assert result.exit_code == exit_codes.INTERRUPTED, result.output
    assert "a question got no answer" in result.output
    assert "Aborted" not in result.output
    assert file.read_text() == before
