"""Internal ETH transfers from ``trace_block``, in the shape the trace API documents
(OpenEthereum/Erigon/Reth ``trace_block``: one entry per call, ``traceAddress`` its
path under the top call). The anvil tests (tests/books/test_books_anvil.py) run the
same method against a real node; here the answers that node never gives: failed
calls, calls under a failed call, delegatecalls, selfdestruct refunds, and a node
without the method."""

from __future__ import annotations

from typing import Any

import pytest
from tests.chainio.mock_nodes import JsonRpcServer, RpcFault, backend_for

from tandem.chainio.ethereum import EthereumJsonRpc
from tandem.core.chains import ethereum as eth
from tandem.errors import ChainBadResponseError

OURS = eth.to_checksum_address("0x" + "aa" * 20)
OTHER = eth.to_checksum_address("0x" + "bb" * 20)
CONTRACT = eth.to_checksum_address("0x" + "cc" * 20)
TX1, TX2 = "0x" + "11" * 32, "0x" + "22" * 32
SEPOLIA = 11155111


def call(tx: str, path: list[int], to: str, value: int, **extra: Any) -> dict[str, Any]:
    return {
        "action": {"callType": extra.pop("call_type", "call"), "from": CONTRACT, "gas": "0x0",
                   "input": "0x", "to": to, "value": hex(value)},
        "blockHash": "0x" + "99" * 32, "blockNumber": 7, "result": {"gasUsed": "0x0", "output": "0x"},
        "subtraces": 0, "traceAddress": path, "transactionHash": tx, "transactionPosition": 0,
        "type": "call", **extra,
    }  # fmt: skip


def node(traces: Any) -> tuple[EthereumJsonRpc, JsonRpcServer]:
    def answer(params: list[Any]) -> Any:
        if isinstance(traces, RpcFault):
            raise traces
        return traces

    server = JsonRpcServer(methods={"eth_chainId": lambda p: hex(SEPOLIA), "trace_block": answer})
    backend = backend_for("ethereum", "sepolia", "jsonrpc+https://eth.example", server)
    assert isinstance(backend, EthereumJsonRpc)
    return backend, server


def test_internal_transfers_to_us_and_only_those_that_moved_value() -> None:
    suicide = {
        "action": {"address": CONTRACT, "balance": hex(9), "refundAddress": OURS},
        "blockHash": "0x" + "99" * 32, "blockNumber": 7, "result": None, "subtraces": 0,
        "traceAddress": [1], "transactionHash": TX2, "transactionPosition": 1, "type": "suicide",
    }  # fmt: skip
    backend, _ = node(
        [
            call(TX1, [], CONTRACT, 100),  # the transaction itself: seen as a block transfer, not here
            call(TX1, [0], OURS, 40),  # paid to us: trace 1
            call(TX1, [1], OTHER, 60),  # someone else
            call(TX1, [2], OURS, 5, error="Reverted"),  # failed: moved nothing
            call(TX1, [2, 0], OURS, 5),  # under a failed call: moved nothing
            call(TX1, [3], OURS, 7, call_type="delegatecall"),  # no value of its own
            call(TX2, [], CONTRACT, 0),
            call(TX2, [0], OURS, 0),  # no value
            suicide,  # selfdestruct refund to us: trace 2 of TX2
            {"action": {"author": OURS, "rewardType": "block", "value": "0x1"}, "blockHash": "0x" + "99" * 32,
             "blockNumber": 7, "result": None, "subtraces": 0, "traceAddress": [], "type": "reward"},
        ]
    )  # fmt: skip
    got = backend.internal_transfers_in_block(7, (OURS,))
    assert got is not None
    assert [(t.tx_hash, t.to, t.value, t.index) for t in got] == [(TX1, OURS, 40, 1), (TX2, OURS, 9, 2)]


def test_a_node_without_a_trace_api_is_asked_once() -> None:
    backend, server = node(RpcFault(-32601, "Method not found"))
    assert backend.internal_transfers_in_block(7, (OURS,)) is None
    assert backend.internal_transfers_in_block(8, (OURS,)) is None
    assert server.methods_called().count("trace_block") == 1


def test_a_trace_of_another_block_is_refused() -> None:
    backend, _ = node([{**call(TX1, [0], OURS, 1), "blockNumber": 8}])
    with pytest.raises(ChainBadResponseError):
        backend.internal_transfers_in_block(7, (OURS,))
