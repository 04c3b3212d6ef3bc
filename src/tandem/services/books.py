"""The custodian's books: clients, the register of positions, deposits seen on the
chains, broadcast and confirmation of releases, reconciliation and statements.

The register is read from the audit log itself (:meth:`Register.replay` over the
entries of :data:`REGISTER_KINDS`, found by the log's indexed ``kind`` column): a
movement is recorded by appending its audit entry, and nothing else. Chain access is
through ``tandem.chainio`` and is off unless an endpoint is configured.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlmodel import Session, col, select

from tandem.chainio import ChainConfig
from tandem.chainio.base import ChainBackend, Mint, SignatureInfo
from tandem.core import reconcile as rcore
from tandem.core import statement as score
from tandem.core import withdrawal as wcore
from tandem.core.actions import check_context, parse_envelope
from tandem.core.canonical import canonical, check_fields, loads_strict, parse_amount
from tandem.core.chains import ethereum as eth
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.register import (
    FUND,
    REGISTER_KINDS,
    UNALLOCATED,
    Client,
    Register,
    check_client_content,
    owner_of_segregation,
    proposal_digest,
)
from tandem.core.roles import Role
from tandem.errors import (
    ChainBadResponseError,
    ConflictError,
    Error,
    InputError,
    InvalidStateError,
    NotFoundError,
    SelfApprovalError,
    TxidMismatchError,
    VerificationError,
)
from tandem.services import statement_pdf
from tandem.services.base import Call, Runner
from tandem.services.logview import LogView
from tandem.services.withdrawals import WithdrawalService
from tandem.store import audit_log, pages
from tandem.store.models import AddressRow, AuditRow, KeySet, Member, ReconcileJob, Withdrawal

NATIVE = {"ethereum": "ETH", "bitcoin": "BTC", "solana": "SOL"}
SCAN_KIND = "register.scanned"
CONTRACT_SEARCH_KIND = "register.tokens_scanned"  # the unknown-token search's cursor
FIRST_SCAN_BLOCKS = 10_000
SIDES = (Role.MANAGER, Role.CUSTODIAN)
SOLANA_PAGE = 1000  # getSignaturesForAddress's largest page
SOLANA_SIGNATURE_PAGES = 20  # per address and scan; a longer history goes on at the next scan
SOLANA_CURSOR_KIND = "register.solana_signatures"  # per address: where its history was read to
JOB_PROGRESS_SECONDS = 0.5  # a running job writes its progress at most this often
JOB_STALE_SECONDS = 300  # a running job of another process silent this long was interrupted
SOLANA_BIRTH_MARGIN = 86_400  # seconds of clock difference allowed between us and the cluster
Progress = Callable[[int, int], None]


def _entries(session: Session, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = session.exec(
        select(AuditRow.line).where(col(AuditRow.kind).in_(kinds)).order_by(col(AuditRow.seq))
    ).all()
    return [cast(dict[str, Any], loads_strict(line)) for line in rows]


def _roles(session: Session) -> dict[str, str]:
    return {m.id: m.role for m in session.exec(select(Member)).all()}


def read_register(session: Session) -> Register:
    """The register replayed from the whole log (what the offline check does)."""
    return Register.replay(_entries(session, REGISTER_KINDS), roles=_roles(session))


def _observe_register(reg: Register, entries: list[dict[str, Any]], session: Session) -> None:
    roles = _roles(session)
    for e in entries:
        reg.observe(e, roles=roles)


def register_view() -> LogView[Register]:
    """The register kept in memory and advanced by the register entries appended since."""
    return LogView(REGISTER_KINDS, empty=Register, fold=_observe_register, fork=Register.fork)


def _observe_prices(prices: list[score.Price], entries: list[dict[str, Any]], session: Session) -> None:
    for e in entries:
        prices += score.parse_prices(e["data"]["prices"])


@dataclass
class ScanMarks:
    """Where the deposit scans have read to, from their log entries: per network the
    height reached, per Solana address its signature cursor, per Ethereum network the
    token-contract search (addresses covered, contracts found, block reached)."""

    heights: dict[tuple[str, str], int] = field(default_factory=dict)
    sol_cursors: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    covered: dict[str, set[str]] = field(default_factory=dict)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    searched_to: dict[str, int] = field(default_factory=dict)

    def copy(self) -> ScanMarks:
        return ScanMarks(
            dict(self.heights),
            dict(self.sol_cursors),
            {k: set(v) for k, v in self.covered.items()},
            {k: set(v) for k, v in self.tokens.items()},
            dict(self.searched_to),
        )


def _observe_scans(marks: ScanMarks, entries: list[dict[str, Any]], session: Session) -> None:
    for e in entries:
        d = e["data"]
        if e["kind"] == SCAN_KIND:
            marks.heights[(d["chain"], d["network"])] = d["height"]
        elif e["kind"] == SOLANA_CURSOR_KIND:
            marks.sol_cursors[(d["network"], d["address"])] = d
        elif d["chain"] == "ethereum":
            marks.covered.setdefault(d["network"], set()).update(d["addresses"])
            marks.tokens.setdefault(d["network"], set()).update(d["tokens"])
            marks.searched_to[d["network"]] = d["to_block"]


def scan_view() -> LogView[ScanMarks]:
    """The scans' marks, advanced by the scan entries appended since."""
    return LogView(
        (SCAN_KIND, SOLANA_CURSOR_KIND, CONTRACT_SEARCH_KIND),
        empty=ScanMarks,
        fold=_observe_scans,
        fork=ScanMarks.copy,
    )


def prices_view() -> LogView[list[score.Price]]:
    """Every imported price, in the order imported, advanced by new imports only."""
    return LogView(("prices.imported",), empty=list, fold=_observe_prices, fork=list)


# Compute units Tandem's Solana transfers are given when they pay a priority fee: what
# the runtime uses (ComputeBudget 150 each, System 150, SPL TransferChecked about 6,200,
# an associated account's creation about 25,000) with a margin. Too few and the
# transaction fails (and still pays); every unit asked for is paid at the price.
SOL_TRANSFER_UNITS = 1_500
TOKEN_TRANSFER_UNITS = 12_000
TOKEN_TRANSFER_CREATING_UNITS = 50_000


def _suggest_ethereum(backend: Any, address: str, asset: str, held: list[int]) -> dict[str, Any]:
    """The next nonce past those live withdrawals hold, the fee caps, gas limit and chain id."""
    nonce = max([backend.nonce(address), *(n + 1 for n in held)])
    fees = backend.suggest_fees()
    return {
        "from": address,
        "ethereum": {
            "chain_id": backend.chain_id(),
            "nonce": nonce,
            "max_fee_per_gas": str(fees.max_fee_per_gas),
            "max_priority_fee_per_gas": str(fees.max_priority_fee_per_gas),
            "gas_limit": 21000 if asset == "ETH" else 100000,
        },
    }


def _suggest_bitcoin(backend: Any, address: str, reserved: set[tuple[str, int]]) -> dict[str, Any]:
    """The wallet's unreserved UTXOs with their previous transactions, and a fee rate."""
    utxos = [
        {"txid": u.txid, "vout": u.vout, "prev_tx": u.raw_tx.hex()}
        for u in backend.utxos(address)
        if (u.txid, u.vout) not in reserved
    ]
    return {
        "from": address,
        "bitcoin": {"utxos": utxos, "fee_rate": backend.suggest_fee_rate().sat_per_vb},
    }


