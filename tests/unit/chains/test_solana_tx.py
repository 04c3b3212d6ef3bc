"""Solana transfer messages, byte for byte against ``solders`` (the Rust SDK's own
message compiler and signature check, from PyPI), and the review's refusals."""

from __future__ import annotations

import hashlib

import pytest

from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.errors import InputError, InvalidTransactionError, VerificationError

solders = pytest.importorskip("solders")
from solders.hash import Hash  # noqa: E402
from solders.instruction import AccountMeta, Instruction  # noqa: E402
from solders.message import Message  # noqa: E402
from solders.pubkey import Pubkey  # noqa: E402
from solders.signature import Signature  # noqa: E402
from solders.system_program import (  # noqa: E402
    AdvanceNonceAccountParams,
    TransferParams,
    advance_nonce_account,
)
from solders.system_program import transfer as sd_transfer  # noqa: E402
from solders.token.associated import get_associated_token_address  # noqa: E402
from solders.transaction import Transaction  # noqa: E402

SEED = hashlib.sha256(b"tandem solana wallet").digest()
PAYER = sol.address_from_public_key(sol.public_key_from_seed(SEED))
DEST = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"destination").digest()))
MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"  # USDC on mainnet
NONCE = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"nonce account").digest()))
BLOCKHASH = "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N"
TOKEN = Pubkey.from_string(stx.TOKEN_PROGRAM)
TOKEN_2022 = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")  # written out, not ours
ATA = Pubkey.from_string(stx.ASSOCIATED_TOKEN_PROGRAM)


def pk(address: str) -> Pubkey:
    return Pubkey.from_string(address)


def sd_ata(owner: str, mint: str, program: Pubkey | None = None) -> Pubkey:
    if program is not None:
        return get_associated_token_address(pk(owner), pk(mint), program)
    return Pubkey.find_program_address([bytes(pk(owner)), bytes(TOKEN), bytes(pk(mint))], ATA)[0]


def sd_message(ixs: list[Instruction]) -> bytes:
    return bytes(Message.new_with_blockhash(ixs, pk(PAYER), Hash.from_string(BLOCKHASH)))


def sd_transfer_checked(amount: int, decimals: int, program: Pubkey = TOKEN) -> Instruction:
    return Instruction(
        program,
        bytes([12]) + amount.to_bytes(8, "little") + bytes([decimals]),
        [
            AccountMeta(sd_ata(PAYER, MINT, program), is_signer=False, is_writable=True),
            AccountMeta(pk(MINT), is_signer=False, is_writable=False),
            AccountMeta(sd_ata(DEST, MINT, program), is_signer=False, is_writable=True),
            AccountMeta(pk(PAYER), is_signer=True, is_writable=False),
        ],
    )


def sd_create_ata(program: Pubkey = TOKEN) -> Instruction:
    return Instruction(
        ATA,
        bytes([1]),
        [
            AccountMeta(pk(PAYER), is_signer=True, is_writable=True),
            AccountMeta(sd_ata(DEST, MINT, program), is_signer=False, is_writable=True),
            AccountMeta(pk(DEST), is_signer=False, is_writable=False),
            AccountMeta(pk(MINT), is_signer=False, is_writable=False),
            AccountMeta(pk(stx.SYSTEM_PROGRAM), is_signer=False, is_writable=False),
            AccountMeta(program, is_signer=False, is_writable=False),
        ],
    )


def sd_nonce() -> Instruction:
    return advance_nonce_account(
        AdvanceNonceAccountParams(nonce_pubkey=pk(NONCE), authorized_pubkey=pk(PAYER))
    )


def test_associated_token_address_matches_solders() -> None:
    assert stx.associated_token_address(DEST, MINT) == str(sd_ata(DEST, MINT))
    assert stx.associated_token_address(PAYER, MINT) == str(sd_ata(PAYER, MINT))
    assert stx.associated_token_address(DEST, MINT) == str(sd_ata(DEST, MINT, TOKEN))
    # Token-2022: the program is a seed, so the same owner and mint have another account.
    t22 = stx.associated_token_address(DEST, MINT, stx.TOKEN_2022_PROGRAM)
    assert t22 == str(sd_ata(DEST, MINT, TOKEN_2022))
    assert t22 != stx.associated_token_address(DEST, MINT)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 16383, 16384, 65535])
def test_compact_u16_round_trips(n: int) -> None:
    encoded = stx.encode_length(n)
    assert stx._Reader(encoded).length() == n
    assert len(encoded) == (1 if n < 128 else 2 if n < 16384 else 3)


def test_non_minimal_compact_u16_is_refused() -> None:
    with pytest.raises(InvalidTransactionError, match="shortest"):
        stx._Reader(b"\x81\x00").length()


