"""Chain support: one implementation per chain behind :class:`base.Chain`, chosen by registry."""

from tandem.core.chains.base import Chain, MessageProof
from tandem.core.chains.registry import CHAINS, NATIVE_ASSET, get_chain

__all__ = ["CHAINS", "NATIVE_ASSET", "Chain", "MessageProof", "get_chain"]
