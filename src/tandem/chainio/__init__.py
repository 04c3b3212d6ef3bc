"""Chain access: balances, UTXOs, fees, nonces, broadcast and confirmations.

An adapter around the pure core (which never imports it). One interface per chain in
:mod:`tandem.chainio.base`, one implementation per backend (Ethereum JSON-RPC, Esplora,
Bitcoin Core RPC, offline UTXO snapshots, Solana JSON-RPC), chosen from a registry by
the name in the configuration (:mod:`tandem.chainio.config`). Nothing is configured
by default: offline and air-gapped deployments need no node.
"""

from tandem.chainio.base import (
    Balance,
    BitcoinBackend,
    BitcoinFeeRate,
    Blockhash,
    ChainBackend,
    DurableNonce,
    EthereumBackend,
    EthereumFees,
    EthereumTransaction,
    Mint,
    SignatureInfo,
    SolanaBackend,
    SolanaTransfer,
    TokenBalance,
    TokenTransfer,
    TxStatus,
    Utxo,
)
from tandem.chainio.config import ChainConfig
from tandem.chainio.endpoint import ChainEndpoint
from tandem.chainio.registry import BACKENDS, backend_kinds, open_backend

__all__ = [
    "BACKENDS",
    "Balance",
    "BitcoinBackend",
    "BitcoinFeeRate",
    "Blockhash",
    "ChainBackend",
    "ChainConfig",
    "ChainEndpoint",
    "DurableNonce",
    "EthereumBackend",
    "EthereumFees",
    "EthereumTransaction",
    "Mint",
    "SignatureInfo",
    "SolanaBackend",
    "SolanaTransfer",
    "TokenBalance",
    "TokenTransfer",
    "TxStatus",
    "Utxo",
    "backend_kinds",
    "open_backend",
]
