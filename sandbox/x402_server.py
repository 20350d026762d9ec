"""An x402 v2 resource server with its facilitator, on the devnet: ``X402Server.start(devnet)``.

Built on the official SDK: ``x402ResourceServer`` with its FastAPI ``payment_middleware``
does the server-side parsing, matching, verify → handler → settle and the headers; our
:class:`CardanoExactServerScheme` prices routes and :class:`~sandbox.facilitator.CardanoExactFacilitator`
(registered in an ``x402Facilitator``) verifies and settles. The same facilitator answers
``POST /facilitator/verify``, ``POST /facilitator/settle`` and ``GET /facilitator/supported``.

Paid routes (network ``cardano:devnet``): ``/premium`` (1 ADA), ``/token`` (5 DEVNET tokens),
``/choice`` (3 ADA or 2 ADA or 5 tokens). Only this module and ``sandbox.facilitator`` need FastAPI/uvicorn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast

from sandbox.serving import ServedApp
from sandbox.facilitator import CardanoExactFacilitator, DevnetPort, Faults

log = logging.getLogger(__name__)

NETWORK = "cardano:devnet"
DEFAULT_PAY_TO = "addr_test1vqdk7va2smuy49qhlws6k83mlnrlcetn0ha4z4qcqf0j3fcs3dc8d"


class CardanoExactServerScheme:
    """The SDK's ``SchemeNetworkServer`` for ``exact`` on Cardano: prices in lovelace or tokens."""

    scheme = "exact"
    default_asset_transfer_method = "default"
    payment_flows = {"default": {"supported": ["authorization"], "default": "authorization"}}

    def __init__(self, confirmations: int = 1) -> None:
        self.confirmations = confirmations

    def parse_price(self, price: Any, network: str) -> Any:
        """An ``AssetAmount`` passes through; a number or ``"1.5"`` means ADA (to lovelace)."""
        from decimal import Decimal

        from x402.schemas import AssetAmount

        if isinstance(price, AssetAmount):
            return price
        if isinstance(price, Mapping):
            return AssetAmount.model_validate(price)
        lovelace = int(Decimal(str(price).lstrip("₳ ").replace("ADA", "").strip()) * 1_000_000)
        return AssetAmount(amount=str(lovelace), asset="lovelace")

    def enhance_payment_requirements(self, requirements: Any, supported_kind: Any, extensions: list[str]) -> Any:
        extra = dict(requirements.extra or {})
        extra.setdefault("assetTransferMethod", "default")
        extra.setdefault("confirmationPolicy", {"l1Confirmations": self.confirmations})
        extra.setdefault("areFeesSponsored", False)
        return requirements.model_copy(update={"extra": extra})


@dataclass
class Routes:
    """Prices of the paid routes (lovelace and token units) and where they pay."""

    pay_to: str = DEFAULT_PAY_TO
    token: str = "82888098ca0a60c75af54db1b9817832a9da4b7a32ea575c461568a2.4445564e4554"
    premium_lovelace: int = 1_000_000
    token_units: int = 5
    max_timeout_s: int = 600
    confirmations: int = 1
    extra_routes: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, declare_payment_identifier_extension
        from x402.http.types import PaymentOption, RouteConfig
        from x402.schemas import AssetAmount

        def ada(lovelace: int) -> Any:
            return PaymentOption(scheme="exact", pay_to=self.pay_to, network=NETWORK,
                                 price=AssetAmount(amount=str(lovelace), asset="lovelace"),
                                 max_timeout_seconds=self.max_timeout_s)

        def tokens(units: int) -> Any:
            return PaymentOption(scheme="exact", pay_to=self.pay_to, network=NETWORK,
                                 price=AssetAmount(amount=str(units), asset=self.token),
                                 max_timeout_seconds=self.max_timeout_s)

        routes = {
            "GET /premium": RouteConfig(accepts=ada(self.premium_lovelace), description="Premium content",
                                        mime_type="application/json",
                                        extensions={PAYMENT_IDENTIFIER: declare_payment_identifier_extension()}),
            "POST /premium": RouteConfig(accepts=ada(self.premium_lovelace), description="Premium content",
                                         mime_type="application/json"),
            "GET /token": RouteConfig(accepts=tokens(self.token_units), description="Paid in DEVNET tokens"),
            "GET /choice": RouteConfig(accepts=[ada(3_000_000), ada(2_000_000), tokens(self.token_units)],
                                       description="Three ways to pay"),
        }
        routes.update(self.extra_routes)
        return routes


