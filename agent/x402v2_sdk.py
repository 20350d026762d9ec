"""A plug-in scheme for the official ``x402`` SDK: ``x402Client().register("cardano:*", agent.x402_scheme())``.

The SDK selects a requirement and wraps our inner payload into its ``PaymentPayload``; the
choice among one requirement's terms, the policy, the budgets, the build and sign, and the
ledger are the agent's (``agent.x402v2_payer``), exactly as for ``agent.x402_auth()``. The
SDK does not tell a scheme which URL it pays for, so the policy sees the host given here
(default ``x402-sdk``: pin or allowlist payees under that name). The SDK reads the answer
itself: rows paid through it stay ``signed`` until the chain shows the transaction
(``reconcile()``, or the agent's recovery at start).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from agent import x402v2 as v2

if TYPE_CHECKING:
    from agent.payer import WalletPayer

DEFAULT_HOST = "x402-sdk"


class AgentCardanoScheme:
    """The SDK's ``SchemeNetworkClient`` for ``exact`` on Cardano, paying from an agent's wallet.

    Args:
        payer: the agent's ``WalletPayer``.
        host: the name the policy judges payees under.
    """

    scheme = v2.SCHEME

    def __init__(self, payer: WalletPayer, *, host: str = DEFAULT_HOST) -> None:
        self._payer = payer
        self._host = host

    def __repr__(self) -> str:
        return f"AgentCardanoScheme(host={self._host!r})"

    def create_payment_payload(self, requirements: Any, context: Any = None,
                               extensions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Judge, reserve, build and sign the payment of ``requirements``; return ``{transaction, nonce}``.

        Raises:
            AgentError: refused (policy, budget, an unpayable requirement); nothing paid.
        """
        from agent.x402v2_payer import pay_requirements

        raw = requirements.model_dump(by_alias=True, exclude_none=True) if hasattr(requirements, "model_dump") \
            else dict(requirements)
        required = {"x402Version": 2, "accepts": [raw]}
        if extensions:
            required["extensions"] = extensions
        headers = {v2.PAYMENT_REQUIRED_HEADER: v2.encode_b64_json(required)}
        proof = pay_requirements(self._payer, headers, b"", host=self._host, route=str(raw.get("payTo", "")),
                                 request_id=f"sdk-{uuid.uuid4().hex}")
        (value,) = proof.headers.values()
        payload = v2.decode_b64_json(value, what="our own payload")
        return dict(payload["payload"])

    def reconcile(self) -> dict[str, int]:
        """Mark rows paid through the SDK as paid once the chain shows them (released once past TTL)."""
        from agent.x402v2_payer import reconcile

        return reconcile(self._payer)
