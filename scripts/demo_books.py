"""Demo chapter: the custodian's books on a real local chain (anvil).

``books_chain(out)`` starts anvil (Sepolia's chain id) and returns the environment the
server needs to read it, or None (saying why) when anvil is not installed; the server
must start after it. ``BOOKS_ADDRESS_BOOK`` is the destination genesis should carry.
``books_chapter(demo, anvil_url)`` then tells the story: a client is proposed and
approved, a key ceremony makes its segregated wallet, deposits arrive on the chain and
enter the register, a withdrawal names only wallet, asset, amount and destination
(nonce and fees come from the chain), is approved, released, broadcast and confirmed,
the register and the chain reconcile (and a stray transfer is named), the auditor
re-runs the reconciliation offline, and a quarterly statement PDF is written.

Run alone (``python scripts/demo_books.py``) it starts its own server for the chapter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SEPOLIA_CHAIN_ID = 11155111
DESTINATION = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BOOKS_ADDRESS_BOOK = [
    {"chain": "ethereum", "network": "sepolia", "address": DESTINATION, "label": "Prime broker (Sepolia)"},
]
CLIENT_CEREMONY = """
[ceremony]
name = "client-acme-sepolia"
description = "Segregated Ethereum (Sepolia) wallet for client acme"
kind = "keygen"
curve = "secp256k1"
count = 1
segregation = "client:acme"
expiry_seconds = 86400

[[ceremony.chains]]
chain = "ethereum"
network = "sepolia"
chain_id = 11155111

