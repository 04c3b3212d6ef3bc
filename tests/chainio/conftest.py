"""Fixtures for the chain access tests: a real anvil node and a real ERC-20 contract.

``anvil`` starts the node on 127.0.0.1 on a free port (killed at the end) with the
Sepolia chain id, since Tandem's own transaction builder signs only for the networks
it knows. ``token_bytecode`` compiles ``MinimalToken.sol`` from source with solcjs.
Both tools come from the npm registry through ``scripts/_tools.sh`` (TANDEM_ANVIL,
TANDEM_SOLCJS). When one is missing the tests skip with the reason, except under
``CI=true`` or ``TANDEM_REQUIRE_CHAIN=1``, where the fixture fails loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers.servers import free_port

from tandem.chainio import ChainConfig
from tandem.chainio.ethereum import EthereumJsonRpc
from tandem.core.chains import ethereum as eth

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOOLS = Path(os.environ.get("TANDEM_TOOLS_DIR") or ROOT / ".tools") / "node_modules"
SEPOLIA_CHAIN_ID = eth.CHAIN_IDS["sepolia"]
TOKEN_SOURCE = HERE / "MinimalToken.sol"


def chain_tools_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("TANDEM_REQUIRE_CHAIN") == "1"


def _missing(what: str) -> None:
    reason = f"{what}; run scripts/test (it installs the chain test tools into .tools/ with npm)"
    if chain_tools_required():
        pytest.fail(f"chain tests are required here (CI or TANDEM_REQUIRE_CHAIN=1): {reason}")
    pytest.skip(reason)


def _anvil_path() -> str | None:
    candidates = [
        os.environ.get("TANDEM_ANVIL", ""),
        str(TOOLS / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"),
        shutil.which("anvil") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _solcjs_path() -> str | None:
    candidates = [os.environ.get("TANDEM_SOLCJS", ""), str(TOOLS / "solc" / "solc.js")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def raw_rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    """A JSON-RPC call made by the test itself (anvil_* cheats, the dev accounts)."""
    answer = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=30
    ).json()
    if "error" in answer:
        raise AssertionError(f"{method}: {answer['error']}")
    return answer["result"]


@dataclass(frozen=True)
class Anvil:
    url: str
    dev_account: str  # unlocked by anvil: deploys the test token

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return raw_rpc(self.url, method, params)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def send_from_dev(self, to: str | None, data: bytes = b"", value: int = 0) -> dict[str, Any]:
        tx: dict[str, Any] = {"from": self.dev_account, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            tx["to"] = to
        tx_hash = self.rpc("eth_sendTransaction", [tx])
        receipt = self.mined(tx_hash)
        assert receipt["status"] == "0x1", receipt
        return receipt

    def mined(self, tx_hash: str) -> dict[str, Any]:
        """The receipt of ``tx_hash`` once the node has mined it. Anvil mines each
        transaction at once, but on a loaded machine the receipt can lag the answer."""
        deadline = time.monotonic() + 10
        while (receipt := self.rpc("eth_getTransactionReceipt", [tx_hash])) is None:
            assert time.monotonic() < deadline, f"no receipt for {tx_hash}"
            time.sleep(0.02)
        return dict(receipt)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    binary = _anvil_path()
    if binary is None:
        _missing("anvil is not installed (npm package @foundry-rs/anvil-linux-amd64)")
        raise AssertionError("unreachable")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: a pipe nobody reads can fill up and stall the node.
    log_path = tmp_path_factory.mktemp("anvil") / "anvil.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(SEPOLIA_CHAIN_ID),
            "--accounts",
            "2",
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                err = log_path.read_text(encoding="utf-8", errors="replace")
                pytest.fail(f"anvil exited with {process.returncode}: {err[:500]}")
            try:
                accounts = raw_rpc(url, "eth_accounts")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("anvil did not start listening within 30 s")
                time.sleep(0.1)
        yield Anvil(url=url, dev_account=eth.to_checksum_address(accounts[0]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def token_bytecode() -> bytes:
    """MinimalToken.sol compiled from source by solcjs (standard JSON in, bytecode out)."""
    solcjs = _solcjs_path()
    node = shutil.which("node")
    if solcjs is None or node is None:
        _missing("solcjs (npm package solc) or node is not installed")
        raise AssertionError("unreachable")
    request = {
        "language": "Solidity",
        "sources": {"MinimalToken.sol": {"content": TOKEN_SOURCE.read_text(encoding="utf-8")}},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": "cancun",
            "outputSelection": {"*": {"MinimalToken": ["evm.bytecode.object"]}},
        },
    }
    done = subprocess.run(
        [node, solcjs, "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # solcjs prints a note line before the JSON on some versions.
    start = done.stdout.find("{")
    assert done.returncode == 0, done.stderr[:500]
    assert start >= 0, done.stdout[:500]
    output = json.loads(done.stdout[start:])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    assert not errors, errors
    bytecode = output["contracts"]["MinimalToken.sol"]["MinimalToken"]["evm"]["bytecode"]["object"]
    assert bytecode, "solcjs produced no bytecode"
    return bytes.fromhex(bytecode)


TOKEN_SUPPLY = 1_000_000 * 10**6


@pytest.fixture
def token(anvil: Anvil, token_bytecode: bytes) -> str:
    """A freshly deployed MinimalToken; the dev account holds its whole supply."""
    constructor_arg = TOKEN_SUPPLY.to_bytes(32, "big")
    receipt = anvil.send_from_dev(None, token_bytecode + constructor_arg)
    return eth.to_checksum_address(receipt["contractAddress"])


@pytest.fixture
def backend(anvil: Anvil) -> Iterator[EthereumJsonRpc]:
    config = ChainConfig.from_env({"TANDEM_CHAIN_ETHEREUM_SEPOLIA": f"jsonrpc+{anvil.url}"})
    opened = config.backend("ethereum", "sepolia")
    assert isinstance(opened, EthereumJsonRpc)
    yield opened
    opened.close()
