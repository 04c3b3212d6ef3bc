"""The books commands driven through Typer against the in-process server, on a real
anvil chain: scan, reconcile, re-run offline with `tandem verify reconciliation`,
import prices, issue statements and check the PDF with `tandem verify statement`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.books.helpers import books_for, make_client
from tests.chainio.conftest import Anvil
from tests.conftest import World
from tests.helpers.keysets import make_keyset
from typer.testing import CliRunner

from tandem.cli import books_cmds
from tandem.cli.main import app

PASSPHRASE = "cli test passphrase"


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(books_cmds, "Client", lambda server: world.client)
    for name in ("alice", "bob", "olga"):
        (tmp_path / f"{name}.ks").write_bytes(world[name].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True) -> str:
    result = cli.invoke(app, list(args))
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def export(world: World, folder: Path) -> Path:
    lines, checkpoint = world.client.audit.export(world["olga"])
    folder.mkdir(exist_ok=True)
    (folder / "audit.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / "checkpoint.json").write_text(json.dumps(checkpoint))
    (folder / "service-key.json").write_text(json.dumps({"sign_public": world.svc.key.sign_public.hex()}))
    return folder / "audit.jsonl"


def test_cli_books(world: World, anvil: Anvil, cli: CliRunner, tmp_path: Path) -> None:
    books = books_for(world, anvil.url)
    make_client(world, books, "acme")
    ks = make_keyset(world, chains=(("ethereum", "sepolia"),), segregation="client:acme")
    address = ks.addresses[0]["address"]
    anvil.send_from_dev(address, value=10**18)
    alice, bob = ("-k", str(tmp_path / "alice.ks")), ("-k", str(tmp_path / "bob.ks"))

    assert "acme" in run(cli, "client", "list", *alice)
    assert address in run(cli, "register", "scan", *alice)
    assert "acme" in run(cli, "register", "positions", "--client", "acme", *bob)
    assert '"1000000000000000000"' in run(cli, "register", "movements", "--client", "acme", *bob)
    anvil.send_from_dev(address, value=777)  # a transfer Tandem did not make
    report = tmp_path / "report.json"
    out = run(cli, "reconcile", "--out", str(report), *bob, ok=False)  # exits 1 on a discrepancy
    assert "verdict: discrepancies" in out
    # In words: counted in the singular, the height read, the difference in coins and its meaning.
    worded = (
        "(1 discrepancy; read ethereum/sepolia at height ",
        f"unexpected_inflow at {address}: +0.000000000000000777 ETH (777 wei)",
        "(the chain holds more than the register)",
        "1.000000000000000777 ETH",
    )
    assert all(text in out for text in worded), out
    assert "reading the chains: 1/1 addresses" in out  # a background job, its progress shown
    signed = json.loads(report.read_text())
    assert [d["kind"] for d in signed["report"]["discrepancies"]] == ["unexpected_inflow"]
    # The job is kept: listed, and followed again by its id, with the same report.
    (job,) = json.loads(run(cli, "reconcile", "--list-jobs", *bob))
    assert (job["state"], job["done"], job["total"]) == ("done", 1, 1)
    again = run(cli, "reconcile", "--job", job["job"], "--out", str(tmp_path / "again.json"), *bob, ok=False)
    assert "verdict: discrepancies" in again
    assert json.loads((tmp_path / "again.json").read_text())["report_sha256"] == signed["report_sha256"]
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(signed["snapshot"]))

    audit_file = export(world, tmp_path / "export")
    out = run(
        cli,
        "verify",
        "reconciliation",
        str(report),
        "--register",
        str(audit_file),
        "--snapshot",
        str(snapshot),
    )
    assert "same verdict: discrepancies" in out

    # An edited register entry in the export is refused.
    lines = audit_file.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"register.deposit"' in line)
    lines[at] = lines[at].replace('"1000000000000000000"', '"1000000000000000777"')
    forged = tmp_path / "forged"
    forged.mkdir()
    for name in ("checkpoint.json", "service-key.json"):
        (forged / name).write_text((audit_file.parent / name).read_text())
    (forged / "audit.jsonl").write_text("\n".join(lines) + "\n")
    out = run(
        cli,
        "verify",
        "reconciliation",
        str(report),
        "--register",
        str(forged / "audit.jsonl"),
        "--snapshot",
        str(snapshot),
        ok=False,
    )
    assert f"entry {at}" in out

    prices = tmp_path / "prices.csv"
    prices.write_text(
        f"asset,price,currency,time,source,method\nETH,2000,EUR,{world.clock()},Example venue,closing price\n"
    )
    assert "imported" in run(cli, "prices", "import", str(prices), *alice)
    d = datetime.fromtimestamp(world.clock(), tz=UTC)
    period = f"{d.year}-Q{(d.month - 1) // 3 + 1}"
    folder = tmp_path / "statements"
    issued = run(
        cli,
        "statement",
        "--period",
        period,
        "--all-clients",
        "--custodian",
        "Example Custodian",
        "--out",
        str(folder),
        *bob,
    )
    pdf = folder / f"statement-{period}-all.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert f"wrote {pdf.stem}.pdf, {pdf.stem}.json and {pdf.stem}.csv in " in issued, issued
    doc = json.loads((folder / f"statement-{period}-all.json").read_text())
    assert doc[0]["assets"][0]["value"] == "2000.00"
    audit_file = export(world, tmp_path / "export2")
    out = run(cli, "verify", "statement", str(pdf), "--register", str(audit_file))
    assert "issued at entry" in out
    as_json = folder / f"statement-{period}-all.json"
    assert "issued at entry" in run(cli, "verify", "statement", str(as_json), "--register", str(audit_file))
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(pdf.read_bytes() + b"\n%")
    assert "no statement" in run(
        cli, "verify", "statement", str(tampered), "--register", str(audit_file), ok=False
    )
