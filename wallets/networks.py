"""The networks the agent knows, by the names used in config, CLI and invoice chain labels."""

from __future__ import annotations

from dataclasses import dataclass

from wallets.errors import WalletError


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A Cardano network: its name, its invoice chain label, and its address network id."""

    name: str
    testnet: bool
    protocol_magic: int

    @property
    def chain_label(self) -> str:
        """The x402 invoice ``chain`` value for this network, e.g. ``cardano-preprod``."""
        return f"cardano-{self.name}"

    @property
    def network_id(self) -> int:
        """The address header network id: 1 for mainnet, 0 for every test network."""
        return 0 if self.testnet else 1

    @property
    def address_prefix(self) -> str:
        """The bech32 human-readable prefix of payment addresses on this network."""
        return "addr_test" if self.testnet else "addr"


NETWORKS: dict[str, NetworkInfo] = {
    "mainnet": NetworkInfo("mainnet", testnet=False, protocol_magic=764824073),
    "preprod": NetworkInfo("preprod", testnet=True, protocol_magic=1),
    "preview": NetworkInfo("preview", testnet=True, protocol_magic=2),
    # The sandbox: testnet addresses, mainnet protocol parameters.
    "devnet": NetworkInfo("devnet", testnet=True, protocol_magic=42),
}


class UnknownNetworkError(WalletError):
    """A network name or chain label that the agent does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
        self.name = name


def get_network(name: str) -> NetworkInfo:
    """Return the network called ``name`` (``mainnet``, ``preprod``, ``preview``, ``devnet``)."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise UnknownNetworkError(name) from None


def network_for_chain(label: str) -> NetworkInfo:
    """Return the network whose invoice chain label is ``label`` (e.g. ``cardano-devnet``)."""
    for net in NETWORKS.values():
        if net.chain_label == label:
            return net
    raise UnknownNetworkError(label)
