"""Solana transactions Tandem builds, reviews and signs: SOL and SPL token transfers.

A legacy (unversioned) transaction message: a three-byte header, the account keys, a
recent blockhash (or a durable nonce's stored value) and the compiled instructions, each
length written as a compact-u16. Accounts are ordered as the Solana SDK compiles them:
the fee payer first, then writable signers, read-only signers, writable non-signers and
read-only non-signers, each group in byte order of the keys. The bytes are checked
against ``solders`` in the tests.

Tandem builds exactly these instructions, and the review refuses a message holding
anything else:

- System ``AdvanceNonceAccount`` first, when the intent names a durable nonce account
  (an approval can take longer than a blockhash lives, about a minute);
- System ``Transfer`` of lamports, for SOL;
- Associated Token Account ``CreateIdempotent`` (when asked), then SPL Token
  ``TransferChecked`` from the wallet's associated token account to the destination
  owner's, for tokens. ``TransferChecked`` makes the chain refuse a transfer whose
  decimals are not the mint's, so the amount a person reads cannot be scaled wrongly.

A message carries no cluster id; the network is the intent's, and the blockhash, which
exists on one cluster only, ties the transaction to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tandem.core.chains.base import BuiltTx, TxIntent
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.core.chains.ed25519 import (
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    address_from_public_key,
    sign_ed25519,
    verify_ed25519,
)
from tandem.core.policy import Fee
from tandem.errors import InputError, InvalidTransactionError, VerificationError

SYSTEM_PROGRAM = "11111111111111111111111111111111"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"  # noqa: S105 - a program id
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"  # noqa: S105 - a program id
TOKEN_PROGRAMS = (TOKEN_PROGRAM, TOKEN_2022_PROGRAM)
ASSOCIATED_TOKEN_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"  # noqa: S105 - a program id
RECENT_BLOCKHASHES_SYSVAR = "SysvarRecentB1ockHashes11111111111111111111"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"

# The fee a validator charges per signature (lamports). A priority fee is added only when
# the intent names a compute-unit price, and then with an explicit compute-unit limit,
# so that the fee the approvers review is bounded: ceil(limit * price / 1e6) lamports.
LAMPORTS_PER_SIGNATURE = 5000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000  # the most a transaction may ask for
MAX_COMPUTE_UNIT_PRICE = 100_000_000_000  # micro-lamports per unit: 140,000 SOL at the limit
MICRO_LAMPORTS = 1_000_000
# Rent-exempt balance of a 165-byte SPL token account, which its creator pays; a
# Token-2022 associated account of a mint without extensions is 170 bytes (the account
# type and its ImmutableOwner extension). Rent-exempt: (bytes + 128) * 3,480 * 2 lamports.
TOKEN_ACCOUNT_RENT = 2_039_280
TOKEN_2022_ACCOUNT_RENT = 2_074_080
MAX_TX_BYTES = 1232  # one packet: the IPv6 minimum MTU less headers

_SYS_TRANSFER = 2
_SYS_ADVANCE_NONCE = 4
_TOKEN_TRANSFER_CHECKED = 12
_ATA_CREATE_IDEMPOTENT = 1
_CB_SET_LIMIT = 2
_CB_SET_PRICE = 3
_U64_MAX = (1 << 64) - 1


def _key(address: str) -> bytes:
    raw = b58decode(address)
    if len(raw) != PUBLIC_KEY_LEN:
        raise InputError(f"{address} is not a 32-byte Solana address")
    return raw


# --- compact-u16 ("shortvec") ----------------------------------------------------------


def encode_length(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise InputError("a compact-u16 holds 0-65535")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidTransactionError("the Solana message ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def length(self) -> int:
        value = 0
        for i in range(3):
            b = self.byte()
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if i and b == 0:
                    raise InvalidTransactionError("a compact-u16 is not in its shortest form")
                if value > 0xFFFF:
                    raise InvalidTransactionError("a compact-u16 exceeds 65535")
                return value
        raise InvalidTransactionError("a compact-u16 is longer than three bytes")


# --- instructions and messages ---------------------------------------------------------


@dataclass(frozen=True)
class AccountMeta:
    address: str
    is_signer: bool
    is_writable: bool


@dataclass(frozen=True)
class Instruction:
    program: str
    accounts: tuple[AccountMeta, ...]
    data: bytes


def transfer(source: str, destination: str, lamports: int) -> Instruction:
    _u64(lamports, "lamports")
    return Instruction(
        SYSTEM_PROGRAM,
        (AccountMeta(source, True, True), AccountMeta(destination, False, True)),
        _SYS_TRANSFER.to_bytes(4, "little") + lamports.to_bytes(8, "little"),
    )


def advance_nonce(nonce_account: str, authority: str) -> Instruction:
    return Instruction(
        SYSTEM_PROGRAM,
        (
            AccountMeta(nonce_account, False, True),
            AccountMeta(RECENT_BLOCKHASHES_SYSVAR, False, False),
            AccountMeta(authority, True, False),
        ),
        _SYS_ADVANCE_NONCE.to_bytes(4, "little"),
    )


def set_compute_unit_limit(units: int) -> Instruction:
    if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_COMPUTE_UNIT_LIMIT:
        raise InputError(f"a compute-unit limit is 1-{MAX_COMPUTE_UNIT_LIMIT}")
    return Instruction(COMPUTE_BUDGET_PROGRAM, (), bytes([_CB_SET_LIMIT]) + units.to_bytes(4, "little"))


def set_compute_unit_price(micro_lamports: int) -> Instruction:
    if (
        isinstance(micro_lamports, bool)
        or not isinstance(micro_lamports, int)
        or not 1 <= micro_lamports <= MAX_COMPUTE_UNIT_PRICE
    ):
        raise InputError(f"a compute-unit price is 1-{MAX_COMPUTE_UNIT_PRICE} micro-lamports")
    return Instruction(
        COMPUTE_BUDGET_PROGRAM, (), bytes([_CB_SET_PRICE]) + micro_lamports.to_bytes(8, "little")
    )


def priority_fee(compute_unit_limit: int, compute_unit_price: int) -> int:
    """Lamports a compute-unit price costs at a limit, rounded up as the runtime does."""
    return -(-compute_unit_limit * compute_unit_price // MICRO_LAMPORTS)


def create_associated_token_account_idempotent(
    payer: str, owner: str, mint: str, program: str = TOKEN_PROGRAM
) -> Instruction:
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM,
        (
            AccountMeta(payer, True, True),
            AccountMeta(associated_token_address(owner, mint, program), False, True),
            AccountMeta(owner, False, False),
            AccountMeta(mint, False, False),
            AccountMeta(SYSTEM_PROGRAM, False, False),
            AccountMeta(program, False, False),
        ),
        bytes([_ATA_CREATE_IDEMPOTENT]),
    )


def transfer_checked(  # noqa: PLR0917 - the fields of one TransferChecked
    owner: str, destination_owner: str, mint: str, amount: int, decimals: int, program: str = TOKEN_PROGRAM
) -> Instruction:
    """TransferChecked between two associated accounts; the same instruction in both
    token programs (Token-2022 keeps SPL Token's layout for it)."""
    _u64(amount, "amount")
    if not 0 <= decimals <= 255:
        raise InputError("token decimals are 0-255")
    if program not in TOKEN_PROGRAMS:
        raise InputError("a token transfer runs in the SPL Token or the Token-2022 program")
    return Instruction(
        program,
        (
            AccountMeta(associated_token_address(owner, mint, program), False, True),
            AccountMeta(mint, False, False),
            AccountMeta(associated_token_address(destination_owner, mint, program), False, True),
            AccountMeta(owner, True, False),
        ),
        bytes([_TOKEN_TRANSFER_CHECKED]) + amount.to_bytes(8, "little") + bytes([decimals]),
    )


def _u64(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise InputError(f"{what} must be a whole number that fits in 64 bits")


_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def decompresses(point: bytes) -> bool:
    """Whether 32 bytes decode to a point of the Ed25519 curve, as the Solana runtime
    decides it for program addresses (any point, small order included; y reduced mod p).
    libsodium's stricter ``is_valid_point`` would call some curve points off-curve and
    derive a different address."""
    y = int.from_bytes(point, "little") & ((1 << 255) - 1)
    y2 = y * y % _P
    u = (y2 - 1) % _P
    v = (_D * y2 + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    return x2 == 0 or pow(x2, (_P - 1) // 2, _P) == 1


def find_program_address(seeds: Sequence[bytes], program: str) -> tuple[str, int]:
    """The program-derived address: the first bump from 255 down whose hash is off the
    Ed25519 curve (so no private key exists for it)."""
    program_id = _key(program)
    for bump in range(255, -1, -1):
        h = hashlib.sha256(b"".join(seeds) + bytes([bump]) + program_id + b"ProgramDerivedAddress").digest()
        if not decompresses(h):
            return b58encode(h), bump
    raise InputError("no program address exists for these seeds")  # pragma: no cover - 2^-256


def associated_token_address(owner: str, mint: str, program: str = TOKEN_PROGRAM) -> str:
    """The owner's associated account for ``mint`` in token ``program`` (the program is a
    seed: the same owner and mint have another account in each token program)."""
    return find_program_address([_key(owner), _key(program), _key(mint)], ASSOCIATED_TOKEN_PROGRAM)[0]


@dataclass(frozen=True)
class CompiledInstruction:
    program_index: int
    accounts: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class Message:
    num_required_signatures: int
    num_readonly_signed: int
    num_readonly_unsigned: int
    account_keys: tuple[str, ...]
    recent_blockhash: str
    instructions: tuple[CompiledInstruction, ...]

    def serialize(self) -> bytes:
        out = bytearray([self.num_required_signatures, self.num_readonly_signed, self.num_readonly_unsigned])
        out += encode_length(len(self.account_keys))
        for k in self.account_keys:
            out += _key(k)
        out += _key(self.recent_blockhash)
        out += encode_length(len(self.instructions))
        for ix in self.instructions:
            out.append(ix.program_index)
            out += encode_length(len(ix.accounts)) + bytes(ix.accounts)
            out += encode_length(len(ix.data)) + ix.data
        return bytes(out)

    def is_signer(self, index: int) -> bool:
        return index < self.num_required_signatures

    def is_writable(self, index: int) -> bool:
        if index < self.num_required_signatures:
            return index < self.num_required_signatures - self.num_readonly_signed
        return index < len(self.account_keys) - self.num_readonly_unsigned

    def resolve(self, ix: CompiledInstruction) -> Instruction:
        """An instruction with its accounts named and flagged, as the runtime sees it."""
        metas = tuple(
            AccountMeta(self.account_keys[i], self.is_signer(i), self.is_writable(i)) for i in ix.accounts
        )
        return Instruction(self.account_keys[ix.program_index], metas, ix.data)


def compile_message(instructions: Sequence[Instruction], payer: str, recent_blockhash: str) -> Message:
    """Compile as the Solana SDK does (``CompiledKeys::compile``)."""
    meta: dict[bytes, list[bool]] = {}  # key -> [is_signer, is_writable]
    for ix in instructions:
        meta.setdefault(_key(ix.program), [False, False])
        for a in ix.accounts:
            m = meta.setdefault(_key(a.address), [False, False])
            m[0] |= a.is_signer
            m[1] |= a.is_writable
    payer_key = _key(payer)
    meta[payer_key] = [True, True]
    rest = sorted(k for k in meta if k != payer_key)
    groups = (
        [payer_key] + [k for k in rest if meta[k][0] and meta[k][1]],
        [k for k in rest if meta[k][0] and not meta[k][1]],
        [k for k in rest if not meta[k][0] and meta[k][1]],
        [k for k in rest if not meta[k][0] and not meta[k][1]],
    )
    keys = [k for g in groups for k in g]
    if len(keys) > 255:
        raise InputError("a Solana message names at most 255 accounts")
    index = {k: i for i, k in enumerate(keys)}
    compiled = tuple(
        CompiledInstruction(
            index[_key(ix.program)], tuple(index[_key(a.address)] for a in ix.accounts), ix.data
        )
        for ix in instructions
    )
    return Message(
        num_required_signatures=len(groups[0]) + len(groups[1]),
        num_readonly_signed=len(groups[1]),
        num_readonly_unsigned=len(groups[3]),
        account_keys=tuple(b58encode(k) for k in keys),
        recent_blockhash=validate_blockhash(recent_blockhash),
        instructions=compiled,
    )


def validate_blockhash(text: str) -> str:
    try:
        raw = b58decode(text)
    except InputError:
        raise InputError("a Solana blockhash is base58") from None
    if len(raw) != 32:
        raise InputError(f"a Solana blockhash is 32 bytes, this one {len(raw)}")
    return b58encode(raw)


def parse_message(data: bytes) -> Message:
    """Strictly parse a legacy message; versioned (v0) messages are refused."""
    if not data:
        raise InvalidTransactionError("empty Solana message")
    if data[0] & 0x80:
        raise InvalidTransactionError("a versioned Solana message; Tandem reviews legacy messages only")
    r = _Reader(data)
    sigs, ro_signed, ro_unsigned = r.byte(), r.byte(), r.byte()
    n_keys = r.length()
    keys = tuple(b58encode(r.take(PUBLIC_KEY_LEN)) for _ in range(n_keys))
    if len(set(keys)) != n_keys:
        raise InvalidTransactionError("the Solana message names an account twice")
    if not 1 <= sigs <= n_keys or ro_signed >= sigs or ro_unsigned > n_keys - sigs:
        raise InvalidTransactionError("the Solana message header does not fit its accounts")
    blockhash = b58encode(r.take(32))
    instructions = []
    for _ in range(r.length()):
        program = r.byte()
        accounts = tuple(r.take(r.length()))
        data_ = r.take(r.length())
        if program >= n_keys or any(a >= n_keys for a in accounts):
            raise InvalidTransactionError("a Solana instruction names an account the message does not hold")
        instructions.append(CompiledInstruction(program, accounts, data_))
    if r.pos != len(data):
        raise InvalidTransactionError("bytes follow the Solana message")
    return Message(sigs, ro_signed, ro_unsigned, keys, blockhash, tuple(instructions))


# --- transactions ----------------------------------------------------------------------


def serialize_transaction(signatures: Sequence[bytes], message: bytes) -> bytes:
    return encode_length(len(signatures)) + b"".join(signatures) + message


def parse_transaction(data: bytes) -> tuple[list[bytes], bytes]:
    """(signatures, message bytes) of a wire transaction."""
    r = _Reader(data)
    n = r.length()
    signatures = [r.take(SIGNATURE_LEN) for _ in range(n)]
    message = data[r.pos :]
    if parse_message(message).num_required_signatures != n:
        raise InvalidTransactionError("the transaction's signature count differs from its message header")
    return signatures, message


def sign_message(message: bytes, seed: bytes) -> tuple[bytes, str]:
    """A one-signer transaction and its id (the first signature, base58)."""
    if parse_message(message).num_required_signatures != 1:
        raise InvalidTransactionError("Tandem signs Solana messages with exactly one signer")
    signature = sign_ed25519(seed, message)
    return serialize_transaction([signature], message), b58encode(signature)


def verify_transaction(signed: bytes, message: bytes, signer: str) -> str:
    signatures, signed_message = parse_transaction(signed)
    if signed_message != message:
        raise VerificationError("the signed transaction is not the approved unsigned message")
    parsed = parse_message(message)
    if len(signatures) != 1 or parsed.account_keys[0] != signer:
        raise VerificationError(f"the transaction is not signed by {signer} alone")
    verify_ed25519(_key(signer), message, signatures[0])
    return b58encode(signatures[0])


# --- review ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """What a transfer message does, read from its bytes alone."""

    payer: str
    recent_blockhash: str
    nonce_account: str | None
    destination: str  # the owner paid (for a token: the owner of the receiving account)
    amount: int
    mint: str | None
    decimals: int | None
    source_token_account: str | None
    destination_token_account: str | None
    creates_destination_account: bool
    compute_unit_limit: int | None = None
    compute_unit_price: int | None = None  # micro-lamports per compute unit
    token_program: str | None = None  # for a token: SPL Token or Token-2022

    @property
    def priority_fee(self) -> int:
        if self.compute_unit_limit is None or self.compute_unit_price is None:
            return 0
        return priority_fee(self.compute_unit_limit, self.compute_unit_price)

    @property
    def fee(self) -> int:
        """Worst case in lamports: the signature fee, the priority fee (the compute-unit
        price at the limit the message sets, charged whatever is used), plus the rent of a
        token account the transaction may create (the payer funds it; it is not returned)."""
        rent = 0
        if self.creates_destination_account:
            rent = TOKEN_2022_ACCOUNT_RENT if self.token_program == TOKEN_2022_PROGRAM else TOKEN_ACCOUNT_RENT
        return LAMPORTS_PER_SIGNATURE + self.priority_fee + rent


def _expect(ix: Instruction, program: str, data_len: int, tag: bytes, what: str) -> None:
    if ix.program != program or len(ix.data) != data_len or not ix.data.startswith(tag):
        raise InvalidTransactionError(f"instruction is not {what}")


def _metas(ix: Instruction, expected: Sequence[tuple[str | None, bool, bool]], what: str) -> list[str]:
    if len(ix.accounts) != len(expected):
        raise InvalidTransactionError(f"{what} names {len(ix.accounts)} accounts, not {len(expected)}")
    out = []
    # Flags are the message's, merged over its instructions: the fee payer is a writable
    # signer wherever it appears, so its writability says nothing about this instruction.
    for i, (a, (address, signer, writable)) in enumerate(zip(ix.accounts, expected, strict=True)):
        wrong_flags = a.is_signer != signer or (a.is_writable != writable and not (signer and a.is_signer))
        if (address is not None and a.address != address) or wrong_flags:
            raise InvalidTransactionError(f"{what}: account {i} ({a.address}) is not what it must be")
        out.append(a.address)
    return out


def review(message_bytes: bytes) -> Review:
    """Decode a message Tandem could have built; refuse any other instruction, signer or
    account flag. The caller compares the result with the intent.

    The instructions are read in the order Tandem writes them: an optional nonce advance,
    an optional compute budget, then one SOL transfer or one token transfer (with the
    creation of the receiving account before it, when asked)."""
    if len(message_bytes) + 1 + SIGNATURE_LEN > MAX_TX_BYTES:
        raise InvalidTransactionError("the Solana transaction would not fit in one packet")
    msg = parse_message(message_bytes)
    if msg.num_required_signatures != 1:
        raise InvalidTransactionError("the Solana message asks for more than one signer")
    payer = msg.account_keys[0]
    ixs = [msg.resolve(ix) for ix in msg.instructions]
    nonce_account, ixs = _review_nonce_advance(ixs, payer)
    limit, price, ixs = _review_compute_budget(ixs)
    common = _Common(payer, msg.recent_blockhash, nonce_account, limit, price)
    if len(ixs) == 1 and ixs[0].program == SYSTEM_PROGRAM:
        return _review_sol_transfer(ixs[0], common)
    return _review_token_transfer(ixs, common)


@dataclass(frozen=True)
class _Common:
    """What every transfer message states besides the transfer."""

    payer: str
    recent_blockhash: str
    nonce_account: str | None
    compute_unit_limit: int | None
    compute_unit_price: int | None


def _review_nonce_advance(ixs: list[Instruction], payer: str) -> tuple[str | None, list[Instruction]]:
    """The durable nonce account a leading ``AdvanceNonceAccount`` names (or None), and
    the instructions after it."""
    advance = _SYS_ADVANCE_NONCE.to_bytes(4, "little")
    if not (ixs and ixs[0].program == SYSTEM_PROGRAM and ixs[0].data[:4] == advance):
        return None, ixs
    _expect(ixs[0], SYSTEM_PROGRAM, 4, advance, "AdvanceNonceAccount")
    nonce_account = _metas(
        ixs[0],
        [(None, False, True), (RECENT_BLOCKHASHES_SYSVAR, False, False), (payer, True, False)],
        "nonce",
    )[0]
    return nonce_account, ixs[1:]


def _review_compute_budget(ixs: list[Instruction]) -> tuple[int | None, int | None, list[Instruction]]:
    """The compute-unit limit and price a leading compute budget sets (or neither), and
    the instructions after it."""
    if not (ixs and ixs[0].program == COMPUTE_BUDGET_PROGRAM):
        return None, None, ixs
    # Both, in this order, or neither: a price without a limit would cost up to the
    # default limit of every instruction, which the review would have to guess.
    if len(ixs) < 2 or ixs[1].program != COMPUTE_BUDGET_PROGRAM:
        raise InvalidTransactionError("a compute-unit price must come with a compute-unit limit")
    _expect(ixs[0], COMPUTE_BUDGET_PROGRAM, 5, bytes([_CB_SET_LIMIT]), "SetComputeUnitLimit")
    _expect(ixs[1], COMPUTE_BUDGET_PROGRAM, 9, bytes([_CB_SET_PRICE]), "SetComputeUnitPrice")
    _metas(ixs[0], [], "compute-unit limit")
    _metas(ixs[1], [], "compute-unit price")
    limit = int.from_bytes(ixs[0].data[1:5], "little")
    price = int.from_bytes(ixs[1].data[1:9], "little")
    if not 1 <= limit <= MAX_COMPUTE_UNIT_LIMIT or not 1 <= price <= MAX_COMPUTE_UNIT_PRICE:
        raise InvalidTransactionError("the compute budget is out of the range Tandem builds")
    return limit, price, ixs[2:]


def _review_sol_transfer(ix: Instruction, common: _Common) -> Review:
    """One System transfer of lamports from the payer."""
    _expect(ix, SYSTEM_PROGRAM, 12, _SYS_TRANSFER.to_bytes(4, "little"), "a System transfer")
    _, to = _metas(ix, [(common.payer, True, True), (None, False, True)], "transfer")
    return Review(
        compute_unit_limit=common.compute_unit_limit,
        compute_unit_price=common.compute_unit_price,
        payer=common.payer,
        recent_blockhash=common.recent_blockhash,
        nonce_account=common.nonce_account,
        destination=to,
        amount=int.from_bytes(ix.data[4:], "little"),
        mint=None,
        decimals=None,
        source_token_account=None,
        destination_token_account=None,
        creates_destination_account=False,
    )


def _review_token_transfer(ixs: list[Instruction], common: _Common) -> Review:
    """One ``TransferChecked`` from the payer's associated token account, after the
    creation of the receiving account when the message creates it."""
    payer = common.payer
    creates = len(ixs) == 2
    if not ixs or len(ixs) > 2:
        raise InvalidTransactionError("the Solana message is not one SOL or token transfer")
    ix = ixs[-1]
    program = ix.program if ix.program in TOKEN_PROGRAMS else TOKEN_PROGRAM
    _expect(ix, program, 10, bytes([_TOKEN_TRANSFER_CHECKED]), "an SPL TransferChecked")
    source, mint, dest_account, _ = _metas(
        ix,
        [(None, False, True), (None, False, False), (None, False, True), (payer, True, False)],
        "token transfer",
    )
    if source != associated_token_address(payer, mint, program):
        raise InvalidTransactionError("the tokens do not come from the wallet's associated token account")
    # Without the creation the owner is not in the bytes; the caller derives and compares.
    destination = _review_create_account(ixs[0], payer, dest_account, mint, program) if creates else ""
    return Review(
        compute_unit_limit=common.compute_unit_limit,
        compute_unit_price=common.compute_unit_price,
        payer=payer,
        recent_blockhash=common.recent_blockhash,
        nonce_account=common.nonce_account,
        destination=destination,
        amount=int.from_bytes(ix.data[1:9], "little"),
        mint=mint,
        decimals=ix.data[9],
        source_token_account=source,
        destination_token_account=dest_account,
        creates_destination_account=creates,
        token_program=program,
    )


def _review_create_account(create: Instruction, payer: str, account: str, mint: str, program: str) -> str:
    """A ``CreateIdempotent`` of the receiving account, the owner's associated account
    for ``mint``; the owner."""
    _expect(create, ASSOCIATED_TOKEN_PROGRAM, 1, bytes([_ATA_CREATE_IDEMPOTENT]), "CreateIdempotent")
    _, created, owner, create_mint, _, _ = _metas(
        create,
        [
            (payer, True, True),
            (account, False, True),
            (None, False, False),
            (mint, False, False),
            (SYSTEM_PROGRAM, False, False),
            (program, False, False),
        ],
        "create token account",
    )
    if created != associated_token_address(owner, create_mint, program):
        raise InvalidTransactionError("the token account created is not the owner's associated account")
    return owner


def build_transfer(  # noqa: PLR0913 - one keyword per field of a Solana intent
    *,
    payer: str,
    destination: str,
    amount: int,
    recent_blockhash: str,
    nonce_account: str | None = None,
    mint: str | None = None,
    decimals: int | None = None,
    create_destination_account: bool = False,
    compute_unit_limit: int | None = None,
    compute_unit_price: int | None = None,
    token_program: str = TOKEN_PROGRAM,
) -> bytes:
    """The unsigned message of a SOL (no ``mint``) or SPL token transfer; with a priority
    fee, SetComputeUnitLimit and SetComputeUnitPrice come first (after AdvanceNonce,
    which a durable-nonce transaction must start with)."""
    ixs: list[Instruction] = []
    if nonce_account is not None:
        ixs.append(advance_nonce(nonce_account, payer))
    if (compute_unit_limit is None) != (compute_unit_price is None):
        raise InputError("a compute-unit price and a compute-unit limit go together")
    if compute_unit_limit is not None and compute_unit_price is not None:
        ixs += [set_compute_unit_limit(compute_unit_limit), set_compute_unit_price(compute_unit_price)]
    if mint is None:
        ixs.append(transfer(payer, destination, amount))
    else:
        if decimals is None:
            raise InputError("a token transfer states the mint's decimals")
        if create_destination_account:
            ixs.append(create_associated_token_account_idempotent(payer, destination, mint, token_program))
        ixs.append(transfer_checked(payer, destination, mint, amount, decimals, token_program))
    return compile_message(ixs, payer, recent_blockhash).serialize()


# --- withdrawals -----------------------------------------------------------------------


@dataclass(frozen=True)
class SolParams:
    """A Solana intent's chain parameters: the blockhash the message names (a durable
    nonce's stored value when ``nonce_account`` is given, which an approval that takes
    longer than a minute needs), and for tokens the mint's decimals and whether the
    transaction creates the destination's associated token account. A priority fee is
    a compute-unit price (micro-lamports) with the compute-unit limit it is paid at.
    ``token_program`` is set for a Token-2022 mint (None: SPL Token, the default)."""

    recent_blockhash: str
    nonce_account: str | None = None
    decimals: int | None = None
    create_destination_account: bool = False
    compute_unit_limit: int | None = None
    compute_unit_price: int | None = None
    token_program: str | None = None

    @property
    def program(self) -> str:
        """The token program the transfer runs in."""
        return self.token_program or TOKEN_PROGRAM


class SolanaIntent(TxIntent, Protocol):
    """What Solana transfers read of a withdrawal intent, besides the fields every chain reads."""

    @property
    def sol(self) -> SolParams | None: ...


class SolanaTx:
    """Legacy messages of one SOL or SPL token transfer, as :func:`build_transfer` builds them."""

    def own_address(self, public_key: bytes, network: str) -> str:
        return address_from_public_key(public_key)

    def token(self, asset: str) -> str | None:
        return None if asset == "SOL" else asset

    def token_key(self, token: str) -> str:
        return token  # base58 is case-sensitive

    def build(self, intent: SolanaIntent, public_key: bytes) -> BuiltTx:
        p = intent.sol
        assert p is not None  # noqa: S101 - parse_intent guarantees it
        raw = build_transfer(
            payer=intent.from_address,
            destination=intent.destination,
            amount=intent.amount,
            recent_blockhash=p.recent_blockhash,
            nonce_account=p.nonce_account,
            mint=intent.token,
            decimals=p.decimals,
            create_destination_account=p.create_destination_account,
            compute_unit_limit=p.compute_unit_limit,
            compute_unit_price=p.compute_unit_price,
            token_program=p.program,
        )
        return BuiltTx(raw, (), review(raw).fee, 0)

    def decode(
        self, intent: SolanaIntent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        if prevouts:
            raise InputError("a Solana transaction has no prevouts")
        r = review(unsigned)
        to = r.destination
        if r.mint is not None and not r.creates_destination_account:
            # The owner is not in the bytes; the receiving account must be the intent's
            # destination's own associated account, or the view names the account itself.
            owner_account = associated_token_address(intent.destination, r.mint, str(r.token_program))
            to = (
                intent.destination
                if r.destination_token_account == owner_account
                else str(r.destination_token_account)
            )
        return {
            "chain": "solana",
            "network": intent.network,
            "chain_id": None,
            "from": r.payer,
            "to": to,
            "amount": str(r.amount),
            "asset": r.mint or "SOL",
            "token": r.mint,
            "decimals": r.decimals,
            "fee": str(r.fee),
            "change": None,
            "txid": None,
            "recent_blockhash": r.recent_blockhash,
            "nonce_account": r.nonce_account,
            "source_token_account": r.source_token_account,
            "destination_token_account": r.destination_token_account,
            "creates_destination_account": r.creates_destination_account,
            "compute_unit_limit": r.compute_unit_limit,
            "compute_unit_price": r.compute_unit_price,
            "priority_fee": None if r.compute_unit_price is None else str(r.priority_fee),
            "token_program": r.token_program,
        }

    def mismatches(self, intent: SolanaIntent, view: Mapping[str, Any]) -> list[str]:
        p = intent.sol
        assert p is not None  # noqa: S101
        problems = []
        if view["from"] != intent.from_address:
            problems.append(
                f"the fee payer and signer is {view['from']}, the intent says {intent.from_address}"
            )
        if view["to"] != intent.destination:
            problems.append(f"destination is {view['to']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        if view["asset"] != intent.asset:
            problems.append(f"asset is {view['asset']}, the intent says {intent.asset}")
        for key in (
            "recent_blockhash",
            "nonce_account",
            "decimals",
            "compute_unit_limit",
            "compute_unit_price",
        ):
            if view.get(key) != getattr(p, key):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        if intent.token is not None and view.get("token_program") != p.program:
            problems.append(f"the token program is {view.get('token_program')}, the intent says {p.program}")
        if view["creates_destination_account"] != p.create_destination_account:
            problems.append("the transaction and the intent differ on creating the destination token account")
        return problems

    def fee(self, intent: SolanaIntent, view: Mapping[str, Any]) -> Fee:
        """The signature fee, the priority fee at the message's compute-unit limit and any
        rent, at the signature fee, with the compute-unit price beside it."""
        price = view.get("compute_unit_price")
        return Fee(
            amount=int(view["fee"]),
            asset="SOL",
            rate=LAMPORTS_PER_SIGNATURE,
            priority_rate=None if price is None else int(price),
        )

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return sign_message(unsigned, private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        return verify_transaction(signed, unsigned, from_address)


SOLANA_TX = SolanaTx()