def _solana_blockhash(backend: Any, address: str, nonce_account: str | None, params: dict[str, Any]) -> Any:
    """The blockhash to sign over: the named durable nonce account's stored nonce (the
    account must be advanced by this wallet), else the cluster's latest blockhash.
    Returns the nonce account read, or None."""
    if nonce_account is None:
        params["recent_blockhash"] = backend.latest_blockhash().blockhash
        return None
    nonce = backend.durable_nonce(nonce_account)
    if nonce.authority != address:
        raise InputError(
            f"nonce account {nonce.account} is advanced by {nonce.authority}, not by the wallet {address}"
        )
    params["recent_blockhash"] = nonce.nonce
    params["nonce_account"] = nonce.account
    return nonce


def _solana_token(
    backend: Any, asset: str, destination: str, params: dict[str, Any]
) -> tuple[str | None, str]:
    """For a token, its mint and program, its decimals, and whether the destination's
    token account must be created; for SOL, no mint and the token program."""
    if asset == "SOL":
        return None, stx.TOKEN_PROGRAM
    mint = sol.validate_address(asset)
    info = backend.mint(mint)
    program: str = info.program
    params["decimals"] = info.decimals
    account = stx.associated_token_address(destination, mint, program)
    params["create_destination_account"] = not backend.account_exists(account)
    if program != stx.TOKEN_PROGRAM:
        params["token_program"] = program
    return mint, program


def _solana_fee(backend: Any, message: bytes, nonce: Any, reviewed: stx.Review) -> int:
    """The fee the cluster charges for exactly this transaction, which must not exceed
    the worst case Tandem's fee review counts."""
    signatures = message[0]
    if nonce is not None:
        # getFeeForMessage knows only recent blockhashes; the nonce account states its fee,
        # per signature only.
        fee: int = nonce.lamports_per_signature * signatures + reviewed.priority_fee
    else:
        got = backend.fee_for_message(message)
        if got is None:
            raise ChainBadResponseError("getFeeForMessage: the blockhash just read is not known")
        fee = got
    counted = stx.LAMPORTS_PER_SIGNATURE * signatures + reviewed.priority_fee
    if fee > counted:
        # The approval reviews (and the policy limits) Tandem's worst case; a cluster
        # charging more would make that review wrong, so nothing is suggested.
        raise ChainBadResponseError(
            f"the cluster charges {fee} lamports for this transaction; Tandem's fee review "
            f"counts {stx.LAMPORTS_PER_SIGNATURE} per signature"
            + (f" and a priority fee of {reviewed.priority_fee}" if reviewed.priority_fee else "")
        )
    return fee


def _compute_units(mint: str | None, creates: bool) -> int:
    if mint is None:
        return SOL_TRANSFER_UNITS
    return TOKEN_TRANSFER_CREATING_UNITS if creates else TOKEN_TRANSFER_UNITS