def test_sol_transfer_bytes_equal_solders() -> None:
    ours = stx.build_transfer(payer=PAYER, destination=DEST, amount=1_500_000_000, recent_blockhash=BLOCKHASH)
    theirs = sd_message(
        [sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=1_500_000_000))]
    )
    assert ours == theirs


def test_sol_transfer_with_durable_nonce_equals_solders() -> None:
    ours = stx.build_transfer(
        payer=PAYER, destination=DEST, amount=42, recent_blockhash=BLOCKHASH, nonce_account=NONCE
    )
    theirs = sd_message(
        [sd_nonce(), sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=42))]
    )
    assert ours == theirs
    r = stx.review(ours)
    assert (r.nonce_account, r.destination, r.amount, r.mint) == (NONCE, DEST, 42, None)


@pytest.mark.parametrize("program", [stx.TOKEN_PROGRAM, stx.TOKEN_2022_PROGRAM])
@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize("nonce", [None, NONCE])
def test_token_transfer_bytes_equal_solders(create: bool, nonce: str | None, program: str) -> None:
    prog = pk(program)
    ours = stx.build_transfer(
        payer=PAYER,
        destination=DEST,
        amount=2_500_000,
        recent_blockhash=BLOCKHASH,
        nonce_account=nonce,
        mint=MINT,
        decimals=6,
        create_destination_account=create,
        token_program=program,
    )
    ixs = (
        ([sd_nonce()] if nonce else [])
        + ([sd_create_ata(prog)] if create else [])
        + [sd_transfer_checked(2_500_000, 6, prog)]
    )
    assert ours == sd_message(ixs)
    r = stx.review(ours)
    assert (r.mint, r.decimals, r.amount, r.token_program) == (MINT, 6, 2_500_000, program)
    assert r.destination_token_account == str(sd_ata(DEST, MINT, prog))
    assert r.creates_destination_account is create
    rent = stx.TOKEN_2022_ACCOUNT_RENT if program == stx.TOKEN_2022_PROGRAM else stx.TOKEN_ACCOUNT_RENT
    assert r.fee == 5000 + (rent if create else 0)
    if create:
        assert r.destination == DEST


def test_signature_verifies_in_solders() -> None:
    message = stx.build_transfer(payer=PAYER, destination=DEST, amount=7, recent_blockhash=BLOCKHASH)
    signed, txid = stx.sign_message(message, SEED)
    tx = Transaction.from_bytes(signed)
    tx.verify()  # raises on a bad signature
    assert str(tx.signatures[0]) == txid
    assert bytes(tx.message) == message
    assert stx.verify_transaction(signed, message, PAYER) == txid
    forged = bytearray(signed)
    forged[5] ^= 1
    with pytest.raises(VerificationError):
        stx.verify_transaction(bytes(forged), message, PAYER)
    other = stx.build_transfer(payer=PAYER, destination=DEST, amount=8, recent_blockhash=BLOCKHASH)
    with pytest.raises(VerificationError, match="not the approved"):
        stx.verify_transaction(signed, other, PAYER)
    assert isinstance(Signature.from_string(txid), Signature)


def test_review_refuses_a_token_account_of_the_other_program() -> None:
    """An account created in one token program and a transfer in the other, or a
    transfer between accounts derived for the other program, is not what Tandem builds."""
    t22 = pk(stx.TOKEN_2022_PROGRAM)
    mixed = sd_message([sd_create_ata(TOKEN), sd_transfer_checked(1, 6, t22)])
    with pytest.raises(InvalidTransactionError, match="create token account"):
        stx.review(mixed)
    wrong_accounts = Instruction(
        t22,
        bytes([12]) + (1).to_bytes(8, "little") + bytes([6]),
        [
            AccountMeta(sd_ata(PAYER, MINT), is_signer=False, is_writable=True),
            AccountMeta(pk(MINT), is_signer=False, is_writable=False),
            AccountMeta(sd_ata(DEST, MINT), is_signer=False, is_writable=True),
            AccountMeta(pk(PAYER), is_signer=True, is_writable=False),
        ],
    )
    with pytest.raises(InvalidTransactionError, match="associated token account"):
        stx.review(sd_message([wrong_accounts]))


def test_review_refuses_other_instructions() -> None:
    memo = Instruction(Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"), b"hi", [])
    extra = sd_message(
        [sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=1)), memo]
    )
    with pytest.raises(InvalidTransactionError):
        stx.review(extra)
    # Two transfers, the second to somebody else.
    two = sd_message(
        [
            sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=1)),
            sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(NONCE), lamports=1)),
        ]
    )
    with pytest.raises(InvalidTransactionError):
        stx.review(two)
    # A token transfer out of an account that is not the wallet's own associated account.
    wrong_source = Instruction(
        TOKEN,
        bytes([12]) + (5).to_bytes(8, "little") + bytes([6]),
        [
            AccountMeta(pk(NONCE), is_signer=False, is_writable=True),
            AccountMeta(pk(MINT), is_signer=False, is_writable=False),
            AccountMeta(sd_ata(DEST, MINT), is_signer=False, is_writable=True),
            AccountMeta(pk(PAYER), is_signer=True, is_writable=False),
        ],
    )
    with pytest.raises(InvalidTransactionError, match="associated token account"):
        stx.review(sd_message([wrong_source]))


