"""The one registry of chains, built in one place from the chain modules.

Each chain module defines its :class:`~tandem.core.chains.base.Chain`, with its
withdrawal transactions as ``chain.tx``, and nothing registers itself at import time:
the set of chains Tandem supports (and builds withdrawals on) is this table, read top
to bottom.
"""

from __future__ import annotations

from types import MappingProxyType

from tandem.core.chains.base import Chain
from tandem.core.chains.bitcoin import BITCOIN
from tandem.core.chains.ethereum import ETHEREUM
from tandem.core.chains.solana import SOLANA
from tandem.errors import InputError

CHAINS: MappingProxyType[str, Chain] = MappingProxyType({c.name: c for c in (BITCOIN, ETHEREUM, SOLANA)})
NATIVE_ASSET: MappingProxyType[str, str] = MappingProxyType({c.name: c.native_asset for c in CHAINS.values()})


def get_chain(name: str) -> Chain:
    try:
        return CHAINS[name]
    except KeyError:
        raise InputError(f"unknown chain {name!r}; known: {', '.join(sorted(CHAINS))}") from None
