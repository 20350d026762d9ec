"""The agent as an MCP server (the official ``mcp`` SDK): paid API calls for AI agents, under policy.

Tools call :class:`agent.app.Agent` methods and nothing else; every answer says what was paid
(``paid.lovelace``, ``paid.ada``, the ledger rows). A refusal (policy, budget, malformed
argument) is a tool error whose text says so and that nothing was paid. Approving stays with
humans: the tools can list pending approvals, never decide them.

Stdio by default (the passphrase comes from ``CARDANO_AGENT_PASSPHRASE``: stdin is the
protocol); ``--http PORT`` serves streamable HTTP on loopback and needs a bearer token
(``CARDANO_AGENT_CONSOLE_TOKEN``).
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

TOKEN_ENV = "CARDANO_AGENT_CONSOLE_TOKEN"
NOTHING_PAID = {"lovelace": 0, "ada": "0.000000", "payments": []}
INSTRUCTIONS = (
    "A Cardano wallet agent that pays x402 invoices for API calls. Paying tools (chat, token_analysis, "
    "generate_image, fetch_x402) pay under the owner's policy and budgets; every answer states what was "
    "paid. Refusals pay nothing. Payments above the owner's threshold wait for a human: "
    "pending_approvals lists them; only a human approves."
)


def build_server(agent: Any) -> Any:
    """An ``MCPServer`` whose tools call ``agent``'s methods."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from agent.errors import AgentError
    from wallets.errors import WalletError

    server = MCPServer("cardano-pay-agent", instructions=INSTRUCTIONS)

    def guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs)
        except (AgentError, WalletError) as exc:
            paid = getattr(exc, "paid", None) or NOTHING_PAID
            what = "nothing was paid" if not paid["lovelace"] else f"paid {paid['ada']} ADA before the failure"
            raise ToolError(f"refused: {exc} ({what})") from None

    def read(data: Any) -> dict[str, Any]:
        return {"result": data, "paid": NOTHING_PAID}

    @server.tool()
    def chat(message: str, session_id: str | None = None) -> dict[str, Any]:
        """Ask the T API chat (pays its invoice). Returns the reply and what was paid."""
        request: dict[str, Any] = {"message": message}
        if session_id:
            request["session_id"] = session_id
        return guarded(agent.call_api, "chat", request)

    @server.tool()
    def token_analysis(token: str, policy_id: str | None = None, asset_name_hex: str | None = None) -> dict[str, Any]:
        """Analyse a Cardano native token by ticker (pays its invoice). Returns the report and what was paid."""
        request = {k: v for k, v in {"token": token, "policy_id": policy_id,
                                     "asset_name_hex": asset_name_hex}.items() if v}
        return guarded(agent.call_api, "token-analysis", request)

    @server.tool()
    def generate_image(prompt: str, size: str | None = None, n: int | None = None) -> dict[str, Any]:
        """Generate images from a prompt (pays its invoice). Returns a summary and what was paid."""
        request: dict[str, Any] = {"prompt": prompt}
        if size:
            request["size"] = size
        if n is not None:
            request["n"] = n
        return guarded(agent.call_api, "images-generate", request)

    @server.tool()
    def fetch_x402(url: str, method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET",
                   json_body: dict[str, Any] | list[Any] | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Request any URL; a 402 (T API or x402 v2) is paid under the policy and budgets.
        Returns status, headers, body and what was paid."""
        return guarded(agent.fetch_paid, url, method=method, json_body=json_body, headers=headers)

    @server.tool()
    def queue_job(kind: Literal["chat", "token-analysis", "images-generate", "http"], request: dict[str, Any],
                  tags: list[str] | None = None, budget: str | None = None) -> dict[str, Any]:
        """Queue a job for the agent's runner (it pays when it runs). Returns the job; read it with job_result."""
        return read(guarded(agent.enqueue, kind, request, tags=tuple(tags or ()), budget=budget))

    @server.tool()
    def job_result(job_id: int) -> dict[str, Any]:
        """A job's state, result and payments. ``paid`` sums this job's paid payments."""
        job = guarded(agent.job_detail, job_id)
        total = sum(p["cost_lovelace"] or 0 for p in job["payments"] if p["paid"])
        from agent.output import format_ada

        return {"result": job, "paid": {"lovelace": total, "ada": format_ada(total), "payments": job["payments"]}}

    @server.tool()
    def budgets() -> dict[str, Any]:
        """Each budget: limit, spent, reserved, remaining, percent used (lovelace or token units)."""
        return read(guarded(agent.budget_usage))

    @server.tool()
    def spend(days: int = 30, by: Literal["day", "route", "budget", "payee"] = "day") -> dict[str, Any]:
        """What was paid in the last ``days`` days, grouped by day, route, budget or payee."""
        if days < 1:
            raise ToolError("refused: days must be at least 1 (nothing was paid)")
        return read(guarded(agent.spend, since=agent.clock() - days * 86_400, group_by=by))

    @server.tool()
    def pending_approvals() -> dict[str, Any]:
        """Payments waiting for a human to approve or deny (read-only: approving stays with humans)."""
        return read(guarded(agent.pending_approvals))

    return server


def run_mcp(home: Path, *, http_port: int | None = None, host: str = "127.0.0.1") -> int:
    """Serve MCP for the agent in ``home`` until the client (stdio) or a signal (HTTP) ends it."""
    from agent.app import Agent
    from agent.errors import ConfigError

    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigError("cardano-agent mcp needs the MCP SDK: pip install 'cardano-pay-agent[mcp]'") from None
    token = os.environ.get(TOKEN_ENV) or None
    if http_port is not None:
        if not token or len(token) < 16:
            raise ConfigError(f"mcp --http needs a bearer token of 16+ characters in {TOKEN_ENV}")
        if not 0 < http_port <= 65535:
            raise ConfigError(f"--http must be a port 1-65535, got {http_port}")
    with Agent.open(home) as agent:
        server = build_server(agent)
        if http_port is None:
            server.run("stdio")
            return 0
        import uvicorn

        app = BearerTokenApp(server.streamable_http_app(host=host), token or "")
        uvicorn.run(app, host=host, port=http_port, log_level="warning")
    return 0


class BearerTokenApp:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>`` (else 401)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not (auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:], self.token)):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error": "a valid bearer token is required"}'})
                return
        await self.app(scope, receive, send)
