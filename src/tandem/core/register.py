"""The register of positions: clients, movements and positions, rebuilt from the audit log.

Every movement of client assets is an audit entry (``register.deposit``,
``register.withdrawal``, ``register.fee``, ``register.allocation``), so the register is
not a second record beside the log: it *is* a reading of the log. :meth:`Register.replay`
is that reading, used by the server to answer and by the offline check to re-derive,
and it refuses an entry that no rule justifies:

* a client exists only through a manager's ``client.propose`` and a custodian's
  ``client.approve`` of exactly that proposal (another member than the proposer);
* a withdrawal movement names a withdrawal that the log shows created and released,
  with the released txid, the created amount, asset and wallet;
* a fee is at most the worst-case fee the withdrawal was approved with;
* a deposit's evidence (txid and output or log index) is recorded once;
* a deposit into a client's segregated wallet is that client's; one into an omnibus
  wallet is unallocated until an approved allocation moves it to an omnibus client,
  never more than the deposit brought.

Pure: no I/O, no clock. Amounts are integers in base units.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tandem.core.canonical import canonical, parse_amount
from tandem.core.roles import a_role
from tandem.errors import VerificationError

CLIENT_CLASSES = ("segregated", "omnibus")
UNALLOCATED = "unallocated"  # an omnibus deposit not yet attributed to a client
FUND = "fund"  # the fund's own wallets (segregation "own")

REGISTER_KINDS = (
    "client.proposed",
    "client.created",
    "allocation.proposed",
    "register.allocation",
    "register.deposit",
    "register.withdrawal",
    "register.fee",
    "withdrawal.created",
    "withdrawal.released",
)
MOVEMENT_KINDS = ("register.deposit", "register.withdrawal", "register.fee", "register.allocation")


def proposal_digest(kind: str, proposal_id: str, content: Mapping[str, Any], proposer: str) -> str:
    """What an approver signs for: the proposal's content, id and proposer."""
    doc = {"kind": kind, "proposal": proposal_id, "content": dict(content), "proposer": proposer}
    return hashlib.sha256(b"TANDEM/1/books-proposal\x00" + canonical(doc)).hexdigest()


def owner_of_segregation(segregation: str) -> str | None:
    """The client a wallet's segregation class names: ``client:<id>`` names one; an
    omnibus wallet names none (its deposits wait for an allocation); ``own`` is the fund."""
    if segregation.startswith("client:"):
        return segregation.split(":", 1)[1]
    if segregation == "own":
        return FUND
    return None


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    segregation: str  # segregated | omnibus
    created_at: int
    proposal: str


@dataclass(frozen=True)
class Movement:
    id: str
    type: str  # deposit | withdrawal | fee | allocation
    client: str  # a client id, UNALLOCATED or FUND
    chain: str
    network: str
    asset: str
    wallet: str
    address: str
    amount: int  # signed: + in, - out
    time: int
    txid: str | None = None
    index: int | None = None  # output (Bitcoin) or log index (ERC-20)
    withdrawal: str | None = None
    height: int | None = None
    entry: int | None = None  # audit index

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "client": self.client,
            "chain": self.chain,
            "network": self.network,
            "asset": self.asset,
            "wallet": self.wallet,
            "address": self.address,
            "amount": str(self.amount),
            "time": self.time,
            "txid": self.txid,
            "index": self.index,
            "withdrawal": self.withdrawal,
            "height": self.height,
            "entry": self.entry,
        }


@dataclass(frozen=True)
class _Withdrawal:
    id: str
    wallet: str
    chain: str
    network: str
    asset: str
    amount: int
    fee: int
    fee_asset: str
    address: str | None
    txid: str | None = None
    moved: bool = False
    fee_charged: bool = False


@dataclass(frozen=True)
class _Proposal:
    kind: str
    content: dict[str, Any]
    proposer: str
    digest: str
    done: bool = False


