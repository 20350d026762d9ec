"""Keys, chain access and transaction building for cardano-pay-agent.

Light names are imported eagerly; modules that pull in pycardano are imported where used,
so ``import wallets`` stays cheap.
"""

from __future__ import annotations

from wallets.errors import (
    AddressError,
    AmountError,
    ChainError,
    ChainUnavailableError,
    InsufficientFundsError,
    KeystoreError,
    KeystoreLockedError,
    MnemonicError,
    SubmitError,
    WalletError,
)
from wallets.networks import NETWORKS, NetworkInfo, get_network, network_for_chain
from wallets.types import LOVELACE, OutputRef, ProtocolParams, RequiredOutput, Tip, Utxo

__all__ = [
    "LOVELACE",
    "NETWORKS",
    "AddressError",
    "AmountError",
    "ChainError",
    "ChainUnavailableError",
    "InsufficientFundsError",
    "KeystoreError",
    "KeystoreLockedError",
    "MnemonicError",
    "NetworkInfo",
    "OutputRef",
    "ProtocolParams",
    "RequiredOutput",
    "SubmitError",
    "Tip",
    "Utxo",
    "WalletError",
    "get_network",
    "network_for_chain",
]
