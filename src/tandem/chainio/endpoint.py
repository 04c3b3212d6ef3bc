"""One chain endpoint: which backend kind answers for a chain and network, and where."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tandem.chainio.transport import DEFAULT_TIMEOUT, redact_url
from tandem.core.chains import get_chain
from tandem.errors import ChainConfigError, InputError

_KIND = re.compile(r"[a-z][a-z0-9-]*")


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
    def parse(
        cls, chain: str, network: str, spec: str, *, kinds: tuple[str, ...], timeout: float = DEFAULT_TIMEOUT
    ) -> ChainEndpoint:
        """``kinds``: the backend kinds that serve ``chain`` (``registry.backend_kinds``)."""
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
        if kind not in kinds:
            raise ChainConfigError(f"no {kind!r} backend for {chain}; known: {', '.join(kinds)}")
        scheme = url.split(":", 1)[0].lower()
        allowed = ("file",) if kind == "snapshot" else ("http", "https")
        if scheme not in allowed:
            raise ChainConfigError(
                f"a {kind} endpoint for {chain}.{network} must be a {' or '.join(allowed)} URL"
            )
        return cls(chain=chain, network=network, kind=kind, url=url, timeout=timeout)