def test_review_refuses_a_second_signer_and_versioned_messages() -> None:
    cosigned = sd_message(
        [
            sd_transfer(TransferParams(from_pubkey=pk(DEST), to_pubkey=pk(NONCE), lamports=1)),
            sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(NONCE), lamports=1)),
        ]
    )
    with pytest.raises(InvalidTransactionError, match="more than one signer"):
        stx.review(cosigned)
    with pytest.raises(InvalidTransactionError, match="versioned"):
        stx.parse_message(b"\x80" + b"\x00" * 40)
    message = stx.build_transfer(payer=PAYER, destination=DEST, amount=7, recent_blockhash=BLOCKHASH)
    with pytest.raises(InvalidTransactionError, match="follow"):
        stx.parse_message(message + b"\x00")


def test_bad_inputs_are_named() -> None:
    with pytest.raises(InputError, match="blockhash"):
        stx.build_transfer(payer=PAYER, destination=DEST, amount=1, recent_blockhash="abc")
    with pytest.raises(InputError, match="64 bits"):
        stx.build_transfer(payer=PAYER, destination=DEST, amount=1 << 64, recent_blockhash=BLOCKHASH)
    with pytest.raises(InputError, match="decimals"):
        stx.build_transfer(payer=PAYER, destination=DEST, amount=1, recent_blockhash=BLOCKHASH, mint=MINT)


# --- priority fees: the ComputeBudget program's instructions -----------------------------

from solders.compute_budget import ID as SD_COMPUTE_BUDGET  # noqa: E402
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price  # noqa: E402


@pytest.mark.parametrize("nonce", [None, NONCE])
@pytest.mark.parametrize("mint", [None, MINT])
def test_priority_fee_instructions_equal_solders_and_are_counted(nonce: str | None, mint: str | None) -> None:
    ours = stx.build_transfer(
        payer=PAYER,
        destination=DEST,
        amount=7,
        recent_blockhash=BLOCKHASH,
        nonce_account=nonce,
        mint=mint,
        decimals=6 if mint else None,
        create_destination_account=mint is not None,
        compute_unit_limit=50_000,
        compute_unit_price=123_457,
    )
    body = (
        [sd_create_ata(), sd_transfer_checked(7, 6)]
        if mint
        else [sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=7))]
    )
    budget = [set_compute_unit_limit(50_000), set_compute_unit_price(123_457)]
    theirs = sd_message(([sd_nonce()] if nonce else []) + budget + body)  # AdvanceNonce stays first
    assert str(SD_COMPUTE_BUDGET) == stx.COMPUTE_BUDGET_PROGRAM
    assert ours == theirs
    r = stx.review(ours)
    assert (r.compute_unit_limit, r.compute_unit_price, r.nonce_account) == (50_000, 123_457, nonce)
    # 50,000 units at 0.123457 lamports each: 6172.85, rounded up as the runtime does.
    assert r.priority_fee == 6173
    rent = stx.TOKEN_ACCOUNT_RENT if mint else 0
    assert r.fee == stx.LAMPORTS_PER_SIGNATURE + 6173 + rent


_PAY = sd_transfer(TransferParams(from_pubkey=pk(PAYER), to_pubkey=pk(DEST), lamports=7))
_NOT_TANDEMS = {
    "a price without a limit": [set_compute_unit_price(10), _PAY],
    "a limit without a price": [set_compute_unit_limit(1000), _PAY],
    "price before limit": [set_compute_unit_price(10), set_compute_unit_limit(1000), _PAY],
    "twice": [set_compute_unit_limit(1000), set_compute_unit_price(1), set_compute_unit_price(9), _PAY],
    "a limit past the runtime's": [set_compute_unit_limit(1_400_001), set_compute_unit_price(1), _PAY],
    "a zero price": [set_compute_unit_limit(1000), set_compute_unit_price(0), _PAY],
}


@pytest.mark.parametrize("what", sorted(_NOT_TANDEMS))
def test_a_compute_budget_tandem_does_not_build_is_refused(what: str) -> None:
    with pytest.raises(InvalidTransactionError):
        stx.review(sd_message(_NOT_TANDEMS[what]))


def test_a_price_needs_its_limit_when_building() -> None:
    with pytest.raises(InputError, match="together"):
        stx.build_transfer(
            payer=PAYER, destination=DEST, amount=1, recent_blockhash=BLOCKHASH, compute_unit_price=5
        )
