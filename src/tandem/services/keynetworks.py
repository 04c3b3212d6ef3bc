"""Start-up check: every stored key serves one network per chain.

Ceremony validation refuses a definition that lists, say, bitcoin mainnet and testnet for
the same keys; this check finds a key set that was stored that way anyway (by an older
version, an import or a hand-edited database) and names it, so that nothing signs with it.
"""

from __future__ import annotations

from sqlmodel import Session, select

from tandem.core.ceremony_def import network_mixes
from tandem.errors import MixedNetworksError
from tandem.store.models import AddressRow


def require_one_network_per_key(session: Session) -> None:
    rows = session.exec(select(AddressRow)).all()
    keysets = {r.key_id: r.keyset for r in rows}
    mixes = network_mixes((r.key_id, r.chain, r.network) for r in rows)
    if mixes:
        named = sorted({keysets[m.key_id] for m in mixes})
        raise MixedNetworksError(
            f"key set {', '.join(named)} mixes networks ({'; '.join(map(str, mixes))}); "
            "one key serves one network. Signing stays sealed until the key set is retired "
            "or its addresses are corrected",
            details={"keysets": named},
        )