@dataclass
class Register:
    clients: dict[str, Client] = field(default_factory=dict)
    movements: list[Movement] = field(default_factory=list)
    entries_read: int = 0
    _proposals: dict[str, _Proposal] = field(default_factory=dict)
    _withdrawals: dict[str, _Withdrawal] = field(default_factory=dict)
    _evidence: set[tuple[str, str, str, str, int]] = field(default_factory=set)
    _deposits: dict[str, Movement] = field(default_factory=dict)
    _allocated: dict[str, int] = field(default_factory=dict)
    _proposed_clients: set[str] = field(default_factory=set)  # open client proposals, by client id
    # Kept as movements are added, so that answers cost what they return, not the history.
    _positions: dict[tuple[str, str, str, str, str, str], int] = field(default_factory=dict)
    _by_client: dict[str, list[int]] = field(default_factory=dict)  # client -> places in movements
    _open: dict[str, None] = field(default_factory=dict)  # undecided proposals, in order proposed

    def fork(self) -> Register:
        """A copy to try entries on: what it observes leaves this register as it was.
        The records held are immutable, so copying the containers is enough."""
        return Register(
            clients=dict(self.clients),
            movements=list(self.movements),
            entries_read=self.entries_read,
            _proposals=dict(self._proposals),
            _withdrawals=dict(self._withdrawals),
            _evidence=set(self._evidence),
            _deposits=dict(self._deposits),
            _allocated=dict(self._allocated),
            _proposed_clients=set(self._proposed_clients),
            _positions=dict(self._positions),
            _by_client={c: list(places) for c, places in self._by_client.items()},
            _open=dict(self._open),
        )

    def open_proposals(self) -> list[tuple[str, _Proposal]]:
        """Client and allocation proposals not decided yet, oldest first."""
        return [(pid, self._proposals[pid]) for pid in self._open]

    def proposal(self, pid: str) -> _Proposal | None:
        return self._proposals.get(pid)

    def client_taken(self, client_id: str) -> bool:
        """Whether a client of that id exists or is proposed."""
        return client_id in self.clients or client_id in self._proposed_clients

    def _add(self, m: Movement) -> None:
        self._by_client.setdefault(m.client, []).append(len(self.movements))
        self.movements.append(m)
        key = (m.client, m.chain, m.network, m.asset, m.wallet, m.address)
        self._positions[key] = self._positions.get(key, 0) + m.amount

    def movements_page(
        self, *, client: str | None, after: int, limit: int
    ) -> tuple[list[Movement], int | None]:
        """Up to ``limit`` movements (of one client, or all) after place ``after`` (-1:
        from the first), in the order recorded, and the place to continue after (None:
        the last page). Costs the page, not the register."""
        if client is None:
            places: list[int] | range = range(after + 1, min(len(self.movements), after + 2 + limit))
        else:
            mine = self._by_client.get(client, [])
            start = bisect.bisect_right(mine, after)
            places = mine[start : start + limit + 1]
        chosen = list(places)
        more = len(chosen) > limit
        chosen = chosen[:limit]
        return [self.movements[i] for i in chosen], (chosen[-1] if more and chosen else None)

    # --- reading ----------------------------------------------------------------------

    @classmethod
    def replay(
        cls, entries: Iterable[Mapping[str, Any]], *, roles: Mapping[str, str] | None = None
    ) -> Register:
        """The register the log's entries describe; :class:`VerificationError` naming the
        first entry no rule justifies. ``roles`` (member id to role) makes the proposal
        and approval roles checked too; the server and the offline check both pass it."""
        reg = cls()
        for entry in entries:
            reg.observe(entry, roles=roles)
        return reg

    def observe(self, entry: Mapping[str, Any], *, roles: Mapping[str, str] | None = None) -> None:
        kind = entry.get("kind")
        if kind not in REGISTER_KINDS or entry.get("outcome") != "ok":
            return
        self.entries_read += 1
        try:
            _RULES[kind](self, entry, roles)
        except VerificationError as exc:
            raise VerificationError(f"register entry {entry.get('index')} ({kind}): {exc.message}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(
                f"register entry {entry.get('index')} ({kind}) is malformed: {type(exc).__name__}"
            ) from None

    # --- rules ------------------------------------------------------------------------

    def _proposed(self, entry: Mapping[str, Any], roles: Mapping[str, str] | None) -> None:
        data = entry["data"]
        action = _action(entry)
        actor = action["actor"]
        _role(roles, actor, "manager")
        pid = data["proposal"]
        if pid in self._proposals:
            raise VerificationError(f"proposal {pid} is recorded twice")
        pkind = "client.create" if entry["kind"] == "client.proposed" else "allocation"
        expected_type = "client.propose" if pkind == "client.create" else "allocation.propose"
        if action["type"] != expected_type:
            raise VerificationError(f"a {entry['kind']} entry carries a {action['type']} action")
        content = data["content"]
        if content != action["body"]:
            raise VerificationError("the logged content is not the signed proposal")
        digest = proposal_digest(pkind, pid, content, actor)
        if data["digest"] != digest:
            raise VerificationError("the logged digest is not the signed proposal's")
        if pkind == "client.create":
            _check_client(content)
            if content["id"] in self.clients or content["id"] in self._proposed_clients:
                raise VerificationError(f"client {content['id']} exists or is already proposed")
        self._proposals[pid] = _Proposal(pkind, content, actor, digest)
        self._open[pid] = None
        if pkind == "client.create":
            self._proposed_clients.add(content["id"])

    def _approved(self, entry: Mapping[str, Any], roles: Mapping[str, str] | None, pkind: str) -> _Proposal:
        action = _action(entry)
        expected_type = "client.approve" if pkind == "client.create" else "allocation.approve"
        if action["type"] != expected_type:
            raise VerificationError(f"a {entry['kind']} entry carries a {action['type']} action")
        pid = action["body"]["proposal"]
        p = self._proposals.get(pid)
        if p is None or p.kind != pkind or p.done:
            raise VerificationError(f"no open {pkind} proposal {pid} justifies it")
        if action["body"]["digest"] != p.digest:
            raise VerificationError("the approval is for other content (digest mismatch)")
        if action["actor"] == p.proposer:
            raise VerificationError("a proposer cannot approve its own proposal")
        _role(roles, action["actor"], "custodian")
        p = self._proposals[pid] = replace(p, done=True)
        self._open.pop(pid, None)
        if pkind == "client.create":
            self._proposed_clients.discard(p.content["id"])
        return p

    def _client_created(self, entry: Mapping[str, Any], roles: Mapping[str, str] | None) -> None:
        p = self._approved(entry, roles, "client.create")
        c = p.content
        if entry["data"]["client"] != c:
            raise VerificationError("the entry creates another client than the approved proposal")
        self.clients[c["id"]] = Client(
            c["id"], c["name"], c["segregation"], entry["time"], entry["data"]["proposal"]
        )

    def _allocation(self, entry: Mapping[str, Any], roles: Mapping[str, str] | None) -> None:
        p = self._approved(entry, roles, "allocation")
        c = p.content
        deposit = self._deposits.get(c["deposit"])
        if deposit is None or deposit.client != UNALLOCATED:
            raise VerificationError(f"allocation names no unallocated omnibus deposit {c['deposit']}")
        client = self.clients.get(c["client"])
        if client is None or client.segregation != "omnibus":
            raise VerificationError(f"allocation to {c['client']}, which is no omnibus client")
        amount = parse_amount(c["amount"], where="allocation.amount")
        if amount < 1 or self._allocated.get(deposit.id, 0) + amount > deposit.amount:
            raise VerificationError("allocation exceeds what the deposit brought")
        self._allocated[deposit.id] = self._allocated.get(deposit.id, 0) + amount
        base = {
            "chain": deposit.chain,
            "network": deposit.network,
            "asset": deposit.asset,
            "wallet": deposit.wallet,
            "address": deposit.address,
            "time": entry["time"],
            "txid": deposit.txid,
            "index": deposit.index,
            "height": deposit.height,
            "entry": entry.get("index"),
        }
        mid = entry["data"]["movement"]
        self._add(Movement(id=mid + "-out", type="allocation", client=UNALLOCATED, amount=-amount, **base))
        self._add(Movement(id=mid, type="allocation", client=client.id, amount=amount, **base))

    def _withdrawal_created(self, entry: Mapping[str, Any], _roles: Mapping[str, str] | None) -> None:
        d = entry["data"]
        intent = _action(entry)["body"].get("intent", {}) if entry.get("envelope") else {}
        self._withdrawals[d["withdrawal"]] = _Withdrawal(
            id=d["withdrawal"],
            wallet=d["wallet"],
            chain=d["chain"],
            network=d["network"],
            asset=d["asset"],
            amount=int(d["amount"]),
            fee=int(d["fee"]),
            fee_asset=d["fee_asset"],
            address=intent.get("from") if isinstance(intent, dict) else None,
        )

    def _withdrawal_released(self, entry: Mapping[str, Any], _roles: Mapping[str, str] | None) -> None:
        w = self._withdrawals.get(entry["data"]["withdrawal"])
        if w is not None:
            self._withdrawals[w.id] = replace(w, txid=entry["data"]["txid"])

    def _movement(self, entry: Mapping[str, Any], _roles: Mapping[str, str] | None) -> None:
        m = movement_from_json(entry["data"]["movement"], entry=entry.get("index"))
        if m.type == "deposit":
            self._check_deposit(m, entry["data"]["segregation"])
        else:
            self._check_outflow(m)
        self._add(m)

    def _check_deposit(self, m: Movement, segregation: str) -> None:
        if m.amount < 1 or m.txid is None:
            raise VerificationError("a deposit brings a positive amount and names its transaction")
        key = (m.chain, m.network, m.asset, m.txid.lower(), -1 if m.index is None else m.index)
        if key in self._evidence:
            raise VerificationError(f"deposit {m.txid}:{m.index} is recorded twice")
        self._evidence.add(key)
        owner = owner_of_segregation(segregation)
        if owner is None:
            if m.client != UNALLOCATED:
                raise VerificationError("a deposit into an omnibus wallet waits for an approved allocation")
        elif owner == FUND:
            if m.client != FUND:
                raise VerificationError("a deposit into the fund's own wallet is the fund's")
        elif m.client != owner or owner not in self.clients:
            raise VerificationError(f"a deposit into client {owner}'s wallet credits {m.client}")
        self._deposits[m.id] = m

    def _check_outflow(self, m: Movement) -> None:
        w = self._withdrawals.get(m.withdrawal or "")
        if w is None or w.txid is None:
            raise VerificationError(f"{m.type} names no released withdrawal {m.withdrawal}")
        if m.txid is None or m.txid.lower().removeprefix("0x") != w.txid.lower().removeprefix("0x"):
            raise VerificationError(f"{m.type} names txid {m.txid}, the release was {w.txid}")
        if (m.wallet, m.chain, m.network) != (w.wallet, w.chain, w.network):
            raise VerificationError(f"{m.type} names another wallet than withdrawal {w.id}")
        if w.address is not None and m.address != w.address:
            raise VerificationError(f"{m.type} names another address than withdrawal {w.id}")
        if m.client not in (FUND, UNALLOCATED) and m.client not in self.clients:
            raise VerificationError(f"{m.type} is charged to unknown client {m.client}")
        if m.type == "withdrawal":
            if w.moved or m.asset != w.asset or -m.amount != w.amount:
                raise VerificationError(
                    f"withdrawal {w.id} moved {w.amount} {w.asset}; the entry says {-m.amount} {m.asset}"
                    + (" (already recorded)" if w.moved else "")
                )
            self._withdrawals[w.id] = replace(w, moved=True)
        elif m.type == "fee":
            if w.fee_charged or m.asset != w.fee_asset or not 0 <= -m.amount <= w.fee:
                raise VerificationError(f"fee of withdrawal {w.id} is at most {w.fee} {w.fee_asset}")
            self._withdrawals[w.id] = replace(w, fee_charged=True)
        else:
            raise VerificationError(f"unknown movement type {m.type}")

    # --- answers ----------------------------------------------------------------------

    def positions(self, *, until: int | None = None) -> dict[tuple[str, str, str, str, str, str], int]:
        """(client, chain, network, asset, wallet, address) -> balance, at ``until`` (time)."""
        if until is None:
            return dict(self._positions)
        out: dict[tuple[str, str, str, str, str, str], int] = {}
        for m in self.movements:
            if until is not None and m.time > until:
                continue
            key = (m.client, m.chain, m.network, m.asset, m.wallet, m.address)
            out[key] = out.get(key, 0) + m.amount
        return out

    def address_balances(self) -> dict[tuple[str, str, str, str], int]:
        """(chain, network, address, asset) -> what the register says the address holds."""
        out: dict[tuple[str, str, str, str], int] = {}
        for (_c, chain, network, asset, _w, address), amount in self.positions().items():
            key = (chain, network, address, asset)
            out[key] = out.get(key, 0) + amount
        return out

    def deposit(self, movement_id: str) -> Movement | None:
        return self._deposits.get(movement_id)

    def evidence_seen(self, chain: str, network: str, asset: str, txid: str, index: int | None) -> bool:
        return (chain, network, asset, txid.lower(), -1 if index is None else index) in self._evidence

    def unmoved_withdrawals(self) -> list[str]:
        """Released withdrawals whose movement is not in the register yet."""
        return [w.id for w in self._withdrawals.values() if w.txid is not None and not w.moved]

    def pending_outflows(self, unconfirmed: Iterable[str]) -> dict[tuple[str, str, str, str], int]:
        """(chain, network, address, asset) -> amount (with its fee) of the named released
        withdrawals that the register has not moved yet."""
        out: dict[tuple[str, str, str, str], int] = {}
        for wid in unconfirmed:
            w = self._withdrawals.get(wid)
            if w is None or w.moved or w.address is None:
                continue
            key = (w.chain, w.network, w.address, w.asset)
            out[key] = out.get(key, 0) + w.amount
            fee_key = (w.chain, w.network, w.address, w.fee_asset)
            out[fee_key] = out.get(fee_key, 0) + w.fee
        return out


