"""The Tandem story, end to end, against a real server on the embedded SQLite default.

A fund manager and a custodian representative create a deployment, change its
membership under dual control, see a self-approval refused, and hand an auditor an
export of the tamper-evident log that verifies offline. Each later capability adds
its chapter. Artifacts are written to demo-out/ (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tandem.client import Client
from tandem.client.pin import PinnedDeployment
from tandem.core.identity import MemberSecrets
from tandem.core.policy import default_policy
from tandem.core.roles import Role
from tandem.core.totp import code_at
from tandem.errors import RemoteError

ROOT = Path(__file__).resolve().parent.parent
# Destinations every initial member signs into genesis: an exchange deposit address on
# Bitcoin testnet (BIP-173's example), a counterparty on Ethereum (EIP-55's example), and
# the same counterparty for USDC, the one token contract allowed.
BTC_DEST = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
ETH_DEST = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
NOT_ALLOWED = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
ADDRESS_BOOK = [
    {"chain": "bitcoin", "network": "testnet", "address": BTC_DEST, "label": "Exchange deposit (testnet)"},
    {"chain": "ethereum", "network": "mainnet", "address": ETH_DEST, "label": "Prime broker"},
    {
        "chain": "ethereum",
        "network": "mainnet",
        "address": ETH_DEST,
        "label": "Prime broker USDC",
        "asset": USDC,
    },
]
# A membership change waits this long after its approval, so that either side can veto a
# sock-puppet member before it counts. A real deployment waits a day or two (the default
# is the policy's change delay, one day); the demo waits seconds so it can show the wait.
MEMBERSHIP_DELAY_SECONDS = 8
PASSPHRASE = "demo passphrase, not for production"  # noqa: S105 - demo keystores only
TANDEM = [sys.executable, "-m", "tandem.cli"]


def funding_transaction(address: str, sats: int) -> Any:
    """Stands in for the deposit a node or explorer would show: output 1 pays ``sats`` to
    the wallet. The intent carries the whole transaction; Tandem reads the amount from it."""
    from tandem.core.chains import bitcoin as btc

    return btc.Transaction(
        2,
        (btc.TxInput(os.urandom(32).hex(), 0),),
        (btc.TxOutput(1_000, btc.address_to_script(BTC_DEST, "testnet")),
         btc.TxOutput(sats, btc.address_to_script(address, "testnet"))),
        0,
    )


def say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*TANDEM, *args], env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if check and proc.returncode != 0:
        raise SystemExit(f"`tandem {' '.join(args)}` failed:\n{proc.stdout}{proc.stderr}")
    return proc


class Demo:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.env = {
            **os.environ,
            "TANDEM_PASSPHRASE": PASSPHRASE,
            # The demo computes every member's codes, so its keystores keep their TOTP seeds
            # (a person's keystore does not: the seed lives in their authenticator app).
            "TANDEM_KEEP_TOTP_SEED": "1",
            "TANDEM_DATA_DIR": str(out / "server-data"),
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.client: Client
        self.members: dict[str, MemberSecrets] = {}
        self.last_step: dict[str, int] = {}
        self.claim_token = ""
        self.genesis_hash = ""

    # --- server -----------------------------------------------------------------------

    def start_server(self) -> None:
        init = cli("init", "--data-dir", str(self.out / "server-data"), env=self.env).stdout.splitlines()
        # `tandem init` prints the one-time claim token on the line after its heading; the
        # operator hands it to whoever submits genesis (here: this script).
        self.claim_token = next(
            init[i + 1].strip() for i, line in enumerate(init) if line.startswith("claim token")
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (self.out / "server.log").open("wb")
        self.server = subprocess.Popen(  # noqa: S603
            [*TANDEM, "serve", "--port", str(port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(100):
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not start; see server.log")
        self.env["TANDEM_SERVER"] = url
        self.client = Client(url)
        note(f"server on {url}, data in {self.out / 'server-data'} (SQLite, WAL, synchronous=FULL)")

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.send_signal(signal.SIGINT)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                note("the server did not stop within 60 s of Ctrl-C; ending it (its commits are on disk)")
                self.server.kill()
                self.server.wait()

    # --- helpers --------------------------------------------------------------------------

    def keystore(self, name: str) -> Path:
        return self.out / "keystores" / f"{name}.keystore"

    def code(self, name: str) -> str:
        """A fresh TOTP code; a real member reads it from an authenticator app.

        Each 30 s step is accepted once per member and the server tolerates one step of
        clock skew, so the demo uses the earliest step not yet used and waits only when
        it would have to run ahead of the skew window.
        """
        member = self.members[name]
        told = False
        while True:
            now_step = int(time.time()) // 30
            step = max(now_step - 1, self.last_step.get(name, -1) + 1)
            if step <= now_step + 1:
                break
            if not told:
                wait = 30 - int(time.time()) % 30
                note(
                    f"... {name} has used this 30 s step's code; waiting {wait} s for the "
                    "authenticator's next one (each code is accepted once)"
                )
                told = True
            time.sleep(1)
        self.last_step[name] = step
        return code_at(member.totp_secret, step)

    def free_custodian(self, *, avoid: str = "") -> str:
        """A custodian whose authenticator shows an unused code right now, so the story
        does not stop for the next 30 s step (bob first; cora once she has joined)."""
        names = [n for n in ("bob", "cora") if n in self.members and n != avoid]
        now_step = int(time.time()) // 30
        for name in names:
            if self.last_step.get(name, -1) + 1 <= now_step + 1:
                return name
        return names[0]

    def enrolled(self, name: str) -> None:
        self.last_step[name] = int(time.time()) // 30

    def refused(self, what: str, fn: Callable[[], Any]) -> str:
        try:
            fn()
        except RemoteError as exc:
            note(f"refused as it must be: {what} -> {exc.remote_code}: {exc.message}")
            return exc.remote_code
        raise SystemExit(f"DEMO FAILURE: {what} was not refused")

    # --- chapters -------------------------------------------------------------------------

    def identities_and_genesis(self) -> None:
        say("Identities: every person makes keys on their own machine")
        people = [("alice", Role.MANAGER), ("bob", Role.CUSTODIAN), ("olga", Role.AUDITOR)]
        cards = []
        for name, role in people:
            ks = self.keystore(name)
            cli(
                "id",
                "create",
                "--name",
                name,
                "--role",
                role.value,
                "--out",
                str(ks),
                "--scrypt-log2-n",
                "15",
                env=self.env,
            )
            self.members[name] = MemberSecrets.from_keystore(ks.read_bytes(), PASSPHRASE)
            card = self.out / "cards" / f"{name}.json"
            cli("id", "card", str(ks), "--out", str(card), env=self.env)
            cards += ["--card", str(card)]
            note(f"{name:6} {role.value:10} member id {self.members[name].member_id}")

        say("Genesis: every initial member signs the deployment's root of trust")
        genesis = self.out / "genesis.json"
        book = self.out / "address-book.json"
        book.write_text(json.dumps(ADDRESS_BOOK, indent=2) + "\n")
        policy = self.out / "policy.json"
        terms = default_policy().to_json()
        terms["membership"] = {
            "approvals": {"custodian": 1, "manager": 1},
            "delay_seconds": MEMBERSHIP_DELAY_SECONDS,
        }
        policy.write_text(json.dumps(terms, indent=2) + "\n")
        note(
            "genesis carries the policy (one custodian approves each withdrawal, address-book "
            f"destinations only; membership changes wait {MEMBERSHIP_DELAY_SECONDS} s for a veto) "
            "and the address book"
        )
        cli(
            "genesis",
            "draft",
            "--entity",
            "Example Fund SICAV",
            *cards,
            "--address-book",
            str(book),
            "--policy",
            str(policy),
            "--out",
            str(genesis),
            env=self.env,
        )
        for name, _ in people:
            cli(
                "genesis",
                "sign",
                str(genesis),
                "--keystore",
                str(self.keystore(name)),
                "--yes",
                env=self.env,
            )
        unclaimed = cli("genesis", "submit", str(genesis), env=self.env, check=False)
        if unclaimed.returncode == 0:
            raise SystemExit("DEMO FAILURE: genesis without the claim token was accepted")
        note("genesis without the operator's claim token is refused (claim_token_required)")
        result = json.loads(
            cli(
                "genesis", "submit", str(genesis), env={**self.env, "TANDEM_CLAIM_TOKEN": self.claim_token}
            ).stdout
        )
        note(f"deployment {result['deployment']}, genesis hash {result['genesis_hash']}")
        note("each member's `genesis sign` pinned that hash and the service keys beside its keystore")
        # This script acts for every member through one client: it trusts the genesis
        # they all signed, from the local file (never from the server's answer).
        self.genesis_hash = result["genesis_hash"]
        self.client.pin = PinnedDeployment.from_genesis(
            json.loads(genesis.read_text())["genesis"], expect_hash=self.genesis_hash
        )
        self.client.deployment(refresh=True)
        for name, _ in people:
            cli("totp", "enrol", "--keystore", str(self.keystore(name)), "--totp-from-keystore", env=self.env)
            self.enrolled(name)
        note("each member enrolled a TOTP seed, sealed on their machine to the service key")

    def membership(self) -> None:
        say("Membership under dual control: a manager proposes, a custodian approves")
        newbie = MemberSecrets.generate(name="cora", role=Role.CUSTODIAN)
        self.members["cora"] = newbie
        ks = self.keystore("cora")
        ks.write_bytes(newbie.to_keystore(PASSPHRASE, log2_n=15))
        prop = self.client.members.propose_add(self.members["alice"], newbie.card())
        note(f"alice proposed adding custodian cora: {prop['id']}")
        self.refused(
            "alice approving her own proposal",
            lambda: self.client.members.approve(self.members["alice"], prop["id"], totp=self.code("alice")),
        )
        done = self.client.members.approve(self.members["bob"], prop["id"], totp=self.code("bob"))
        effective = int(done["effective_at"])
        when = datetime.fromtimestamp(effective).astimezone().isoformat(timespec="seconds")
        note(f"bob approved with signature + TOTP -> {done['status']}; takes effect at {when}")
        note("until then either side can veto it (tandem proposal veto); waiting out the delay")
        tty = sys.stdout.isatty()
        while (left := effective - int(time.time())) >= 0:
            if tty:
                print(f"   ... {left + 1} s left ", end="\r", flush=True)
            time.sleep(1)
        if tty:
            print(" " * 24, end="\r")
        applied = self.client.members.apply(self.members["alice"], prop["id"])
        note(f"the delay passed with no veto; alice carried it out -> {applied['status']}")
        cli(
            "pin",
            "genesis",
            str(self.out / "genesis.json"),
            "--expect",
            self.genesis_hash,
            "--keystore",
            str(ks),
            env=self.env,
        )
        note("cora pinned the genesis file against the hash a colleague read out to her")
        self.client.members.enrol_totp(newbie)
        self.enrolled("cora")

    def ceremonies(self) -> dict[str, dict[str, Any]]:
        say("Key ceremonies: a manager proposes, a custodian approves, both contribute entropy")
        out = self.out / "transcripts"
        out.mkdir(exist_ok=True)
        keysets: dict[str, dict[str, Any]] = {}
        for chain, definition in (
            ("bitcoin", "bitcoin-testnet-cold.toml"),
            ("ethereum", "ethereum-cold.toml"),
            ("solana", "solana-cold.toml"),
        ):
            text = (ROOT / "ceremonies" / definition).read_text(encoding="utf-8")
            if chain == "bitcoin":
                transcript = self.ceremony_step_by_step(text)
            else:
                approver = self.free_custodian()
                note(f"{chain}: the same steps from {definition}, approved by {approver}")
                transcript = self.client.ceremonies.run(
                    proposer=self.members["alice"],
                    approvers=[self.members[approver]],
                    definition_text=text,
                    code=self.code,
                )
            cid = (
                transcript["ceremony"]["id"]
                if isinstance(transcript.get("ceremony"), dict)
                else transcript.get("id")
            )
            (out / f"{cid}.json").write_text(json.dumps(transcript, indent=2, ensure_ascii=False) + "\n")
            cli("verify", "transcript", str(out / f"{cid}.json"), env=self.env)
            keysets[chain] = transcript
            for address in transcript["addresses"]:
                note(f"{chain:8} {address['network']:8} {address['address']}  [{address['segregation']}]")
            note(f"transcript {cid}: countersigned by every participant, verified offline")
        return keysets

    def ceremony_step_by_step(self, text: str) -> dict[str, Any]:
        """The first ceremony with each step said as it happens (the others run the same
        steps in one call)."""
        from tandem.client import ceremony as cc
        from tandem.core import ceremony as ceremony_core
        from tandem.core import keygen

        alice, bob = self.members["alice"], self.members["bob"]
        cid = cc.new_ceremony_id()
        mine = {alice.member_id: keygen.make_contribution(), bob.member_id: keygen.make_contribution()}
        self.client.ceremonies.propose(alice, text, ceremony_id=cid, contribution=mine[alice.member_id])
        note(
            f"bitcoin: alice proposed {cid}; commitment: her client drew a secret contribution "
            "and sent only its hash, so it cannot be changed later"
        )
        self.client.ceremonies.approve(bob, cid, totp=self.code("bob"), contribution=mine[bob.member_id])
        note("bob approved with signature + TOTP, and committed to his own secret contribution the same way")
        for member in (alice, bob):
            self.client.ceremonies.reveal(member, cid, mine[member.member_id])
        note(
            "reveal: both disclosed their contributions; the server checked each against its "
            "commitment and derived the keys from both, so neither side chose the key"
        )
        for member in (alice, bob):
            self.client.ceremonies.countersign(member, cid)
        note(
            "countersign: each participant's client re-verified the record on its own machine, "
            "signed its hash and pinned the new key set"
        )
        transcript = self.client.ceremonies.transcript(alice, cid)
        ceremony_core.verify_transcript(transcript).require()
        note(
            "transcript: the whole record (definition, approvals, commitments, reveals, "
            "addresses, countersignatures), checked offline next with `tandem verify transcript`"
        )
        return transcript

    def withdrawal_step_by_step(
        self, keyset_id: str, intent: dict[str, Any], custodians: list[MemberSecrets]
    ) -> dict[str, Any]:
        """One withdrawal as the custodian sees it: the screen their client shows before
        they approve, decoded on their own machine from the raw transaction."""
        from tandem.cli.withdrawal_cmds import _people_and_book, _print_review
        from tandem.client import withdrawal as cw

        alice, bob = self.members["alice"], custodians[0]
        created = self.client.withdrawals.create(alice, {**intent, "wallet": keyset_id})
        wid = created["id"]
        note(
            f"alice requested {wid} and reads its fingerprint {created['fingerprint']} out to bob "
            "by phone; this is bob's approval screen (tandem withdraw approve):"
        )
        view = self.client.withdrawals.get(bob, wid)
        print(flush=True)
        _print_review(view, cw.review(view), *_people_and_book(self.client, bob))
        print(flush=True)
        label = next(e["label"] for e in ADDRESS_BOOK if e["address"] == intent["destination"])
        note(
            f"bob checks on that screen, decoded by his own client: {int(intent['amount']) / 1e8:.8f} BTC "
            f"to '{label}' (an address-book entry), the change back to the wallet, the fee, and the "
            "fingerprint against what alice read out"
        )
        status = self.client.withdrawals.approve(
            bob,
            wid,
            totp=self.code("bob"),
            expected_fingerprint=created["fingerprint"],
            view=view,
        )["status"]
        note(f"bob's fingerprint matched what alice read out; he approved with signature + TOTP -> {status}")
        return cw.released_record(created, self.client.withdrawals.release(bob, wid))

    def withdrawals(self, keysets: dict[str, dict[str, Any]]) -> None:

        say("Withdrawals: Tandem builds the transaction, the custodian's client decodes it before approving")
        out = self.out / "withdrawals"
        out.mkdir(exist_ok=True)
        manager, custodians = self.members["alice"], [self.members["bob"], self.members["cora"]]
        btc_keyset = keysets["bitcoin"]["keyset"]["id"]
        eth_keyset = keysets["ethereum"]["keyset"]["id"]
        btc_from = keysets["bitcoin"]["addresses"][0]["address"]
        deposit = funding_transaction(btc_from, 300_000)
        intents = {
            "bitcoin": {
                "chain": "bitcoin",
                "network": "testnet",
                "asset": "BTC",
                "amount": "150000",
                "from": btc_from,
                "destination": BTC_DEST,
                "bitcoin": {
                    "fee_rate": 4,
                    "utxos": [
                        {"txid": deposit.txid, "vout": 1, "prev_tx": deposit.serialize().hex()},
                    ],
                },
            },
            "ethereum": {
                "chain": "ethereum",
                "network": "mainnet",
                "asset": "ETH",
                "amount": "250000000000000000",
                "destination": ETH_DEST,
                "ethereum": {
                    "chain_id": 1,
                    "nonce": 0,
                    "gas_limit": 21000,
                    "max_fee_per_gas": "30000000000",
                    "max_priority_fee_per_gas": "1000000000",
                },
            },
            "erc20": {
                "chain": "ethereum",
                "network": "mainnet",
                "asset": USDC,
                "amount": "1250000000",
                "destination": ETH_DEST,
                "ethereum": {
                    "chain_id": 1,
                    "nonce": 1,
                    "gas_limit": 65000,
                    "max_fee_per_gas": "30000000000",
                    "max_priority_fee_per_gas": "1000000000",
                },
            },
        }
        wallets = {"bitcoin": btc_keyset, "ethereum": eth_keyset, "erc20": eth_keyset}
        for name, intent in intents.items():
            if name == "bitcoin":
                result = self.withdrawal_step_by_step(wallets[name], intent, custodians)
            else:
                first = self.free_custodian()
                result = self.client.withdrawals.run(
                    manager=manager,
                    custodians=sorted(custodians, key=lambda m: m.name != first),
                    keyset_id=wallets[name],
                    intent=intent,
                    code=lambda m: self.code(m.name),
                )
            (out / f"{result['id']}.json").write_text(json.dumps(result, indent=2) + "\n")
            note(f"{name:8} released {result['txid']} from {result['from_address']}")
        note(f"Bitcoin spend from {btc_from}: prevouts with scriptPubKey written for independent checking")

        created = self.client.withdrawals.create(
            manager,
            {
                **intents["ethereum"],
                "wallet": eth_keyset,
                "ethereum": {**intents["ethereum"]["ethereum"], "nonce": 2},
            },
        )
        self.refused(
            "the manager approving its own withdrawal",
            lambda: self.client.withdrawals.approve(manager, created["id"], totp=self.code("alice")),
        )
        self.refused(
            "a destination that is not in the address book",
            lambda: self.client.withdrawals.create(
                manager,
                {**intents["ethereum"], "wallet": eth_keyset, "destination": NOT_ALLOWED},
            ),
        )
        sent: list[dict[str, Any]] = []
        original = self.client.request

        def recording(method: str, path: str, **kw: Any) -> Any:
            if path.endswith("/approve") and kw.get("json_body") is not None:
                sent.append(kw["json_body"])
            return original(method, path, **kw)

        self.client.request = recording  # type: ignore[method-assign]
        approver = self.free_custodian()
        try:
            self.client.withdrawals.approve(self.members[approver], created["id"], totp=self.code(approver)
            )
        finally:
            self.client.request = original  # type: ignore[method-assign]
        replay = {**sent[-1], "totp": self.code(self.free_custodian(avoid=approver))}
        self.refused(
            "the same approval sent again (replay)",
            lambda: self.client.request("POST", f"/v1/withdrawals/{created['id']}/approve", json_body=replay),
        )

    def proofs(self) -> None:
        from tandem.core import proofs as proof_core

        say("Proof of ownership: every address signs in its chain's own message standard")
        custodian = self.free_custodian()
        note(
            f"olga (auditor) issues a challenge with a fresh nonce; alice and {custodian} each re-seal "
            "their share to it (one side alone cannot sign), then every address signs"
        )
        bundle = self.client.proofs.run(
            issuer=self.members["olga"],
            manager=self.members["alice"],
            custodian=self.members[custodian],
            scope={"kind": "all"},
            code=lambda: self.code(custodian),
        )
        path = self.out / "proofs.json"
        path.write_bytes(proof_core.bundle_bytes(bundle))
        nonce = bundle["challenge"]["nonce"]
        result = cli(
            "verify",
            "proofs",
            str(path),
            "--challenge",
            nonce,
            "--report",
            str(self.out / "proofs-report.json"),
            env=self.env,
        )
        verdict = next(
            (line for line in result.stdout.splitlines() if line.startswith("OK")),
            result.stdout.strip().splitlines()[-1],
        )
        note(f"{len(bundle['proofs'])} addresses proved ({path.name}); olga's offline check: {verdict}")
        tampered = json.loads(path.read_text())
        tampered["proofs"][0]["message"] = tampered["proofs"][0]["message"].replace("own", "client-omnibus")
        bad_path = self.out / "tampered" / "proofs.json"
        bad_path.parent.mkdir(exist_ok=True)
        bad_path.write_text(json.dumps(tampered))
        bad = cli("verify", "proofs", str(bad_path), "--challenge", nonce, env=self.env, check=False)
        if bad.returncode == 0:
            raise SystemExit("DEMO FAILURE: a tampered proof bundle verified")
        note("a tampered bundle is refused, naming the address")

    def audit(self) -> None:
        say("Audit: export the log and verify it offline, as an auditor would")
        export_dir = self.out / "audit-export"
        cli(
            "audit",
            "export",
            "--out",
            str(export_dir),
            "--keystore",
            str(self.keystore("olga")),
            env=self.env,
        )
        shutil.copy(export_dir / "audit.jsonl", self.out / "audit.jsonl")
        shutil.copy(export_dir / "checkpoint.json", self.out / "checkpoint.json")
        shutil.copy(export_dir / "service-key.json", self.out / "service-key.json")
        verify = cli("audit", "verify", str(self.out / "audit.jsonl"), env=self.env)
        note(verify.stdout.strip())
        tampered = self.out / "tampered" / "audit.jsonl"
        tampered.parent.mkdir(exist_ok=True)
        lines = (self.out / "audit.jsonl").read_text().splitlines()
        lines[3] = (
            lines[3].replace('"outcome":"ok"', '"outcome":"refused"', 1)
            if '"outcome":"ok"' in lines[3]
            else lines[3].replace('"time":', '"time":1', 1)
        )
        tampered.write_text("\n".join(lines) + "\n")
        shutil.copy(self.out / "checkpoint.json", tampered.parent / "checkpoint.json")
        shutil.copy(self.out / "service-key.json", tampered.parent / "service-key.json")
        bad = cli("audit", "verify", str(tampered), env=self.env, check=False)
        if bad.returncode == 0:
            raise SystemExit("DEMO FAILURE: a tampered export verified")
        why = (bad.stderr or bad.stdout).strip().splitlines()[-1].removeprefix("refused: ")
        note(f"a copy with entry 3 edited is refused: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out", help="artifact directory")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    if not sys.stdout.isatty():
        # Written to a log or a pipe: wide enough that the approval screen keeps every
        # txid and address on one line.
        os.environ.setdefault("COLUMNS", "160")
    if out.exists():
        shutil.rmtree(out)
    (out / "keystores").mkdir(parents=True)
    demo = Demo(out)
    import demo_books

    # The books chapter reads a real local chain: anvil starts before the server, whose
    # settings name it. Where anvil cannot run, the demo says so and skips that chapter.
    chain = demo_books.books_chain(out, note=note)
    if chain is not None:
        ADDRESS_BOOK.extend(demo_books.BOOKS_ADDRESS_BOOK)
        demo.env.update(chain[0])
    try:
        say("Starting a Tandem server")
        demo.start_server()
        demo.identities_and_genesis()
        demo.membership()
        keysets = demo.ceremonies()
        demo.withdrawals(keysets)
        demo.proofs()
        demo.audit()
        if chain is not None:
            demo_books.books_chapter(demo, chain[0]["TANDEM_CHAIN_ETHEREUM_SEPOLIA"].removeprefix("jsonrpc+"))
    finally:
        demo.stop_server()
        if chain is not None:
            chain[1]()
    say(f"Done. Artifacts in {out}")
    for path in sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and "server-data" not in p.parts and "keystores" not in p.parts
    ):
        note(str(path.relative_to(out)))


if __name__ == "__main__":
    main()
