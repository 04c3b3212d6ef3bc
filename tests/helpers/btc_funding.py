"""Test shortcut for Bitcoin inputs: a funding transaction paying the wallet, as a node
or block explorer would show it, so that intents carry the previous transactions that
prove each input's amount and script (tandem never takes an amount on anyone's word)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tandem.core.chains import bitcoin as btc


def funding_tx(
    address: str, amounts: Sequence[int], *, network: str = "testnet", witness: bool = False
) -> btc.Transaction:
    """A transaction (from a random outpoint) with one output of each amount to ``address``.

    With ``witness`` it carries a witness stack, as most real funding transactions do; its
    txid is the same either way."""
    script = btc.address_to_script(address, network)
    source = btc.TxInput(os.urandom(32).hex(), 0)
    stacks = ((b"\x30" * 71 + b"\x01", b"\x02" * 33),) if witness else ()
    return btc.Transaction(2, (source,), tuple(btc.TxOutput(a, script) for a in amounts), 0, stacks)


def utxo(tx: btc.Transaction, vout: int) -> dict[str, Any]:
    """An intent's entry for output ``vout`` of ``tx``."""
    return {"txid": tx.txid, "vout": vout, "prev_tx": tx.serialize(include_witness=False).hex()}


def utxos_paying(address: str, amounts: Sequence[int], *, network: str = "testnet") -> list[dict[str, Any]]:
    """Intent entries for fresh outputs of the given amounts, all paid to ``address``."""
    tx = funding_tx(address, amounts, network=network)
    return [utxo(tx, i) for i in range(len(amounts))]