def _priority_price(backend: Any, payer: str, destination: str, mint: str | None, program: str) -> int:
    """A compute-unit price from the recent slots' prioritization fees for the accounts
    the transfer writes: the 75th percentile of the slots that paid one, at least 1
    micro-lamport, at most what Tandem builds."""
    writable = [payer, destination]
    if mint is not None:
        writable = [
            payer,
            stx.associated_token_address(payer, mint, program),
            stx.associated_token_address(destination, mint, program),
        ]
    paid = sorted(f for f in backend.recent_prioritization_fees(tuple(writable)) if f > 0)
    price = paid[(len(paid) * 3) // 4] if paid else 1
    return min(max(price, 1), stx.MAX_COMPUTE_UNIT_PRICE)


def _job_view(row: ReconcileJob, *, with_result: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job": row.id,
        "state": row.state,
        "done": row.done,
        "total": row.total,
        "started_at": row.started_at,
        "heartbeat_at": row.heartbeat_at,
        "finished_at": row.finished_at,
    }
    if row.error_code is not None:
        view["error"] = {"code": row.error_code, "message": row.error_message or ""}
    if with_result and row.result is not None:
        view["result"] = loads_strict(row.result)
    return view


@dataclass(frozen=True)
class _ScanState:
    """What a deposit scan read from the log before asking the chains."""

    reg: Register
    scanned: int | None  # the height the last scan of this network reached
    tokens: list[str]
    sol_cursors: dict[tuple[str, str], dict[str, Any]]
    births: dict[str, int]


class _SignatureWalk:
    """One address's ``getSignaturesForAddress`` pages, newest first, within a budget of
    pages per scan, each signature handed to ``take``."""

    def __init__(
        self, backend: Any, address: str, take: Callable[[SignatureInfo], None], *, floor: int | None
    ) -> None:
        self.backend = backend
        self.address = address
        self.take = take
        self.floor = floor  # block time before which the key did not exist
        self.budget = SOLANA_SIGNATURE_PAGES
        self.newest: str | None = None  # the newest finalized signature seen

    def walk(self, before: str | None, until: str | None, *, record_newest: bool = False) -> str | None:
        """Pages from ``before`` down to ``until`` (both excluded; None: the newest, the
        end). Returns the signature to resume before if the budget ran out, else None."""
        while True:
            if self.budget <= 0:
                return before
            self.budget -= 1
            infos = self.backend.signatures(self.address, limit=SOLANA_PAGE, before=before, until=until)
            for info in infos:
                if record_newest and self.newest is None and info.finalized:
                    self.newest = info.signature
                if self.floor is not None and info.block_time is not None and info.block_time < self.floor:
                    return None  # older than the key: nothing of ours before it
                self.take(info)
            if len(infos) < SOLANA_PAGE:
                return None
            before = infos[-1].signature


class Books:
    """One object per deployment's books, beside the service it records through."""

    def __init__(
        self, svc: Runner, withdrawals: WithdrawalService, chains: ChainConfig | None = None
    ) -> None:
        self.svc = svc
        # A broadcast and a confirmation are recorded as the withdrawal flow's own steps.
        self.withdrawals = withdrawals
        self.chains = chains or ChainConfig()
        self._backends: dict[tuple[str, str], ChainBackend] = {}
        self._mints: dict[tuple[str, str], Mint] = {}
        self._runner = "run_" + secrets.token_hex(8)  # this process, for the jobs it runs
        self._view = register_view()
        self._prices = prices_view()
        self._scans = scan_view()

    def _register(self, session: Session) -> Register:
        """The register as a write transaction sees it, to check and observe on."""
        return self._view.for_write(self.svc.db, session)

    def backend(self, chain: str, network: str) -> ChainBackend:
        key = (chain, network)
        if key not in self._backends:
            self._backends[key] = self.chains.backend(chain, network)
        return self._backends[key]

    def mint_facts(self, network: str, mint: str) -> Mint | None:
        """``mint`` on Solana ``network`` (its program and decimals), read from the mint
        account as the fill reads it (so refused as it refuses: not a mint, a Token-2022
        mint with extensions); None when no backend for that network is configured. An
        answer is kept: a mint's owner and decimals never change."""
        if ("solana", network) not in self.chains.endpoints:
            return None
        key = (network, mint)
        if key not in self._mints:
            backend: Any = self.backend("solana", network)  # a Solana backend reads mints
            self._mints[key] = backend.mint(mint)
        return self._mints[key]

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()

    def gate(self, kind: str, envelope: Any, *, types: str, roles: tuple[Role, ...] = SIDES) -> str:
        """For the calls that are observations rather than changes (scan, reconcile,
        broadcast, track): the signed action must be a fresh one of ``types`` from a
        member of ``roles``; a refusal is recorded as any other. Returns the actor."""
        now = self.svc.clock()
        actor: str | None = None
        try:
            with self.svc.db.read() as session:
                action = parse_envelope(envelope)
                member = self.svc.authenticate(session, action, roles=None)
                actor = member.id
                self.svc.check_role(member, roles)
                check_context(
                    action, expected_type=types, deployment=self.svc.deployment(session).id, now=now
                )
                return member.id
        except Error as exc:
            self.svc.record_refusal(
                kind, exc, envelope=envelope if isinstance(envelope, dict) else None, actor=actor, now=now
            )
            raise

    # --- clients and allocations: a manager proposes, a custodian approves ------------

    def _propose(
        self, envelope: Any, *, kind: str, action_type: str, check: Callable[[Call, Any], dict[str, Any]]
    ) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            content = check(call, call.action.body)
            pid = "bp_" + secrets.token_hex(8)
            pkind = "client.create" if kind == "client.proposed" else "allocation"
            digest = proposal_digest(pkind, pid, content, call.actor.id)
            self.svc.audit(call, kind, {"proposal": pid, "content": content, "digest": digest})
            return {"proposal": pid, "kind": pkind, "content": content, "digest": digest, "status": "pending"}

        return self.svc.run(action_type, envelope, use_case, types=action_type, roles=(Role.MANAGER,))

    def propose_client(self, envelope: Any) -> dict[str, Any]:
        def check(call: Call, body: Any) -> dict[str, Any]:
            try:
                content = check_client_content(body)
            except VerificationError as exc:
                raise InputError(exc.message) from None
            reg = self._register(call.session)
            if reg.client_taken(content["id"]):
                raise ConflictError(f"client {content['id']} exists or is already proposed")
            return content

        return self._propose(envelope, kind="client.proposed", action_type="client.propose", check=check)

    def propose_allocation(self, envelope: Any) -> dict[str, Any]:
        def check(call: Call, body: Any) -> dict[str, Any]:
            content = check_fields(body, required=("deposit", "client", "amount"), where="body")
            parse_amount(content["amount"], where="body.amount")
            reg = self._register(call.session)
            dep = reg.deposit(content["deposit"]) if isinstance(content["deposit"], str) else None
            if dep is None or dep.client != UNALLOCATED:
                raise NotFoundError("no unallocated omnibus deposit with that id")
            client = reg.clients.get(content["client"]) if isinstance(content["client"], str) else None
            if client is None or client.segregation != "omnibus":
                raise InputError("an allocation goes to an omnibus client")
            return dict(content)

        return self._propose(
            envelope, kind="allocation.proposed", action_type="allocation.propose", check=check
        )

    def _approve(
        self, envelope: Any, *, totp: str | None, action_type: str, pkind: str, effect: str
    ) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(call.action.body, required=("proposal", "digest"), where="body")
            reg = self._register(call.session)
            p = reg.proposal(body["proposal"]) if isinstance(body["proposal"], str) else None
            if p is None or p.kind != pkind:
                raise NotFoundError(f"no {pkind} proposal with that id")
            if p.done:
                raise InvalidStateError("that proposal is already decided")
            if call.actor.id == p.proposer:
                raise SelfApprovalError("a proposer cannot approve its own proposal")
            if body["digest"] != p.digest:
                raise ConflictError("the approval is for different proposal content (digest mismatch)")
            data: dict[str, Any] = {"proposal": body["proposal"]}
            if pkind == "client.create":
                data["client"] = p.content
            else:
                data["movement"] = "mv_" + secrets.token_hex(8)
                data["allocation"] = p.content
            entry = self.svc.audit(call, effect, data)
            # The rule the offline check applies, applied before the commit.
            reg.observe(entry, roles=_roles(call.session))
            return {"proposal": body["proposal"], "status": "approved", **data}

        return self.svc.run(
            action_type,
            envelope,
            use_case,
            types=action_type,
            roles=(Role.CUSTODIAN,),
            require_totp=True,
            totp=totp,
        )

    def approve_client(self, envelope: Any, *, totp: str | None) -> dict[str, Any]:
        return self._approve(
            envelope, totp=totp, action_type="client.approve", pkind="client.create", effect="client.created"
        )

    def approve_allocation(self, envelope: Any, *, totp: str | None) -> dict[str, Any]:
        return self._approve(
            envelope,
            totp=totp,
            action_type="allocation.approve",
            pkind="allocation",
            effect="register.allocation",
        )

    # --- reads ------------------------------------------------------------------------

    def register(self) -> Register:
        """A copy of the register as committed."""
        with self._view.reading(self.svc.db) as reg:
            return reg.fork()

    def clients(self) -> list[dict[str, Any]]:
        with self._view.reading(self.svc.db) as reg:
            clients = list(reg.clients.values())
        return self._client_views(clients)

    def clients_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of the clients, by id, each with the key sets it owns."""
        with self._view.reading(self.svc.db) as reg:
            ordered = sorted(reg.clients.values(), key=lambda c: c.id)
        page = pages.page_of(
            ordered, lambda c: [c.id], kind="clients", shape=(str,), limit=limit, cursor=cursor
        )
        return {"items": self._client_views(page.rows), "next_cursor": page.next_cursor}

    def _client_views(self, clients: list[Client]) -> list[dict[str, Any]]:
        """``clients`` as shown, with their key sets (only theirs are read)."""
        classes = {("own" if c.id == FUND else f"client:{c.id}"): c.id for c in clients}
        with self.svc.db.read() as session:
            wallets = session.exec(select(KeySet).where(col(KeySet.segregation).in_(classes))).all()
        out = []
        for c in clients:
            owned = [k.id for k in wallets if owner_of_segregation(k.segregation) == c.id]
            out.append(
                {
                    "id": c.id,
                    "name": c.name,
                    "segregation": c.segregation,
                    "created_at": c.created_at,
                    "proposal": c.proposal,
                    "wallets": owned,
                }
            )
        return out

    def open_proposals(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of the client and allocation proposals not decided yet (by id), with
        the digest an approval signs."""
        with self._view.reading(self.svc.db) as reg:
            ordered = sorted(reg.open_proposals())
        page = pages.page_of(
            ordered, lambda p: [p[0]], kind="books_proposals", shape=(str,), limit=limit, cursor=cursor
        )
        items = [
            {
                "proposal": pid,
                "kind": p.kind,
                "content": p.content,
                "proposer": p.proposer,
                "digest": p.digest,
            }
            for pid, p in page.rows
        ]
        return {"items": items, "next_cursor": page.next_cursor}

    def unowned_wallets(self) -> list[str]:
        """Key sets marked ``client:<id>`` for an id that is no client (yet)."""
        with self._view.reading(self.svc.db) as reg:
            known = set(reg.clients)
        with self.svc.db.read() as session:
            return [
                k.id
                for k in session.exec(select(KeySet)).all()
                if (o := owner_of_segregation(k.segregation)) not in (None, FUND) and o not in known
            ]

    def positions(
        self, *, client: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of the positions (of one client, or all): per client, chain, network,
        asset, wallet and address, in that order, in base units."""
        with self._view.reading(self.svc.db) as reg:
            held = reg.positions()
        ordered = sorted((k, v) for k, v in held.items() if client is None or k[0] == client)
        page = pages.page_of(
            ordered, lambda kv: list(kv[0]), kind="positions", shape=(str,) * 6, limit=limit, cursor=cursor
        )
        names = ("client", "chain", "network", "asset", "wallet", "address")
        items = [{**dict(zip(names, k, strict=True)), "balance": str(v)} for k, v in page.rows]
        return {"items": items, "next_cursor": page.next_cursor}

    def movements(
        self, *, client: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of the register's movements (of one client, or all), in the order
        recorded: ``{"items", "next_cursor"}``. Costs the page, not the register."""
        size = pages.check_limit(limit)
        after = pages.decode_cursor(cursor, "movements", (int,))
        with self._view.reading(self.svc.db) as reg:
            start = -1 if after is None else after[0]
            chosen, last = reg.movements_page(client=client, after=start, limit=size)
        return {
            "items": [m.to_json() for m in chosen],
            "next_cursor": None if last is None else pages.encode_cursor("movements", [last]),
        }

    # --- deposits -----------------------------------------------------------------------

    def _addresses(self, session: Session) -> list[tuple[AddressRow, str]]:
        segs = {k.id: k.segregation for k in session.exec(select(KeySet)).all()}
        return [(a, segs.get(a.keyset, "own")) for a in session.exec(select(AddressRow)).all()]

    def _tokens(self, session: Session, network: str) -> list[str]:
        from tandem.services import policies

        book = policies.address_book(session, self.svc.clock())
        return sorted(wcore.allowed_tokens(book, network))

    def scan_deposits(self, now: int | None = None) -> list[dict[str, Any]]:
        """Record every deposit to our addresses that the configured chains show and the
        register does not hold yet: Ethereum native transfers in the blocks since the last
        scan and ERC-20 ``Transfer`` logs; Bitcoin UTXOs (our own change excluded)."""
        now = self.svc.clock() if now is None else now
        with self.svc.db.read() as session:
            addresses = self._addresses(session)
            reg = self.register()
            with self._scans.reading(self.svc.db) as marks:
                scanned, sol_cursors = dict(marks.heights), dict(marks.sol_cursors)
            tokens = {net: self._tokens(session, net) for (_a, _s) in addresses for net in [_a.network]}
            births = {k.id: k.created_at for k in session.exec(select(KeySet)).all()}
        cursors: list[dict[str, Any]] = []
        found: list[tuple[dict[str, Any], str]] = []
        heights: dict[tuple[str, str], int] = {}
        by_net: dict[tuple[str, str], list[tuple[AddressRow, str]]] = {}
        for a, seg in addresses:
            if (a.chain, a.network) in self.chains.endpoints:
                by_net.setdefault((a.chain, a.network), []).append((a, seg))
        for (chain, network), rows in sorted(by_net.items()):
            net_found, net_cursors, height = self._scan_network(
                chain,
                network,
                rows,
                _ScanState(reg, scanned.get((chain, network)), tokens.get(network, []), sol_cursors, births),
                now,
            )
            found += net_found
            cursors += net_cursors
            if height is not None:
                heights[(chain, network)] = height
        recorded_now = self._record_scan(found, cursors, heights, scanned)
        if recorded_now:
            self.reconcile()  # after every movement seen on the chain
        return recorded_now

    def _record_scan(
        self,
        found: list[tuple[dict[str, Any], str]],
        cursors: list[dict[str, Any]],
        heights: dict[tuple[str, str], int],
        scanned: dict[tuple[str, str], int],
    ) -> list[dict[str, Any]]:
        """In one transaction: each deposit found that the register does not hold yet
        (another scan may have recorded it meanwhile), the Solana cursors, and every
        network's new scan height. Returns the deposits recorded."""
        recorded = []

        def use_case(call: Call) -> list[dict[str, Any]]:
            reg_now = self._register(call.session)
            for movement, seg in found:
                if reg_now.evidence_seen(
                    movement["chain"],
                    movement["network"],
                    movement["asset"],
                    movement["txid"],
                    movement["index"],
                ):
                    continue
                entry = self.svc.audit(
                    call, "register.deposit", {"movement": movement, "segregation": seg}, with_envelope=False
                )
                reg_now.observe(entry)
                recorded.append(movement)
            for cursor in cursors:
                self.svc.audit(call, SOLANA_CURSOR_KIND, cursor, with_envelope=False)
            for (chain, network), h in heights.items():
                if scanned.get((chain, network)) != h:
                    self.svc.audit(
                        call,
                        SCAN_KIND,
                        {"chain": chain, "network": network, "height": h},
                        with_envelope=False,
                    )
            return recorded

        return self.svc.run_plain("register.scan", use_case)

    def _scan_network(
        self, chain: str, network: str, rows: list[tuple[AddressRow, str]], st: _ScanState, now: int
    ) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]], int | None]:
        """One network's new deposits, the Solana cursors to record, and the height the
        scan reached (None: record none)."""
        backend = self.backend(chain, network)
        tip = backend.tip_height()
        if chain == "bitcoin":
            return self._btc_deposits(backend, rows, st.reg, now), [], tip
        if chain == "solana":
            found, cursors = self._sol_deposits(backend, rows, st.reg, now, st.sol_cursors, st.births)
            return found, cursors, tip
        # A first scan looks back FIRST_SCAN_BLOCKS; older deposits are not lost: the
        # reconciliation names them (unexpected_inflow) until they are accounted for.
        # Solana keeps a cursor per address instead and reads back to the key's birth.
        start = st.scanned + 1 if st.scanned is not None else max(0, tip - FIRST_SCAN_BLOCKS)
        found, waiting_from = self._eth_deposits(backend, rows, st.tokens, start, tip, st.reg, now)
        if waiting_from is None:
            return found, [], tip
        # Not moved past a deposit that waits for its client: read again from its block
        # next scan (what was recorded is not recorded twice).
        return found, [], waiting_from - 1 if waiting_from > 0 else None

    def _credit(self, a: AddressRow, seg: str, reg: Register) -> str | None:
        owner = owner_of_segregation(seg)
        if owner is None:
            return UNALLOCATED
        if owner != FUND and owner not in reg.clients:
            return None  # a client's wallet before the client exists: wait for it
        return owner

    def _movement(  # noqa: PLR0917 - one deposit's facts
        self,
        a: AddressRow,
        client: str,
        asset: str,
        amount: int,
        txid: str,
        index: int | None,
        height: int | None,
        now: int,
    ) -> dict[str, Any]:
        return {
            "id": "mv_" + secrets.token_hex(8),
            "type": "deposit",
            "client": client,
            "chain": a.chain,
            "network": a.network,
            "asset": asset,
            "wallet": a.keyset,
            "address": a.address,
            "amount": str(amount),
            "time": now,
            "txid": txid,
            "index": index,
            "withdrawal": None,
            "height": height,
        }

    def _eth_deposits(  # noqa: PLR0917
        self,
        backend: Any,
        rows: list[tuple[AddressRow, str]],
        tokens: list[str],
        start: int,
        tip: int,
        reg: Register,
        now: int,
    ) -> tuple[list[tuple[dict[str, Any], str]], int | None]:
        """The deposits in blocks ``start``..``tip``, and the first block holding one that
        waits for its client (a client's wallet paid before the client is registered)."""
        mine = {eth.to_checksum_address(a.address): (a, seg) for a, seg in rows}
        out: list[tuple[dict[str, Any], str]] = []
        waiting: list[int] = []
        for height in range(start, tip + 1):
            for tx in backend.transfers_in_block(height, tuple(mine)):
                a, seg = mine[eth.to_checksum_address(tx.to)]
                if backend.transaction_status(tx.tx_hash).state != "confirmed":
                    continue  # reverted: no value arrived
                client = self._credit(a, seg, reg)
                if client is None:
                    waiting.append(height)
                else:
                    out.append(
                        (self._movement(a, client, "ETH", tx.value, tx.tx_hash, None, height, now), seg)
                    )
            # Value moved by contract calls (an internal transfer: a multisig, a batch
            # payout, a selfdestruct), from the node's traces when it has a trace API;
            # the evidence index is the trace's place in its transaction.
            for it in backend.internal_transfers_in_block(height, tuple(mine)) or ():
                a, seg = mine[eth.to_checksum_address(it.to)]
                if backend.transaction_status(it.tx_hash).state != "confirmed":
                    continue
                client = self._credit(a, seg, reg)
                if client is None:
                    waiting.append(height)
                else:
                    out.append(
                        (self._movement(a, client, "ETH", it.value, it.tx_hash, it.index, height, now), seg)
                    )
        if tokens and start <= tip:
            for token in tokens:
                for t in backend.token_transfers(token, tuple(mine), from_block=start, to_block=tip):
                    a, seg = mine[eth.to_checksum_address(t.recipient)]
                    client = self._credit(a, seg, reg)
                    if client is None:
                        waiting.append(t.block_height)
                    else:
                        out.append(
                            (
                                self._movement(
                                    a,
                                    client,
                                    eth.to_checksum_address(token),
                                    t.amount,
                                    t.tx_hash,
                                    t.log_index,
                                    t.block_height,
                                    now,
                                ),
                                seg,
                            )
                        )
        return out, min(waiting) if waiting else None

    def _btc_deposits(
        self, backend: Any, rows: list[tuple[AddressRow, str]], reg: Register, now: int
    ) -> list[tuple[dict[str, Any], str]]:
        """The UTXOs of our addresses the register does not hold, less our own change:
        an output of one of our withdrawals (looked up by the txids seen, indexed)."""
        held = [(a, seg, u) for a, seg in rows for u in backend.utxos(a.address)]
        ours = self._our_txids({u.txid.lower() for _a, _s, u in held})
        out: list[tuple[dict[str, Any], str]] = []
        for a, seg, u in held:
            if u.txid.lower() in ours or reg.evidence_seen(a.chain, a.network, "BTC", u.txid, u.vout):
                continue
            client = self._credit(a, seg, reg)
            if client is not None:
                movement = self._movement(a, client, "BTC", u.amount, u.txid, u.vout, u.block_height, now)
                out.append((movement, seg))
        return out

    def _our_txids(self, txids: set[str]) -> set[str]:
        """Which of ``txids`` (lower-case hex) are our own withdrawals'."""
        if not txids:
            return set()
        with self.svc.db.read() as session:
            rows = session.exec(select(Withdrawal.txid).where(col(Withdrawal.txid).in_(sorted(txids)))).all()
        return {t.lower() for t in rows if t}

    def _sol_deposits(  # noqa: PLR0917 - one network's addresses and what the log holds
        self,
        backend: Any,
        rows: list[tuple[AddressRow, str]],
        reg: Register,
        now: int,
        cursors: dict[tuple[str, str], dict[str, Any]],
        births: dict[str, int],
    ) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]]]:
        """SOL and SPL token transfers into our addresses since each key was made.

        Per address, ``getSignaturesForAddress`` is walked newest first with ``before``
        down to the cursor the log holds (``until`` the newest finalized signature read
        by the last scan), or on a first scan back to the key set's creation time or the
        end of the address's history. A walk that runs out of its page budget leaves a
        gap (``before``/``until``) in the cursor, and the next scan goes on from there:
        old deposits are recorded, late, never skipped. Each successful transaction is
        read once with ``getTransaction`` and its transfers to us parsed. Returns the
        deposits and the cursors to record."""
        mine = {a.address: (a, seg) for a, seg in rows}
        out: list[tuple[dict[str, Any], str]] = []
        read: set[str] = set()
        new_cursors: list[dict[str, Any]] = []
        waiting: list[str] = []  # deposits to a client's wallet before the client exists

        def take(info: SignatureInfo) -> None:
            if info.failed or info.signature in read:
                return
            read.add(info.signature)
            for t in backend.transfers_to(info.signature, tuple(mine)):
                to, seg = mine[t.recipient]
                client = self._credit(to, seg, reg)
                if client is None:
                    waiting.append(t.signature)
                    continue
                if reg.evidence_seen(to.chain, to.network, t.asset, t.signature, t.index):
                    continue
                movement = self._movement(to, client, t.asset, t.amount, t.signature, t.index, t.slot, now)
                out.append((movement, seg))

        for a, _seg in rows:
            old = cursors.get((a.network, a.address), {"newest": None, "gaps": []})
            birth = births.get(a.keyset)
            walker = _SignatureWalk(
                backend, a.address, take, floor=None if birth is None else birth - SOLANA_BIRTH_MARGIN
            )
            gaps: list[dict[str, Any]] = []
            resume = walker.walk(None, old["newest"], record_newest=True)
            if resume is not None:
                gaps.append({"before": resume, "until": old["newest"]})
            for gap in old["gaps"]:
                rest = walker.walk(gap["before"], gap["until"]) if walker.budget > 0 else gap["before"]
                if rest is not None:
                    gaps.append({"before": rest, "until": gap["until"]})
            cursor = {
                "chain": a.chain,
                "network": a.network,
                "address": a.address,
                "newest": walker.newest or old["newest"],
                "gaps": gaps,
            }
            if cursor["newest"] != old["newest"] or cursor["gaps"] != old["gaps"]:
                new_cursors.append(cursor)
        if waiting:
            # Not moved past a deposit that waits for its client: read again next scan.
            return out, []
        return out, new_cursors

    # --- broadcast and confirmation ---------------------------------------------------

    def broadcast(self, envelope: Any) -> dict[str, Any]:
        """Send a released transaction through the chain backend, then record it with the
        member's signed ``withdrawal.broadcast`` (whose txid must be the released one)."""
        actor = self.gate("withdrawal.broadcast", envelope, types="withdrawal.broadcast")
        body = envelope["action"]["body"]
        wid = body.get("withdrawal")
        with self.svc.db.read() as session:
            row = session.get(Withdrawal, wid) if isinstance(wid, str) else None
        try:
            if row is None or row.signed_tx is None or row.txid is None:
                raise NotFoundError("no released withdrawal with that id")
            if row.status != wcore.RELEASED:
                raise InvalidStateError(f"withdrawal is {row.status}; only a released one is broadcast")
            txid = self.backend(row.chain, row.network).broadcast(bytes.fromhex(row.signed_tx))
            if txid.lower().removeprefix("0x") != row.txid.lower().removeprefix("0x"):
                raise TxidMismatchError(f"the node took {txid}, the release is {row.txid}")
        except Error as exc:
            self.svc.record_refusal(
                "withdrawal.broadcast",
                exc,
                envelope=envelope,
                actor=actor,
                now=self.svc.clock(),
            )
            raise
        return self.withdrawals.record_broadcast(envelope)

    def track(self, envelope: Any) -> dict[str, Any]:
        """Ask the chain about a broadcast release. Confirmed: the member's signed
        ``withdrawal.confirm`` is recorded, the movement and its fee enter the register
        with the block height, and a reconciliation runs. Otherwise: its state, unchanged."""
        actor = self.gate("withdrawal.track", envelope, types="withdrawal.confirm")
        wid = envelope["action"]["body"].get("withdrawal")
        with self.svc.db.read() as session:
            row = session.get(Withdrawal, wid) if isinstance(wid, str) else None
        if row is None or row.txid is None:
            exc = NotFoundError("no released withdrawal with that id")
            self.svc.record_refusal(
                "withdrawal.track", exc, envelope=envelope, actor=actor, now=self.svc.clock()
            )
            raise exc
        status = self.backend(row.chain, row.network).transaction_status(row.txid)
        answer: dict[str, Any] = {
            "withdrawal": row.id,
            "txid": row.txid,
            "state": status.state,
            "height": status.block_height,
            "confirmations": status.confirmations,
        }
        if status.state != "confirmed":
            if status.state == "unknown" and row.status == wcore.BROADCAST:
                # Broadcast, and the node no longer knows it: recorded, released again.
                self.withdrawals.record_dropped(envelope)
                answer["state"] = "dropped"
            return answer
        if row.status != wcore.CONFIRMED:
            self.withdrawals.confirm_withdrawal(envelope)
        fee = status.fee
        if row.chain == "solana" and status.payer_spent is not None:
            # What the payer lost beyond the amount: the fee and the rent of a token
            # account the transfer created (both in the approved worst case).
            fee = status.payer_spent - (int(row.amount or 0) if row.asset == "SOL" else 0)
        answer["movements"] = self.record_withdrawal(row.id, height=status.block_height, fee=fee)
        return answer

    def record_withdrawal(self, wid: str, *, height: int | None, fee: int | None) -> list[dict[str, Any]]:
        """The register entries of a confirmed withdrawal: the amount, and the fee the chain
        charged (at most the approved worst case), both charged to the wallet's owner."""

        def use_case(call: Call) -> list[dict[str, Any]]:
            row = call.session.get(Withdrawal, wid)
            if row is None or row.txid is None or row.status != wcore.CONFIRMED:
                raise InvalidStateError("only a confirmed withdrawal moves the register")
            reg = self._register(call.session)
            if wid not in reg.unmoved_withdrawals():
                return []
            ks = call.session.get(KeySet, row.keyset)
            owner = owner_of_segregation(ks.segregation if ks else "own")
            intent = loads_strict(row.intent)
            assert isinstance(intent, dict)
            client = owner if owner is not None else str(intent.get("client", UNALLOCATED))
            base = {
                "client": client,
                "chain": row.chain,
                "network": row.network,
                "wallet": row.keyset,
                "address": intent["from"],
                "time": call.now,
                "txid": row.txid,
                "index": None,
                "withdrawal": row.id,
                "height": height,
            }
            from tandem.services.policies import current_policy

            # The policy in force names who bears network fees (default: the wallet's owner).
            fee_client = FUND if current_policy(call.session, call.now).fees_charged_to == "fund" else client
            worst = int(row.fee or 0)
            charged = worst if fee is None else min(fee, worst)
            out = [
                {
                    **base,
                    "id": "mv_" + secrets.token_hex(8),
                    "type": "withdrawal",
                    "asset": row.asset,
                    "amount": f"-{row.amount}",
                },
                {
                    **base,
                    "client": fee_client,
                    "id": "mv_" + secrets.token_hex(8),
                    "type": "fee",
                    "asset": row.fee_asset,
                    "amount": f"-{charged}" if charged else "0",
                },
            ]
            for m in out:
                entry = self.svc.audit(call, f"register.{m['type']}", {"movement": m}, with_envelope=False)
                reg.observe(entry)
            return out

        moved = self.svc.run_plain("register.withdrawal", use_case)
        if moved and self.chains.endpoints:
            self.reconcile()
        return moved

    # --- reconciliation -----------------------------------------------------------------

    def snapshot(self, progress: Progress | None = None) -> dict[str, Any]:
        """What the configured chains say about every address of ours and every asset the
        register or the address book knows there, at the tip read first."""
        with self.svc.db.read() as session:
            addresses = self._addresses(session)
            reg = self.register()
            pending = [
                w.id
                for w in session.exec(
                    select(Withdrawal).where(col(Withdrawal.status).in_([wcore.RELEASED, wcore.BROADCAST]))
                ).all()
            ]
            tokens = {
                a.network: self._tokens(session, a.network) for a, _s in addresses if a.chain == "ethereum"
            }
        known = reg.address_balances()
        heights: dict[str, int] = {}
        observed: list[rcore.Observed] = []
        todo = [(a, s) for a, s in addresses if (a.chain, a.network) in self.chains.endpoints]
        # Any contract that logged a Transfer to one of our addresses: a token the
        # register does not know is then named, not overlooked.
        seen_tokens: dict[str, set[str]] = {}
        for network in sorted({a.network for a, _s in todo if a.chain == "ethereum"}):
            ours = tuple(a.address for a, _s in todo if a.chain == "ethereum" and a.network == network)
            seen_tokens[network] = self._token_contracts(network, ours)
        if progress is not None:
            progress(0, len(todo))
        for i, (a, _seg) in enumerate(todo):
            backend = self.backend(a.chain, a.network)
            bal = backend.balance(a.address)
            heights.setdefault(f"{a.chain}/{a.network}", bal.block_height or 0)
            observed.append(rcore.Observed(a.chain, a.network, a.address, NATIVE[a.chain], bal.amount))
            if a.chain == "ethereum":
                assets = set(tokens.get(a.network, [])) | {
                    k[3] for k in known if k[:3] == (a.chain, a.network, a.address) and k[3] != "ETH"
                }
                assets |= seen_tokens.get(a.network, set())
                for token in sorted(assets):
                    tb = backend.token_balance(token, a.address)  # type: ignore[attr-defined]
                    if tb.amount or (a.chain, a.network, a.address, token) in known:
                        observed.append(
                            rcore.Observed(
                                a.chain, a.network, a.address, eth.to_checksum_address(token), tb.amount
                            )
                        )
            elif a.chain == "solana":
                observed += self._sol_tokens(backend, a, known)
            if progress is not None:
                progress(i + 1, len(todo))
        return rcore.snapshot_doc(heights, observed, pending)

    def _token_contracts(self, network: str, ours: tuple[str, ...]) -> set[str]:
        """The contracts that ever logged a ``Transfer`` to ``ours``, asking the node only
        for the blocks since the last search: an address already searched continues
        from the cursor the log holds (``register.tokens_scanned``), a new one from block
        0. The cursor and what was found are recorded for the next run."""
        with self._scans.reading(self.svc.db) as marks:
            covered = set(marks.covered.get(network, ()))
            found = set(marks.tokens.get(network, ()))
            cursor = marks.searched_to.get(network, -1)
        eb: Any = self.backend("ethereum", network)
        tip = eb.tip_height()
        old = tuple(a for a in ours if a in covered)
        new = tuple(a for a in ours if a not in covered)
        fresh: set[str] = set()
        if old and cursor < tip:
            fresh |= set(eb.token_contracts_paying(old, from_block=cursor + 1, to_block=tip))
        if new:
            fresh |= set(eb.token_contracts_paying(new, from_block=0, to_block=tip))
        if new or tip != cursor:

            def use_case(call: Call) -> None:
                self.svc.audit(
                    call,
                    CONTRACT_SEARCH_KIND,
                    {
                        "chain": "ethereum",
                        "network": network,
                        "from_block": cursor + 1 if old else 0,
                        "to_block": tip,
                        "addresses": sorted(new),  # searched from block 0 this time
                        "tokens": sorted(fresh - found),
                    },
                    with_envelope=False,
                )

            self.svc.run_plain(CONTRACT_SEARCH_KIND, use_case)
        return found | fresh

    def _sol_tokens(
        self, backend: Any, a: AddressRow, known: dict[tuple[str, str, str, str], int]
    ) -> list[rcore.Observed]:
        """The SPL balances of one address, per mint (its token accounts of both token
        programs summed), with a zero for a mint the register holds there and the chain not."""
        per_mint: dict[str, int] = {}
        for tb in backend.token_balances(a.address):
            per_mint[tb.token] = per_mint.get(tb.token, 0) + tb.amount
        recorded = {k[3] for k in known if k[:3] == (a.chain, a.network, a.address) and k[3] != "SOL"}
        return [
            rcore.Observed(a.chain, a.network, a.address, mint, per_mint.get(mint, 0))
            for mint in sorted(set(per_mint) | recorded)
            if per_mint.get(mint, 0) or mint in recorded
        ]

    def reconcile(
        self, snapshot: dict[str, Any] | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Compare, sign, and log the report's hash. ``snapshot`` given (an offline
        chain snapshot) or read from the configured chains."""
        snap = snapshot if snapshot is not None else self.snapshot(progress)

        def use_case(call: Call) -> dict[str, Any]:
            size = audit_log.size(call.session)
            reg = self._register(call.session)
            report = rcore.reconcile(reg, snap, register_size=size)
            signature = self.svc.key.sign(rcore.report_bytes(report)).hex()
            digest = rcore.report_hash(report)
            self.svc.audit(
                call,
                "reconciliation.reported",
                {
                    "report_sha256": digest,
                    "verdict": report["verdict"],
                    "discrepancies": len(report["discrepancies"]),
                    "heights": report["heights"],
                    "snapshot_sha256": report["snapshot_sha256"],
                    "register_size": size,
                },
                with_envelope=False,
            )
            return {
                "report": report,
                "signature": signature,
                "report_sha256": digest,
                "snapshot": snap,
                "service_public": self.svc.key.sign_public.hex(),
            }

        return self.svc.run_plain("reconciliation.run", use_case)

    def start_reconcile(self) -> dict[str, Any]:
        """Run :meth:`reconcile` against the configured chains in the background (one at a
        time): reading ten thousand addresses takes longer than a request should. The
        job is a database row (:class:`ReconcileJob`): its progress (addresses read of
        all) and, once done, its signed report are in :meth:`job` from any process and
        after a restart. A job whose process stopped before it finished is shown as
        ``interrupted`` and can simply be started again."""
        now = self.svc.clock()
        jid = "rj_" + secrets.token_hex(8)
        with self.svc.db.write() as session:
            for row in session.exec(select(ReconcileJob).where(col(ReconcileJob.state) == "running")).all():
                if not self._interrupt_if_stale(session, row, now):
                    raise ConflictError("a reconciliation is already running; follow its job")
            row = ReconcileJob(id=jid, state="running", runner=self._runner, started_at=now, heartbeat_at=now)
            session.add(row)
            started = _job_view(row)
        beat = [0.0]

        def write(**fields: Any) -> None:
            with self.svc.db.write() as session:
                job = session.get(ReconcileJob, jid)
                assert job is not None
                for k, v in fields.items():
                    setattr(job, k, v)
                job.heartbeat_at = self.svc.clock()
                if job.state == "interrupted" and "state" not in fields:
                    job.state = "running"  # declared stale too early: it is alive after all
                session.add(job)

        def progress(done: int, total: int) -> None:
            if done == total or time.monotonic() - beat[0] >= JOB_PROGRESS_SECONDS:
                beat[0] = time.monotonic()
                write(done=done, total=total)

        def work() -> None:
            try:
                result = self.reconcile(progress=progress)
                write(state="done", result=canonical(result).decode("utf-8"), finished_at=self.svc.clock())
            except Error as exc:
                write(
                    state="failed",
                    error_code=exc.code,
                    error_message=exc.message,
                    finished_at=self.svc.clock(),
                )
            except Exception as exc:  # a job reports its failure, it does not vanish
                write(
                    state="failed",
                    error_code="internal_error",
                    error_message=type(exc).__name__,
                    finished_at=self.svc.clock(),
                )

        threading.Thread(target=work, name=f"reconcile-{jid}", daemon=True).start()
        return started

    def _interrupt_if_stale(self, session: Session, row: ReconcileJob, now: int) -> bool:
        """Mark a running job of another process that has not written for
        :data:`JOB_STALE_SECONDS` as interrupted (its process stopped). True if marked."""
        if row.runner == self._runner or now - row.heartbeat_at <= JOB_STALE_SECONDS:
            return False
        row.state = "interrupted"
        row.finished_at = now
        row.error_code = "interrupted"
        row.error_message = (
            "the server stopped before this reconciliation finished; start it again "
            "(reports already made are in the audit log)"
        )
        session.add(row)
        return True

    def _refresh(self, rows: list[ReconcileJob]) -> bool:
        """Mark the running jobs among ``rows`` whose runner went silent as interrupted;
        whether there was any."""
        now = self.svc.clock()
        stale = [r.id for r in rows if r.state == "running" and r.runner != self._runner]
        stale = [r.id for r in rows if r.id in stale and now - r.heartbeat_at > JOB_STALE_SECONDS]
        if not stale:
            return False
        with self.svc.db.write() as session:
            for jid in stale:
                row = session.get(ReconcileJob, jid)
                if row is not None and row.state == "running":
                    self._interrupt_if_stale(session, row, now)
        return True

    def job(self, jid: str) -> dict[str, Any]:
        """One job: ``running`` (``done`` of ``total`` addresses read), ``done`` with its
        ``result`` (the signed report), ``failed`` or ``interrupted`` with the error."""
        with self.svc.db.read() as session:
            row = session.get(ReconcileJob, jid)
        if row is None:
            raise NotFoundError("no reconciliation job with that id")
        self._refresh([row])
        with self.svc.db.read() as session:
            row = session.get(ReconcileJob, jid)
            assert row is not None
            return _job_view(row, with_result=True)

    def jobs(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of the jobs, newest first, without their reports: one indexed range
        read whatever number of jobs the database keeps."""

        def page() -> pages.Page[ReconcileJob]:
            with self.svc.db.read() as session:
                return pages.read_page(
                    session,
                    select(ReconcileJob),
                    kind="reconcile_job",
                    order=(col(ReconcileJob.started_at), col(ReconcileJob.id)),
                    limit=limit,
                    cursor=cursor,
                    descending=True,
                )

        got = page()
        if self._refresh(got.rows):
            got = page()  # a job just marked interrupted is shown as it now is
        return {"items": [_job_view(r) for r in got.rows], "next_cursor": got.next_cursor}

    # --- prices and statements ----------------------------------------------------------

    def import_prices(self, envelope: Any) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("prices",), where="body")
            prices = score.parse_prices(body["prices"])
            digest = score.prices_hash(prices)
            self.svc.audit(
                call, "prices.imported", {"prices": [p.to_json() for p in prices], "sha256": digest}
            )
            return {"imported": len(prices), "sha256": digest}

        return self.svc.run(
            "prices.import", envelope, use_case, types="prices.import", roles=(Role.MANAGER, Role.CUSTODIAN)
        )

    def prices(self) -> list[score.Price]:
        with self._prices.reading(self.svc.db) as prices:
            return list(prices)

    def prices_page(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of the imported prices, in the order imported."""
        after = pages.decode_cursor(cursor, "prices", (int,))
        size = pages.check_limit(limit)
        start = 0 if after is None else after[0] + 1
        with self._prices.reading(self.svc.db) as prices:
            chosen = prices[start : start + size + 1]
        more = len(chosen) > size
        items = [p.to_json() for p in chosen[:size]]
        last = start + size - 1
        return {"items": items, "next_cursor": pages.encode_cursor("prices", [last]) if more else None}

    def statements(self, envelope: Any, *, custodian: str) -> dict[str, Any]:
        """Statements for one client or all, for a period; their hashes into the log."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("period",), optional=("client",), where="body")
            start, end = score.parse_period(body["period"])
            reg = self._register(call.session)
            prices = self._prices.for_write(self.svc.db, call.session)
            ids = [body["client"]] if body.get("client") else sorted(reg.clients)
            grouped = score.by_client(reg)
            docs = []
            for cid in ids:
                if cid not in reg.clients:
                    raise NotFoundError(f"no client {cid}")
                docs.append(
                    score.statement(
                        reg,
                        cid,
                        start=start,
                        end=end,
                        period=body["period"],
                        prices=prices,
                        custodian=custodian,
                        entity=call.deployment.entity,
                        movements=grouped.get(cid, []),
                    )
                )
            pdf = statement_pdf.render(docs, custodian=custodian)
            bundle = {
                "statements": docs,
                "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
                "json_sha256": score.statements_hash(docs),
            }
            self.svc.audit(
                call,
                "statement.issued",
                {
                    "period": body["period"],
                    "clients": ids,
                    "pdf_sha256": bundle["pdf_sha256"],
                    "json_sha256": bundle["json_sha256"],
                },
            )
            bundle["pdf_hex"] = pdf.hex()
            bundle["csv"] = score.to_csv(docs)
            return bundle

        return self.svc.run(
            "statement.issue",
            envelope,
            use_case,
            types="statement.issue",
            roles=(Role.MANAGER, Role.CUSTODIAN),
        )

    # --- filling an intent from the chain -----------------------------------------------

    def suggest(
        self,
        *,
        wallet: str,
        chain: str,
        network: str,
        asset: str,
        destination: str | None = None,
        nonce_account: str | None = None,
        priority: bool = False,
    ) -> dict[str, Any]:
        """What a withdrawal intent needs from the chain: Ethereum nonce (past the nonces
        live withdrawals already hold), fee caps, gas limit and chain id; Bitcoin the
        wallet's unreserved UTXOs with their previous transactions and a fee rate; Solana
        a recent blockhash (or the named durable nonce account's stored nonce), the
        mint's decimals and whether the destination's token account must be created,
        and the fee the cluster charges for exactly that transaction; with ``priority``,
        a compute-unit price from the cluster's recent prioritization fees and the
        compute-unit limit Tandem's transfer needs (a priority fee the approvers review
        and the policy's fee cap counts)."""
        address, held, reserved = self._wallet_holds(wallet, chain, network)
        backend: Any = self.backend(chain, network)
        if chain == "ethereum":
            return _suggest_ethereum(backend, address, asset, held)
        if chain == "bitcoin":
            return _suggest_bitcoin(backend, address, reserved)
        if chain == "solana":
            return self._suggest_solana(
                backend, address, asset, destination, nonce_account, priority=priority
            )
        raise InputError(f"no intent filling for {chain}")

    def _wallet_holds(
        self, wallet: str, chain: str, network: str
    ) -> tuple[str, list[int], set[tuple[str, int]]]:
        """The wallet's address on the network, the Ethereum nonces live withdrawals from
        it already hold, and the outpoints reserved on the network."""
        from tandem.store.models import OutpointReservation, WithdrawalNonce

        with self.svc.db.read() as session:
            row = session.exec(
                select(AddressRow).where(
                    AddressRow.keyset == wallet, AddressRow.chain == chain, AddressRow.network == network
                )
            ).first()
            if row is None:
                raise NotFoundError(f"wallet {wallet} has no {chain}/{network} address")
            address = row.address
            held = [
                n.nonce
                for n in session.exec(
                    select(WithdrawalNonce).where(
                        WithdrawalNonce.chain == chain,
                        WithdrawalNonce.network == network,
                        WithdrawalNonce.address == address,
                    )
                ).all()
            ]
            reserved = {
                (r.txid, r.vout)
                for r in session.exec(
                    select(OutpointReservation).where(OutpointReservation.network == network)
                ).all()
            }
        return address, held, reserved

    def _suggest_solana(
        self,
        backend: Any,
        address: str,
        asset: str,
        destination: str | None,
        nonce_account: str | None,
        *,
        priority: bool = False,
    ) -> dict[str, Any]:
        if destination is None:
            raise InputError("a Solana suggestion needs the destination (its fee and token account)")
        destination = sol.validate_address(destination)
        params: dict[str, Any] = {}
        nonce = _solana_blockhash(backend, address, nonce_account, params)
        mint, program = _solana_token(backend, asset, destination, params)
        if priority:
            params["compute_unit_limit"] = _compute_units(
                mint, params.get("create_destination_account", False)
            )
            params["compute_unit_price"] = _priority_price(backend, address, destination, mint, program)
        message = stx.build_transfer(
            payer=address,
            destination=destination,
            amount=0,  # the fee does not depend on the amount
            recent_blockhash=params["recent_blockhash"],
            nonce_account=params.get("nonce_account"),
            mint=mint,
            decimals=params.get("decimals"),
            create_destination_account=params.get("create_destination_account", False),
            compute_unit_limit=params.get("compute_unit_limit"),
            compute_unit_price=params.get("compute_unit_price"),
            token_program=program,
        )
        reviewed = stx.review(message)
        fee = _solana_fee(backend, message, nonce, reviewed)
        return {
            "from": address,
            "solana": params,
            "fee": str(fee),
            "fee_worst_case": str(reviewed.fee),
            "priority_fee": str(reviewed.priority_fee),
        }

    def fill_intent(self, intent: dict[str, Any]) -> dict[str, Any]:
        """``intent`` with what it leaves out filled from the chain; what it names is kept
        (by hand stays possible)."""
        chain = intent.get("chain")
        if chain == "solana":
            asked = intent.get("solana") or {}
            if not isinstance(asked, dict) or "recent_blockhash" in asked:
                return dict(intent)
            given = dict(asked)
            # {"priority": true}: the manager asks for a priority fee, priced from the chain.
            priority = given.pop("priority", False)
            if not isinstance(priority, bool):
                raise InputError("intent.solana.priority must be true or false")
            got = self.suggest(
                wallet=intent["wallet"],
                chain="solana",
                network=intent["network"],
                asset=intent["asset"],
                destination=intent.get("destination"),
                nonce_account=given.get("nonce_account"),
                priority=priority,
            )
            return {"from": got["from"], **intent, "solana": {**got["solana"], **given}}
        if chain not in ("ethereum", "bitcoin") or chain in intent:
            return dict(intent)
        got = self.suggest(
            wallet=intent["wallet"], chain=chain, network=intent["network"], asset=intent["asset"]
        )
        return {**got, **intent}

    def logged_page(
        self, kind: str, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of the log's entries of ``kind`` (reports, statements), oldest first,
        found by the log's indexed ``kind`` column: index, time and data."""
        with self.svc.db.read() as session:
            page = pages.read_page(
                session,
                select(AuditRow).where(AuditRow.kind == kind),
                kind=kind,
                order=(col(AuditRow.seq),),
                limit=limit,
                cursor=cursor,
            )
        items = []
        for row in page.rows:
            e = cast(dict[str, Any], loads_strict(row.line))
            items.append({"index": e["index"], "time": e["time"], **e["data"]})
        return {"items": items, "next_cursor": page.next_cursor}

    def logged(self, kind: str) -> list[dict[str, Any]]:
        """The log's entries of ``kind`` (reports, statements): index, time and data."""
        with self.svc.db.read() as session:
            return [{"index": e["index"], "time": e["time"], **e["data"]} for e in _entries(session, (kind,))]
