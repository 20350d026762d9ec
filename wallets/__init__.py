"""Keys, chain access and transaction building for cardano-pay-agent.

Light names are imported eagerly; modules that pull in pycardano are imported where used,
so ``import wallets`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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

_LAZY = {
    "Keystore": "wallets.keystore",
    "WalletInfo": "wallets.keystore",
    "UnlockedWallet": "wallets.hd",
    "Chain": "wallets.chain",
    "OgmiosChain": "wallets.ogmios",
    "BlockfrostChain": "wallets.blockfrost",
    "PaymentSender": "wallets.sender",
    "SignedPayment": "wallets.payment",
    "build_payment": "wallets.payment",
    "plan_payment": "wallets.payment",
    "sign_payment": "wallets.payment",
    "min_fee": "wallets.payment",
    "min_utxo_lovelace": "wallets.payment",
    "MemoryReservations": "wallets.reservations",
}

__all__ = [
    "BlockfrostChain",
    "Chain",
    "Keystore",
    "MemoryReservations",
    "OgmiosChain",
    "PaymentSender",
    "SignedPayment",
    "UnlockedWallet",
    "WalletInfo",
    "build_payment",
    "min_fee",
    "min_utxo_lovelace",
    "plan_payment",
    "sign_payment",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wallets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