[ceremony.approvals]
custodian = 1
manager = 0
"""


def _anvil_binary() -> str | None:
    tools = Path(os.environ.get("TANDEM_TOOLS_DIR") or ROOT / ".tools") / "node_modules"
    for candidate in (
        os.environ.get("TANDEM_ANVIL", ""),
        str(tools / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"),
        shutil.which("anvil") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    answer = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=30
    )
    doc = answer.json()
    if "error" in doc:
        raise SystemExit(f"anvil {method}: {doc['error']}")
    return doc["result"]


def books_chain(
    out: Path, *, note: Callable[[str], None] = print
) -> tuple[dict[str, str], Callable[[], None]] | None:
    """Start anvil; the env to give the server, and how to stop the node. None when anvil
    is missing (the chapter is then skipped, and says so)."""
    binary = _anvil_binary()
    if binary is None:
        note("anvil is not installed (scripts/test installs it with npm): the books chapter is skipped")
        return None
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = (out / "anvil.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - the located anvil binary
        [binary, "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(SEPOLIA_CHAIN_ID), "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            _rpc(url, "eth_chainId")
            break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit("anvil did not start; see anvil.log")

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()

    return {"TANDEM_CHAIN_ETHEREUM_SEPOLIA": f"jsonrpc+{url}"}, stop


def _send(url: str, to: str, wei: int) -> str:
    dev = _rpc(url, "eth_accounts")[0]
    tx_hash: str = _rpc(url, "eth_sendTransaction", [{"from": dev, "to": to, "value": hex(wei)}])
    return tx_hash


def books_chapter(demo: Any, anvil_url: str) -> None:  # noqa: PLR0915 - one chapter, told in order
    """The chapter; ``demo`` is scripts/demo.py's Demo (client, members, code, keystore,
    env, out), its server started with :func:`books_chain`'s environment."""
    import demo as demo_module

    from tandem.core import reconcile as rcore

    cli, say, note = demo_module.cli, demo_module.say, demo_module.note
    alice, bob, olga = (demo.members[n] for n in ("alice", "bob", "olga"))
    ks = {n: str(demo.keystore(n)) for n in ("alice", "bob", "olga")}
    out = demo.out / "books"
    out.mkdir(exist_ok=True)

    say("Books: clients, the register of positions, reconciliation and statements")
    prop = demo.client.books.propose_client(
        alice, client_id="acme", name="Acme Pension Fund", segregation="segregated"
    )
    cli(
        "client",
        "approve",
        prop["proposal"],
        "--keystore",
        ks["bob"],
        "--totp",
        demo.code("bob"),
        env=demo.env,
    )
    note("client acme (segregated) proposed by the manager, approved by the custodian")
    transcript = demo.client.ceremonies.run(
        proposer=alice, approvers=[bob], definition_text=CLIENT_CEREMONY, code=demo.code
    )
    wallet = transcript["keyset"]["id"]
    address = transcript["addresses"][0]["address"]
    note(f"its wallet {wallet}: {address} [client:acme]")

    txid = _send(anvil_url, address, 5 * 10**18)
    seen = demo.client.books.scan(bob)
    eth_in = int(seen[0]["amount"]) / 10**18
    note(
        f"deposit seen on the chain: {eth_in:g} ETH ({seen[0]['amount']} wei) into acme's wallet, "
        f"tx {txid}, block {seen[0]['height']}; credited to client {seen[0]['client']} in the register"
    )

    intent = {
        "wallet": wallet,
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": str(10**18),
        "destination": DESTINATION,
    }
    (out / "intent.json").write_text(json.dumps(intent, indent=2) + "\n")
    created = demo.client.withdrawals.create(alice, intent)
    note(
        f"withdrawal {created['id']}: nonce {created['intent']['ethereum']['nonce']} and fee caps filled "
        "from the chain; the intent named only wallet, asset, amount and destination"
    )
    demo.client.withdrawals.approve(
        bob, created["id"], totp=demo.code("bob"), expected_fingerprint=created["fingerprint"]
    )
    released = demo.client.withdrawals.release(bob, created["id"])
    (out / "released.json").write_text(json.dumps(released, indent=2) + "\n")
    sent = json.loads(
        cli("withdraw", "broadcast", created["id"], "--keystore", ks["bob"], env=demo.env).stdout
    )
    note(f"broadcast through the chain backend: {sent['status']}, txid {sent['txid']}")
    for _ in range(20):  # anvil mines at once; a loaded machine may answer a moment later
        tracked = json.loads(
            cli("withdraw", "track", created["id"], "--keystore", ks["bob"], env=demo.env).stdout
        )
        if tracked["state"] != "pending":
            break
        note("waiting for the node to mine it")
        time.sleep(0.5)
    note(
        f"confirmed at block {tracked['height']} ({tracked['confirmations']} confirmation); "
        "the amount and the fee the chain charged entered the register"
    )

    report = out / "reconciliation.json"
    ok = cli("reconcile", "--out", str(report), "--keystore", ks["bob"], env=demo.env)
    note(ok.stdout.strip().splitlines()[-1])
    stray = _send(anvil_url, address, 123_456)
    bad = cli(
        "reconcile",
        "--out",
        str(out / "reconciliation-stray.json"),
        "--keystore",
        ks["bob"],
        env=demo.env,
        check=False,
    )
    kinds = [
        d["kind"]
        for d in json.loads((out / "reconciliation-stray.json").read_text())["report"]["discrepancies"]
    ]
    if bad.returncode == 0 or kinds != ["unexpected_inflow"]:
        raise SystemExit("DEMO FAILURE: a transfer Tandem did not make was not named")
    note(f"a transfer Tandem did not make (123456 wei, tx {stray[:18]}...) is named: {kinds[0]}")

    export_dir = out / "audit-export"
    cli("audit", "export", "--out", str(export_dir), "--keystore", ks["olga"], env=demo.env)
    signed = json.loads((out / "reconciliation-stray.json").read_text())
    (out / "snapshot.json").write_text(json.dumps(signed["snapshot"], indent=2) + "\n")
    verified = cli(
        "verify",
        "reconciliation",
        str(out / "reconciliation-stray.json"),
        "--register",
        str(export_dir / "audit.jsonl"),
        "--snapshot",
        str(out / "snapshot.json"),
        env=demo.env,
    )
    note(
        "auditor, offline, from the exported log and the chain snapshot of that report: "
        + verified.stdout.strip().splitlines()[-1]
    )

    now = int(time.time())
    prices = out / "prices.csv"
    prices.write_text(
        f"asset,price,currency,time,source,method\nETH,2450.00,EUR,{now - 60},"
        "Example reference rate,closing price before period end\n"
    )
    cli("prices", "import", str(prices), "--keystore", ks["alice"], env=demo.env)
    d = datetime.fromtimestamp(now, tz=UTC)
    period = f"{d.year}-Q{(d.month - 1) // 3 + 1}"
    statements = demo.out / "statements"
    cli(
        "statement",
        "--period",
        period,
        "--all-clients",
        "--custodian",
        "Example Custodian S.A.",
        "--out",
        str(statements),
        "--keystore",
        ks["bob"],
        env=demo.env,
    )
    pdf = statements / f"statement-{period}-all.pdf"
    cli("audit", "export", "--out", str(export_dir), "--keystore", ks["olga"], env=demo.env)
    checked = cli(
        "verify", "statement", str(pdf), "--register", str(export_dir / "audit.jsonl"), env=demo.env
    )
    note(
        f"quarterly statement {pdf.relative_to(demo.out)} (also .json, .csv); "
        + checked.stdout.strip().splitlines()[-1]
    )
    _ = (olga, rcore)


def main() -> None:
    """The chapter alone: its own server, genesis and chain."""
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import demo as demo_module

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out", help="artifact directory")
    out: Path = parser.parse_args().out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "keystores").mkdir(parents=True)
    chain = books_chain(out, note=demo_module.note)
    if chain is None:
        return
    env, stop = chain
    demo_module.ADDRESS_BOOK.extend(BOOKS_ADDRESS_BOOK)
    d = demo_module.Demo(out)
    d.env.update(env)
    try:
        d.start_server()
        d.identities_and_genesis()
        books_chapter(d, env["TANDEM_CHAIN_ETHEREUM_SEPOLIA"].removeprefix("jsonrpc+"))
    finally:
        d.stop_server()
        stop()


if __name__ == "__main__":
    main()
