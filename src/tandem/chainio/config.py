"""Which node (if any) answers for each chain and network. Off by default.

An endpoint is written ``<kind>+<url>``, one per chain and network, in the environment::

    TANDEM_CHAIN_ETHEREUM_SEPOLIA=jsonrpc+http://127.0.0.1:8545
    TANDEM_CHAIN_BITCOIN_MAINNET=esplora+https://esplora.example/api
    TANDEM_CHAIN_BITCOIN_TESTNET=bitcoincore+http://user:password@127.0.0.1:18332
    TANDEM_CHAIN_BITCOIN_MAINNET=snapshot+file:///var/lib/tandem/cold-utxos.csv
    TANDEM_CHAIN_SOLANA_DEVNET=jsonrpc+http://127.0.0.1:8899
    TANDEM_CHAIN_TIMEOUT=10            (seconds, for every endpoint)

or as the same mapping without the prefix (``{"ethereum.sepolia": "jsonrpc+http://..."}``).
Nothing configured means no chain access at all: an offline or air-gapped deployment
works as before, and asking for a backend raises :class:`ChainNotConfiguredError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from tandem.chainio.endpoint import ChainEndpoint
from tandem.chainio.registry import backend_kinds, open_backend
from tandem.chainio.transport import DEFAULT_TIMEOUT
from tandem.errors import ChainConfigError, ChainNotConfiguredError

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.base import ChainBackend

ENV_PREFIX = "TANDEM_CHAIN_"
TIMEOUT_ENV = "TANDEM_CHAIN_TIMEOUT"
_MAX_TIMEOUT = 300.0


def _timeout(text: str | None) -> float:
    if text is None or not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ChainConfigError(f"{TIMEOUT_ENV} must be a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= _MAX_TIMEOUT:
        raise ChainConfigError(f"{TIMEOUT_ENV} must be in (0, {_MAX_TIMEOUT:g}] seconds")
    return value


@dataclass(frozen=True)
class ChainConfig:
    """Endpoints by (chain, network). Empty (the default) means chain access is off."""

    endpoints: Mapping[tuple[str, str], ChainEndpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", MappingProxyType(dict(self.endpoints)))

    @property
    def enabled(self) -> bool:
        return bool(self.endpoints)

    @classmethod
    def from_mapping(cls, entries: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT) -> ChainConfig:
        """From ``{"<chain>.<network>": "<kind>+<url>"}``."""
        endpoints: dict[tuple[str, str], ChainEndpoint] = {}
        for name, spec in entries.items():
            chain, dot, network = name.strip().lower().partition(".")
            if not dot:
                raise ChainConfigError(f"chain endpoint name {name!r} must read <chain>.<network>")
            endpoints[(chain, network)] = ChainEndpoint.parse(
                chain, network, spec, kinds=backend_kinds(chain), timeout=timeout
            )
        return cls(endpoints)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ChainConfig:
        """From ``TANDEM_CHAIN_<CHAIN>_<NETWORK>`` variables (pass ``os.environ``)."""
        timeout = _timeout(environ.get(TIMEOUT_ENV))
        entries: dict[str, str] = {}
        for key, value in environ.items():
            if not key.startswith(ENV_PREFIX) or key == TIMEOUT_ENV or not value.strip():
                continue
            chain, sep, network = key[len(ENV_PREFIX) :].lower().partition("_")
            if not sep or not chain or not network:
                raise ChainConfigError(f"{key} must be named {ENV_PREFIX}<CHAIN>_<NETWORK>")
            entries[f"{chain}.{network}"] = value
        return cls.from_mapping(entries, timeout=timeout)

    def endpoint(self, chain: str, network: str) -> ChainEndpoint:
        try:
            return self.endpoints[(chain, network)]
        except KeyError:
            raise ChainNotConfiguredError(
                f"no chain backend is configured for {chain}.{network} "
                f"(set {ENV_PREFIX}{chain.upper()}_{network.upper()}=<kind>+<url>)"
            ) from None

    def backend(
        self, chain: str, network: str, *, transport: httpx.BaseTransport | None = None
    ) -> ChainBackend:
        return open_backend(self.endpoint(chain, network), transport=transport)
