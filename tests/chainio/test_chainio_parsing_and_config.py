"""Strict parsing of node answers, the endpoint configuration, and the layering rule.

The JSON-RPC cases use httpx.MockTransport answering in the JSON-RPC 2.0 response
shape (jsonrpc.org/specification, section 5) with deliberately broken values.
"""

from __future__ import annotations

import ast
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.chainio.mock_nodes import backend_for

from tandem.chainio import ChainConfig, backend_kinds, parse
from tandem.chainio.ethereum import EthereumJsonRpc
from tandem.errors import (
    ChainBackendError,
    ChainBadResponseError,
    ChainConfigError,
    ChainRejectedError,
    ChainUnreachableError,
    Error,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "tandem"
ADDRESS = "0x" + "11" * 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0x0", 0), ("0x1", 1), ("0xde0b6b3a7640000", 10**18), ("0x" + "f" * 64, 2**256 - 1)],
)
def test_hex_quantities_parse_exactly(value: str, expected: int) -> None:
    assert parse.quantity(value, "q") == expected


@pytest.mark.parametrize(
    "value", ["0x", "0x01", "1", "0xg", " 0x1", "0x1 ", 1, 1.0, Decimal("1"), True, None, "0x1" + "0" * 64]
)
def test_anything_else_as_a_quantity_is_a_bad_response(value: Any) -> None:
    with pytest.raises(ChainBadResponseError) as info:
        parse.quantity(value, "eth_getBalance")
    assert info.value.code == "chain_bad_response"
    assert info.value.message.startswith("eth_getBalance: ")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',  # duplicate key
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"not json",
        b"\xff\xfe",
        b"[" * 100 + b"]" * 100,  # nested too deeply
    ],
)
def test_json_that_is_not_strictly_json_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(ChainBadResponseError):
        parse.loads(body, "answer")


def test_numbers_with_a_fraction_are_decimals_never_floats() -> None:
    value = parse.loads(b'{"fee": 68.285, "n": 5}', "answer")
    assert value == {"fee": Decimal("68.285"), "n": 5}
    with pytest.raises(ChainBadResponseError, match="a number with a fraction"):
        parse.integer(value["fee"], "fee")
    assert parse.btc_to_sats(Decimal("20999999.97690000"), "amount") == 2_099_999_997_690_000


def rpc_backend(reply: Any, status: int = 200) -> EthereumJsonRpc:
    """An Ethereum backend whose node answers eth_chainId right, then ``reply`` to all else."""

    def handler(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        if call["method"] == "eth_chainId":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": "0xaa36a7"})
        body = reply(call) if callable(reply) else reply
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    backend = backend_for("ethereum", "sepolia", "jsonrpc+https://rpc.example/v3/KEY", handler)
    assert isinstance(backend, EthereumJsonRpc)
    return backend


@pytest.mark.parametrize(
    "reply",
    [
        lambda c: {"jsonrpc": "2.0", "id": c["id"], "result": 1.5e18},  # a float balance
        lambda c: {"jsonrpc": "2.0", "id": c["id"], "result": 1000},  # a JSON number, not hex
        lambda c: {"jsonrpc": "2.0", "id": c["id"], "result": "1000"},
        lambda c: {"jsonrpc": "2.0", "id": c["id"] + 1, "result": "0x1"},  # another request's answer
        lambda c: {"jsonrpc": "2.0", "id": c["id"]},  # neither result nor error
        lambda c: [{"jsonrpc": "2.0", "id": c["id"], "result": "0x1"}],  # a batch for one call
        b"<html>gateway</html>",
    ],
)
def test_answers_out_of_shape_are_bad_responses(reply: Any) -> None:
    with pytest.raises(ChainBadResponseError):
        rpc_backend(reply).balance(ADDRESS)


def test_a_json_rpc_error_object_is_chain_rejected_with_readable_text() -> None:
    backend = rpc_backend(
        lambda c: {
            "jsonrpc": "2.0",
            "id": c["id"],
            "error": {"code": -32000, "message": "header not found\n\x00"},
        }
    )
    with pytest.raises(ChainRejectedError) as info:
        backend.tip_height()
    assert info.value.message == "eth_blockNumber: node refused (-32000): header not found"
    assert info.value.to_dict()["code"] == "chain_rejected"
    assert "KEY" not in info.value.diagnostics()


def test_http_failures_without_a_json_body_are_unreachable() -> None:
    with pytest.raises(ChainUnreachableError, match=r"https://rpc.example failed \(HTTP 502\)") as info:
        rpc_backend(b"bad gateway", status=502).tip_height()
    assert "/v3/KEY" not in info.value.message


def test_an_oversized_answer_is_cut_off() -> None:
    huge = b'{"jsonrpc": "2.0", "id": 1, "result": "' + b"a" * (parse.MAX_RESPONSE_BYTES + 10) + b'"}'
    with pytest.raises(ChainBadResponseError, match="sent more than"):
        rpc_backend(huge).tip_height()


def test_every_chain_error_is_a_tandem_error_with_a_stable_code() -> None:
    from tandem import errors

    family = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ChainBackendError)]
    codes = {c.code for c in family}
    assert {"chain_unreachable", "chain_timeout", "chain_bad_response", "chain_rejected", "chain_mismatch",
            "chain_not_configured", "chain_config_invalid", "chain_unsupported"} <= codes  # fmt: skip
    assert len(codes) == len(family)
    assert all(issubclass(c, Error) for c in family)


# --- configuration -----------------------------------------------------------------------


