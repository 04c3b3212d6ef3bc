"""Chain support: one implementation per chain behind :class:`base.Chain`, chosen by registry."""

from tandem.core.chains.base import Chain, MessageProof, get_chain, register_chain

__all__ = ["Chain", "MessageProof", "get_chain", "register_chain"]