def movement_from_json(doc: Mapping[str, Any], *, entry: int | None = None) -> Movement:
    amount = doc["amount"]
    if not isinstance(amount, str):
        raise VerificationError("movement.amount must be a decimal string")
    negative = amount.startswith("-")
    value = parse_amount(amount[1:] if negative else amount, where="movement.amount")
    index = doc.get("index")
    height = doc.get("height")
    for name, v in (("index", index), ("height", height)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise VerificationError(f"movement.{name} must be a non-negative integer")
    for name in ("id", "type", "client", "chain", "network", "asset", "wallet", "address"):
        if not isinstance(doc[name], str) or not doc[name]:
            raise VerificationError(f"movement.{name} must be text")
    return Movement(
        id=doc["id"],
        type=doc["type"],
        client=doc["client"],
        chain=doc["chain"],
        network=doc["network"],
        asset=doc["asset"],
        wallet=doc["wallet"],
        address=doc["address"],
        amount=-value if negative else value,
        time=int(doc["time"]),
        txid=doc.get("txid"),
        index=index,
        withdrawal=doc.get("withdrawal"),
        height=height,
        entry=entry,
    )


def _check_client(content: Mapping[str, Any]) -> None:
    if set(content) != {"id", "name", "segregation"}:
        raise VerificationError("a client is exactly id, name and segregation")
    cid, name, seg = content["id"], content["name"], content["segregation"]
    if (
        not isinstance(cid, str)
        or not cid
        or len(cid) > 48
        or not all(ch.isalnum() or ch in "-_" for ch in cid)
    ):
        raise VerificationError("a client id is 1-48 letters, digits, - or _")
    if cid in (UNALLOCATED, FUND):
        raise VerificationError(f"{cid!r} is reserved")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise VerificationError("a client name is 1-200 characters")
    if seg not in CLIENT_CLASSES:
        raise VerificationError("segregation is segregated or omnibus")


def check_client_content(body: Any) -> dict[str, Any]:
    """A ``client.propose`` body, checked (the server's check and the replay's are one)."""
    if not isinstance(body, dict):
        raise VerificationError("body must be an object")
    _check_client(body)
    return dict(body)


def _action(entry: Mapping[str, Any]) -> dict[str, Any]:
    env = entry.get("envelope")
    if not isinstance(env, dict) or not isinstance(env.get("action"), dict):
        raise VerificationError("the entry carries no signed action")
    action: dict[str, Any] = env["action"]
    return action


def _role(roles: Mapping[str, str] | None, actor: str, expected: str) -> None:
    if roles is not None and roles.get(actor) != expected:
        raise VerificationError(f"{actor} is {a_role(str(roles.get(actor)))}, not {a_role(str(expected))}")


_RULES: dict[str, Any] = {
    "client.proposed": Register._proposed,
    "allocation.proposed": Register._proposed,
    "client.created": Register._client_created,
    "register.allocation": Register._allocation,
    "register.deposit": Register._movement,
    "register.withdrawal": Register._movement,
    "register.fee": Register._movement,
    "withdrawal.created": Register._withdrawal_created,
    "withdrawal.released": Register._withdrawal_released,
}