def test_configuration_from_the_environment() -> None:
    config = ChainConfig.from_env(
        {
            "TANDEM_CHAIN_ETHEREUM_SEPOLIA": "jsonrpc+http://127.0.0.1:8545",
            "TANDEM_CHAIN_BITCOIN_TESTNET": "bitcoincore+http://u:p@127.0.0.1:18332",
            "TANDEM_CHAIN_BITCOIN_MAINNET": "esplora+https://esplora.example/api",
            "TANDEM_CHAIN_SOLANA_DEVNET": "jsonrpc+https://api.devnet.example",
            "TANDEM_CHAIN_TIMEOUT": "2.5",
            "TANDEM_OTHER": "ignored",
            "TANDEM_CHAIN_SOLANA_MAINNET": "",  # empty: not configured
        }
    )
    assert config.enabled
    assert sorted(config.endpoints) == [
        ("bitcoin", "mainnet"), ("bitcoin", "testnet"), ("ethereum", "sepolia"), ("solana", "devnet"),
    ]  # fmt: skip
    core = config.endpoint("bitcoin", "testnet")
    assert (core.kind, core.timeout, core.display) == ("bitcoincore", 2.5, "http://127.0.0.1:18332")
    assert "u:p" not in repr(config)
    assert backend_kinds("bitcoin") == ("bitcoincore", "esplora", "snapshot")
    assert backend_kinds("ethereum") == ("jsonrpc",)
    assert backend_kinds("solana") == ("jsonrpc",)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("TANDEM_CHAIN_DOGE_MAINNET", "jsonrpc+http://x", "unknown chain"),
        ("TANDEM_CHAIN_ETHEREUM_ROPSTEN", "jsonrpc+http://x", "unknown ethereum network"),
        ("TANDEM_CHAIN_ETHEREUM_SEPOLIA", "esplora+http://x", "no 'esplora' backend for ethereum"),
        ("TANDEM_CHAIN_ETHEREUM_SEPOLIA", "http://127.0.0.1:8545", "must read <kind>"),
        ("TANDEM_CHAIN_ETHEREUM_SEPOLIA", "jsonrpc+ftp://x", "http or https"),
        ("TANDEM_CHAIN_BITCOIN_MAINNET", "snapshot+http://x/utxo.csv", "must be a file URL"),
        ("TANDEM_CHAIN_ETHEREUM", "jsonrpc+http://x", "must be named"),
        ("TANDEM_CHAIN_TIMEOUT", "nan", "must be in"),
        ("TANDEM_CHAIN_TIMEOUT", "soon", "number of seconds"),
    ],
)
def test_a_wrong_configuration_is_refused_with_a_clear_error(key: str, value: str, match: str) -> None:
    with pytest.raises(ChainConfigError, match=match) as info:
        ChainConfig.from_env({key: value})
    assert info.value.code == "chain_config_invalid"


# --- layering -------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_core_never_imports_chain_access() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in sorted((SRC / "core").rglob("*.py"))
        if any(m == "tandem.chainio" or m.startswith("tandem.chainio.") for m in _imports(p))
    ]
    assert offenders == []


def test_chain_access_imports_no_web_database_or_terminal_layer() -> None:
    forbidden = (
        *("fastapi", "starlette", "sqlmodel", "sqlalchemy", "typer", "rich"),
        *("tandem.api", "tandem.store", "tandem.services", "tandem.cli", "tandem.settings"),
    )
    files = sorted((SRC / "chainio").rglob("*.py"))
    assert files
    offenders = {
        str(p.relative_to(SRC)): sorted(
            m for m in _imports(p) if any(m == f or m.startswith(f + ".") for f in forbidden)
        )
        for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


# --- the chain test tools -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({"CI": "true"}, pytest.fail.Exception),
        ({"TANDEM_REQUIRE_CHAIN": "1"}, pytest.fail.Exception),
        ({}, pytest.skip.Exception),
    ],
)
def test_a_missing_chain_tool_fails_in_ci_and_skips_elsewhere(
    env: dict[str, str], outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.chainio import conftest

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TANDEM_REQUIRE_CHAIN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(outcome, match="anvil is not installed"):
        conftest._missing("anvil is not installed")


# --- eth_getLogs paging against a provider that caps ranges -----------------------------------


def capped_logs_node(max_blocks: int, tip: int) -> tuple[EthereumJsonRpc, list[tuple[int, int]]]:
    """A node that refuses eth_getLogs over more than ``max_blocks`` blocks, as providers do
    (Infura: code -32005 "query returned more than 10000 results")."""
    asked: list[tuple[int, int]] = []

    def reply(call: dict[str, Any]) -> dict[str, Any]:
        if call["method"] == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call["id"], "result": hex(tip)}
        query = call["params"][0]
        start, end = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        asked.append((start, end))
        if end - start + 1 > max_blocks:
            error = {"code": -32005, "message": "query returned more than 10000 results"}
            return {"jsonrpc": "2.0", "id": call["id"], "error": error}
        return {"jsonrpc": "2.0", "id": call["id"], "result": []}

    return rpc_backend(reply), asked


def test_a_log_page_the_provider_refuses_is_split_until_it_is_answered() -> None:
    backend, asked = capped_logs_node(max_blocks=3, tip=100)
    assert backend.token_transfers(ADDRESS, ("0x" + "22" * 20,), from_block=90, page_blocks=8) == ()
    answered = sorted((s, e) for s, e in asked if e - s + 1 <= 3)
    covered = [b for s, e in answered for b in range(s, e + 1)]
    assert covered == list(range(90, 101))  # every block once, nothing skipped


def test_a_provider_that_refuses_even_one_block_is_a_rejection() -> None:
    backend, asked = capped_logs_node(max_blocks=0, tip=10)
    with pytest.raises(ChainRejectedError, match="more than 10000 results"):
        backend.token_transfers(ADDRESS, ("0x" + "22" * 20,), from_block=0, page_blocks=4)
    assert len(asked) < 40
