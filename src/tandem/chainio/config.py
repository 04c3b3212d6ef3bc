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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from tandem.chainio.transport import DEFAULT_TIMEOUT, redact_url
from tandem.errors import ChainConfigError, ChainNotConfiguredError, InputError

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.base import ChainBackend

ENV_PREFIX = "TANDEM_CHAIN_"
TIMEOUT_ENV = "TANDEM_CHAIN_TIMEOUT"
_KIND = re.compile(r"[a-z][a-z0-9-]*")
_MAX_TIMEOUT = 300.0


@dataclass(frozen=True)
class ChainEndpoint:
    chain: str
    network: str
    kind: str  # registry name of the backend: jsonrpc, esplora, bitcoincore, snapshot
    url: str = field(repr=False)  # may hold credentials: never printed
    timeout: float = DEFAULT_TIMEOUT

    @property
    def display(self) -> str:
        """Where the endpoint points, without credentials, path or query."""
        if self.url.startswith("file:"):
            return "file:(snapshot)"
        return redact_url(self.url)

    def __repr__(self) -> str:
        return (
            f"ChainEndpoint(chain={self.chain!r}, network={self.network!r}, "
            f"kind={self.kind!r}, url={self.display!r})"
        )

    @classmethod
    def parse(cls, chain: str, network: str, spec: str, *, timeout: float = DEFAULT_TIMEOUT) -> ChainEndpoint:
        from tandem.chainio.base import backend_kinds
        from tandem.core.chains import get_chain

        try:
            known_networks = get_chain(chain).networks
        except InputError:
            raise ChainConfigError(f"chain endpoint for unknown chain {chain!r}") from None
        if network not in known_networks:
            raise ChainConfigError(
                f"unknown {chain} network {network!r}; known: {', '.join(sorted(known_networks))}"
            )
        kind, plus, url = spec.strip().partition("+")
        if not plus or not _KIND.fullmatch(kind) or not url:
            raise ChainConfigError(
                f"endpoint for {chain}.{network} must read <kind>+<url>, e.g. jsonrpc+http://127.0.0.1:8545"
            )
        kinds = backend_kinds(chain)
        if kind not in kinds:
            raise ChainConfigError(f"no {kind!r} backend for {chain}; known: {', '.join(kinds)}")
        scheme = url.split(":", 1)[0].lower()
        allowed = ("file",) if kind == "snapshot" else ("http", "https")
        if scheme not in allowed:
            raise ChainConfigError(
                f"a {kind} endpoint for {chain}.{network} must be a {' or '.join(allowed)} URL"
            )
        return cls(chain=chain, network=network, kind=kind, url=url, timeout=timeout)


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
            endpoints[(chain, network)] = ChainEndpoint.parse(chain, network, spec, timeout=timeout)
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
        from tandem.chainio.base import open_backend

        return open_backend(self.endpoint(chain, network), transport=transport)