def create_app(facilitator: CardanoExactFacilitator, routes: Routes) -> Any:
    """The FastAPI app: the SDK's payment middleware in front of the paid routes, plus the facilitator API."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from x402 import x402Facilitator, x402ResourceServer
    from x402.http.middleware.fastapi import payment_middleware

    sdk_facilitator = x402Facilitator().register([facilitator.network], cast(Any, facilitator))
    server = x402ResourceServer(cast(Any, sdk_facilitator))
    server.register(NETWORK, cast(Any, CardanoExactServerScheme(routes.confirmations)))
    middleware = payment_middleware(routes.config(), server)
    app = FastAPI(title="x402 v2 sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settled = 0
    app.state.deliveries = 0

    @app.middleware("http")
    async def x402(request: Request, call_next: Any) -> Any:
        response = await middleware(request, call_next)
        if response.status_code == 200 and "payment-response" in response.headers:
            app.state.settled += 1
            if facilitator.faults.error_after_settle > 0:
                facilitator.faults.error_after_settle -= 1
                return JSONResponse({"error": "injected fault after settling"}, status_code=500)
        return response

    @app.get("/premium")
    @app.post("/premium")
    async def premium() -> dict[str, Any]:
        app.state.deliveries += 1
        return {"content": "premium", "n": app.state.deliveries}

    @app.get("/token")
    async def token() -> dict[str, Any]:
        app.state.deliveries += 1
        return {"content": "paid in tokens"}

    @app.get("/choice")
    async def choice() -> dict[str, Any]:
        app.state.deliveries += 1
        return {"content": "chosen"}

    @app.get("/free")
    async def free() -> dict[str, Any]:
        return {"content": "free"}

    def facilitate(body: dict[str, Any], act: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Any:
        """``act`` on the body's payload and requirements; a 400 when either is missing."""
        payload, requirements = body.get("paymentPayload"), body.get("paymentRequirements")
        if not isinstance(payload, dict) or not isinstance(requirements, dict):
            return JSONResponse({"error": "Missing paymentPayload or paymentRequirements"}, status_code=400)
        return act(payload, requirements)

    @app.post("/facilitator/verify")
    def verify(body: dict[str, Any]) -> Any:
        return facilitate(body, facilitator.verify_dict)

    @app.post("/facilitator/settle")
    def settle(body: dict[str, Any]) -> Any:
        return facilitate(body, facilitator.settle_dict)

    @app.get("/facilitator/supported")
    def supported() -> dict[str, Any]:
        return dict(sdk_facilitator.get_supported().model_dump(by_alias=True, exclude_none=True))

    return app


class X402Server(ServedApp):
    """A running v2 resource server + facilitator. ``url``; ``stop()`` or leave ``with``."""

    def __init__(self, app: Any, facilitator: CardanoExactFacilitator) -> None:
        self.app = app
        self.facilitator = facilitator
        self.faults = facilitator.faults

    @classmethod
    def start(cls, devnet: Any, *, routes: Routes | None = None, host: str = "127.0.0.1", port: int = 0,
              confirmation_timeout_s: float | None = None, faults: Faults | None = None,
              startup_timeout_s: float = 10.0) -> X402Server:
        """Serve on ``host:port`` (0: any free port) over ``devnet`` (a running ``Devnet``).

        With a block timer (``block_time_s > 0``) the facilitator waits up to 20 s for the depth
        and keeps the idle devnet producing (empty) blocks meanwhile, as a live chain would;
        with ``block_time_s == 0`` (tests) it answers at once, ``settlement_pending`` if short.
        """
        node = devnet.node
        block_time = float(getattr(node, "block_time_s", 0) or 0)
        timeout = confirmation_timeout_s if confirmation_timeout_s is not None else (20.0 if block_time else 0.0)
        on_wait = (lambda: node.produce_block(force=True)) if block_time else None
        facilitator = CardanoExactFacilitator(DevnetPort(node), network=NETWORK, confirmation_timeout_s=timeout,
                                              poll_s=block_time or 0.1, on_wait=on_wait, faults=faults)
        running = cls(create_app(facilitator, routes or Routes()), facilitator)
        running._serve(running.app, host=host, port=port, what="the x402 v2 server", name="x402-v2",
                       startup_timeout_s=startup_timeout_s)
        log.info("x402 v2 server serving at %s", running.url)
        return running
