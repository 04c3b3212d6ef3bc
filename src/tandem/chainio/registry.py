"""The one registry of chain backends: which kind of endpoint serves which chain.

Read top to bottom, this table is every backend Tandem can talk to; the backend modules
register nothing themselves. ``kind`` is the prefix of an endpoint in the configuration
(``esplora+https://...``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

from tandem.chainio.base import ChainBackend
from tandem.chainio.bitcoin import BitcoinCoreBackend, EsploraBackend
from tandem.chainio.ethereum import EthereumJsonRpc
from tandem.chainio.snapshot import SnapshotBackend
from tandem.chainio.solana import SolanaJsonRpc
from tandem.errors import ChainConfigError

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.endpoint import ChainEndpoint

BackendFactory = Callable[["ChainEndpoint", "httpx.BaseTransport | None"], ChainBackend]

BACKENDS: MappingProxyType[tuple[str, str], BackendFactory] = MappingProxyType(
    {
        ("bitcoin", "esplora"): EsploraBackend,
        ("bitcoin", "bitcoincore"): BitcoinCoreBackend,
        ("bitcoin", "snapshot"): SnapshotBackend,
        ("ethereum", "jsonrpc"): EthereumJsonRpc,
        ("solana", "jsonrpc"): SolanaJsonRpc,
    }
)


def backend_kinds(chain: str) -> tuple[str, ...]:
    return tuple(sorted(kind for c, kind in BACKENDS if c == chain))


def open_backend(endpoint: ChainEndpoint, *, transport: httpx.BaseTransport | None = None) -> ChainBackend:
    """The backend an endpoint names; ``transport`` is for tests (httpx.MockTransport)."""
    try:
        factory = BACKENDS[(endpoint.chain, endpoint.kind)]
    except KeyError:
        known = ", ".join(backend_kinds(endpoint.chain)) or "none"
        raise ChainConfigError(f"no {endpoint.kind!r} backend for {endpoint.chain}; known: {known}") from None
    return factory(endpoint, transport)
