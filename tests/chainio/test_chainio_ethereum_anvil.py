"""The Ethereum JSON-RPC backend against a real node: anvil on 127.0.0.1.

No mock stands in for the node. The ERC-20 contract is compiled from
``MinimalToken.sol`` by solcjs in the test setup and deployed by anvil's dev account;
every transaction Tandem sends is built and signed by ``tandem.core.chains.ethereum``.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
from tests.chainio.conftest import SEPOLIA_CHAIN_ID, TOKEN_SUPPLY, Anvil
from tests.helpers.servers import free_port

from tandem.chainio import ChainConfig, EthereumBackend
from tandem.chainio.ethereum import TRANSFER_TOPIC, EthereumJsonRpc
from tandem.core.chains import ethereum as eth
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainRejectedError,
    ChainTimeoutError,
    ChainUnreachableError,
    InvalidTransactionError,
)

GWEI = 10**9


def new_key() -> tuple[bytes, str]:
    key = secrets.token_bytes(32)
    return key, eth.address_from_private_key(key)


def new_address() -> str:
    return new_key()[1]


def signed_transfer(
    backend: EthereumJsonRpc,
    key: bytes,
    *,
    to: str,
    value: int = 0,
    data: bytes = b"",
    gas_limit: int = 21_000,
    chain_id: int = SEPOLIA_CHAIN_ID,
) -> tuple[bytes, str]:
    """A type-2 transaction built and signed by Tandem's own core, with the node's fees."""
    fees = backend.suggest_fees()
    unsigned = eth.build_eip1559(
        chain_id=chain_id,
        nonce=backend.nonce(eth.address_from_private_key(key)),
        max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        max_fee_per_gas=fees.max_fee_per_gas,
        gas_limit=gas_limit,
        to=to,
        value=value,
        data=data,
    )
    return eth.sign_eip1559(unsigned, key)


def fund_tokens(anvil: Anvil, token: str, to: str, amount: int) -> dict[str, object]:
    return anvil.send_from_dev(token, eth.erc20_transfer_calldata(to, amount))


def test_backend_is_chosen_by_name_and_implements_the_ethereum_interface(backend: EthereumJsonRpc) -> None:
    assert isinstance(backend, EthereumBackend)
    assert backend.chain_id() == SEPOLIA_CHAIN_ID


def test_a_node_of_another_chain_is_refused_before_any_answer_is_used(anvil: Anvil) -> None:
    config = ChainConfig.from_env({"TANDEM_CHAIN_ETHEREUM_MAINNET": f"jsonrpc+{anvil.url}"})
    wrong = config.backend("ethereum", "mainnet")
    with pytest.raises(ChainMismatchError, match="serves chain id 11155111, not mainnet") as info:
        wrong.balance(new_address())
    assert info.value.code == "chain_mismatch"
    wrong.close()


def test_balance_is_read_in_wei_at_the_block_it_names(anvil: Anvil, backend: EthereumJsonRpc) -> None:
    address = new_address()
    wei = 3 * 10**18 + 7  # beyond 2^53: an int, never a float
    anvil.set_balance(address, wei)
    balance = backend.balance(address)
    assert balance.amount == wei
    assert isinstance(balance.amount, int)
    assert balance.block_height == anvil.block_number()
    assert balance.address == address
    assert backend.balance(new_address()).amount == 0


def test_token_balance_and_transfer_logs_to_our_addresses_over_paged_ranges(
    anvil: Anvil, backend: EthereumJsonRpc, token: str
) -> None:
    ours, other = new_address(), new_address()
    start = anvil.block_number()
    receipts = [fund_tokens(anvil, token, ours, amount) for amount in (5, 70, 900)]
    fund_tokens(anvil, token, other, 11)  # not to our address: must not be listed
    anvil.mine(3)  # empty blocks in the range as well

    assert backend.token_balance(token, ours).amount == 975
    assert backend.token_balance(token, anvil.dev_account).amount == TOKEN_SUPPLY - 975 - 11

    for page in (1, 2, 2_000):
        transfers = backend.token_transfers(token, (ours,), from_block=start, page_blocks=page)
        assert [t.amount for t in transfers] == [5, 70, 900]
        assert {t.recipient for t in transfers} == {ours}
        assert {t.sender for t in transfers} == {anvil.dev_account}
        assert [t.tx_hash for t in transfers] == [r["transactionHash"] for r in receipts]
        assert [t.block_height for t in transfers] == [int(str(r["blockNumber"]), 16) for r in receipts]
    both = backend.token_transfers(token, (ours, other), from_block=start)
    assert sorted(t.amount for t in both) == [5, 11, 70, 900]
    assert TRANSFER_TOPIC == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def test_token_balance_of_a_non_contract_is_a_bad_response(backend: EthereumJsonRpc) -> None:
    with pytest.raises(ChainBadResponseError, match="not a uint256") as info:
        backend.token_balance(new_address(), new_address())
    assert info.value.code == "chain_bad_response"


def test_fee_suggestion_follows_the_next_base_fee(anvil: Anvil, backend: EthereumJsonRpc) -> None:
    fees = backend.suggest_fees()
    latest = anvil.rpc("eth_getBlockByNumber", ["latest", False])
    assert fees.block_height == int(latest["number"], 16)
    assert fees.base_fee_per_gas > 0
    assert fees.max_priority_fee_per_gas >= 0
    assert fees.max_fee_per_gas == 2 * fees.base_fee_per_gas + fees.max_priority_fee_per_gas
    assert fees.max_priority_fee_per_gas == int(anvil.rpc("eth_maxPriorityFeePerGas"), 16)


def test_broadcast_of_a_tandem_signed_eip1559_transfer_confirms_and_counts_confirmations(
    anvil: Anvil, backend: EthereumJsonRpc
) -> None:
    key, sender = new_key()
    recipient = new_address()
    anvil.set_balance(sender, 10**18)
    assert backend.nonce(sender) == 0

    raw, tx_hash = signed_transfer(backend, key, to=recipient, value=123_456_789)
    assert backend.broadcast(raw) == tx_hash
    anvil.mined(tx_hash)

    status = backend.transaction_status(tx_hash)
    assert (status.state, status.confirmations) == ("confirmed", 1)
    assert status.block_height == anvil.block_number()
    assert status.fee is not None
    assert status.fee > 0
    anvil.mine(5)
    assert backend.transaction_status(tx_hash).confirmations == 6
    anvil.rpc("evm_mine")
    assert backend.transaction_status(tx_hash).confirmations == 7

    assert backend.balance(recipient).amount == 123_456_789
    assert backend.balance(sender).amount == 10**18 - 123_456_789 - status.fee
    assert backend.nonce(sender) == 1
    seen = backend.transaction(tx_hash)
    assert seen is not None
    assert (seen.sender, seen.to, seen.nonce, seen.value) == (sender, recipient, 0, 123_456_789)
    assert seen.block_height == status.block_height


def test_pending_nonce_and_pending_state_before_the_block_is_mined(
    anvil: Anvil, backend: EthereumJsonRpc
) -> None:
    key, sender = new_key()
    anvil.set_balance(sender, 10**18)
    anvil.rpc("evm_setAutomine", [False])
    try:
        raw, tx_hash = signed_transfer(backend, key, to=new_address(), value=1)
        backend.broadcast(raw)
        assert backend.nonce(sender) == 1  # counts the pending transaction
        assert backend.transaction_status(tx_hash).state == "pending"
        assert backend.transaction_status("0x" + "ab" * 32).state == "unknown"
        anvil.rpc("evm_mine")
        anvil.mined(tx_hash)
    finally:
        anvil.rpc("evm_setAutomine", [True])
    assert backend.transaction_status(tx_hash).state == "confirmed"


def test_tandem_signed_erc20_transfer_moves_tokens_and_is_logged(
    anvil: Anvil, backend: EthereumJsonRpc, token: str
) -> None:
    key, holder = new_key()
    recipient = new_address()
    anvil.set_balance(holder, 10**18)
    fund_tokens(anvil, token, holder, 1_000)
    start = anvil.block_number()

    calldata = eth.erc20_transfer_calldata(recipient, 250)
    raw, tx_hash = signed_transfer(backend, key, to=token, data=calldata, gas_limit=100_000)
    review = eth.review(eth.decode_transaction(raw).unsigned_bytes(), allowed_tokens=[token])
    assert (review["kind"], review["recipient"], review["token_amount"]) == (
        "erc20-transfer",
        recipient,
        "250",
    )
    assert backend.broadcast(raw) == tx_hash
    anvil.mined(tx_hash)
    assert backend.transaction_status(tx_hash).state == "confirmed"

    assert backend.token_balance(token, holder).amount == 750
    assert backend.token_balance(token, recipient).amount == 250
    [transfer] = backend.token_transfers(token, (recipient,), from_block=start)
    assert (transfer.sender, transfer.amount, transfer.tx_hash) == (holder, 250, tx_hash)


def test_a_reverted_transfer_is_mined_and_reads_failed(
    anvil: Anvil, backend: EthereumJsonRpc, token: str
) -> None:
    key, holder = new_key()
    anvil.set_balance(holder, 10**18)  # ether for gas, but no tokens at all
    calldata = eth.erc20_transfer_calldata(new_address(), 5)
    raw, tx_hash = signed_transfer(backend, key, to=token, data=calldata, gas_limit=100_000)
    backend.broadcast(raw)
    anvil.mined(tx_hash)
    status = backend.transaction_status(tx_hash)
    assert status.state == "failed"
    assert status.confirmations == 1


def test_a_json_rpc_error_object_is_chain_rejected_with_the_node_words(
    anvil: Anvil, backend: EthereumJsonRpc
) -> None:
    key, sender = new_key()
    anvil.set_balance(sender, 10**18)
    raw, _ = signed_transfer(backend, key, to=new_address(), value=1)
    backend.broadcast(raw)
    with pytest.raises(ChainRejectedError, match="eth_sendRawTransaction: node refused") as info:
        backend.broadcast(raw)  # the same nonce again
    assert info.value.code == "chain_rejected"
    assert "Traceback" not in info.value.message
    assert backend.nonce(sender) == 1

    poor_key, poor = new_key()  # no ether at all
    raw, _ = signed_transfer(backend, poor_key, to=new_address(), value=1)
    with pytest.raises(ChainRejectedError):
        backend.broadcast(raw)
    assert backend.nonce(poor) == 0


def test_a_transaction_for_another_chain_is_refused_before_it_is_sent(
    anvil: Anvil, backend: EthereumJsonRpc
) -> None:
    key, sender = new_key()
    anvil.set_balance(sender, 10**18)
    raw, _ = signed_transfer(backend, key, to=new_address(), value=1, chain_id=eth.CHAIN_IDS["mainnet"])
    with pytest.raises(InvalidTransactionError, match="chain id 1, this backend serves sepolia"):
        backend.broadcast(raw)
    unsigned = eth.build_eip1559(
        chain_id=SEPOLIA_CHAIN_ID,
        nonce=0,
        max_priority_fee_per_gas=1,
        max_fee_per_gas=GWEI,
        gas_limit=21_000,
        to=new_address(),
        value=1,
    )
    with pytest.raises(InvalidTransactionError, match="only a signed transaction"):
        backend.broadcast(unsigned)
    assert backend.nonce(sender) == 0


def test_an_unreachable_node_is_chain_unreachable_without_the_url_credentials() -> None:
    port = free_port()  # nothing listens here
    config = ChainConfig.from_env(
        {"TANDEM_CHAIN_ETHEREUM_SEPOLIA": f"jsonrpc+http://alice:hunter2@127.0.0.1:{port}/v3/apikey123"}
    )
    backend = config.backend("ethereum", "sepolia")
    with pytest.raises(ChainUnreachableError, match=f"cannot reach http://127.0.0.1:{port}") as info:
        backend.tip_height()
    assert info.value.code == "chain_unreachable"
    for secret in ("alice", "hunter2", "apikey123"):
        assert secret not in info.value.diagnostics()
        assert secret not in repr(config)
    backend.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A socket that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def test_a_node_that_never_answers_is_a_chain_timeout(silent_server: int) -> None:
    config = ChainConfig.from_env(
        {
            "TANDEM_CHAIN_ETHEREUM_SEPOLIA": f"jsonrpc+http://127.0.0.1:{silent_server}",
            "TANDEM_CHAIN_TIMEOUT": "0.3",
        }
    )
    backend = config.backend("ethereum", "sepolia")
    with pytest.raises(ChainTimeoutError, match="did not answer in time") as info:
        backend.nonce(new_address())
    assert info.value.code == "chain_timeout"
    assert isinstance(info.value, ChainUnreachableError)
    backend.close()
