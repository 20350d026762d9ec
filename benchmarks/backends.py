"""Figure 8: the agent over Ogmios and over Blockfrost, side by side, with Blockfrost's HTTP requests per payment.

Both backends reach the same devnet (served from a child process with its T API twin and its
Blockfrost-compatible API, ``sandbox.blockfrost_api``, on loopback). For each backend:

- payment overhead: ``WalletPayer.pay(request, body)`` from a 402 body in hand to the proof,
  p50 and p95 over the same number of payments (interleaved, so machine noise hits both);
- 8-worker throughput: chat jobs through ``Runner`` with 8 workers, block time 0 (CPU bound);
- for Blockfrost, the HTTP requests the backend sent, per payment and per paid call;
- one query (``/blocks/latest``) through ``blockfrost-python`` (a new ``requests`` connection per
  call) and through the backend's kept-alive httpx connection: why the backend uses httpx.

A real Blockfrost adds a network round trip (tens of ms) to each request and allows 10
requests per second after a burst of 500: requests per payment, not loopback latency, is the
figure that carries over.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from benchmarks._sandbox_proc import SandboxProcess
from benchmarks._setup import fetch_402, make_home, open_agent, percentile, temp_root, use_blockfrost
from benchmarks.throughput import run_workers

BACKENDS = ("ogmios", "blockfrost")
FULL_PAYMENTS = 100
QUICK_PAYMENTS = 6
FULL_JOBS = 80
QUICK_JOBS = 8
WALLET_LOVELACE = 50_000_000_000


def _payer(sandbox: SandboxProcess, root: Any, backend: str, stack: ExitStack) -> Any:
    home, address = make_home(root, f"pay-{backend}")
    assert address is not None
    if backend == "blockfrost":
        use_blockfrost(home, sandbox.blockfrost_url)
    sandbox.fund(address, WALLET_LOVELACE)
    agent = open_agent(home, sandbox.env)
    stack.callback(agent.close)
    return agent


def query_latency_ms(url: str, n: int) -> tuple[float, float]:
    """p50 of ``n`` latest-block queries: blockfrost-python, then BlockfrostChain (httpx, kept alive)."""
    from blockfrost import BlockFrostApi

    from wallets.blockfrost import SANDBOX_PROJECT_ID, BlockfrostChain

    api = BlockFrostApi(project_id=SANDBOX_PROJECT_ID, base_url=url.removesuffix("/v0"))
    chain = BlockfrostChain(url, SANDBOX_PROJECT_ID, network="devnet")
    samples: dict[str, list[float]] = {"sdk": [], "httpx": []}
    try:
        api.block_latest()
        chain.tip()
        for _ in range(n):
            start = time.perf_counter()
            api.block_latest()
            samples["sdk"].append(time.perf_counter() - start)
            start = time.perf_counter()
            chain.tip(fresh=True)  # not the second-long reuse: one real request, as the SDK's
            samples["httpx"].append(time.perf_counter() - start)
    finally:
        chain.close()
    return percentile(samples["sdk"], 50) * 1000, percentile(samples["httpx"], 50) * 1000


def measure(quick: bool) -> dict[str, Any]:
    """Payment overhead and 8-worker throughput per backend; Blockfrost requests per payment."""
    import httpx

    n = QUICK_PAYMENTS if quick else FULL_PAYMENTS
    with ExitStack() as stack:
        root = temp_root(stack)
        sandbox = stack.enter_context(SandboxProcess())
        # First, while the rate limit's burst is whole: blockfrost-python does not wait out a
        # 429 (the backend does), so after the payments below drained the bucket it failed.
        sdk_ms, httpx_ms = query_latency_ms(sandbox.blockfrost_url, 20 if quick else 100)
        agents = {b: _payer(sandbox, root, b, stack) for b in BACKENDS}
        client = stack.enter_context(httpx.Client(timeout=30))
        timings: dict[str, list[float]] = {b: [] for b in BACKENDS}

        def once(backend: str) -> None:
            response = fetch_402(client, sandbox.api_url)
            payer = agents[backend].payer()
            start = time.perf_counter()
            payer.pay(response.request, response.content)
            timings[backend].append(time.perf_counter() - start)

        for backend in BACKENDS:  # warm-up: connections, SQLite pages, imports, cached parameters
            once(backend)
            timings[backend].clear()
        before = agents["blockfrost"].chain.requests
        for _ in range(n):
            for backend in BACKENDS:
                once(backend)
        requests_per_payment = (agents["blockfrost"].chain.requests - before) / n
        paid = {b: [r for r in agents[b].ledger.rows() if r.paid] for b in BACKENDS}
        on_chain = {b: sum(sandbox.confirmed([r.tx_id or "" for r in paid[b]])) for b in BACKENDS}
        jobs = QUICK_JOBS if quick else FULL_JOBS
        runs = {b: run_workers(sandbox, root, 8, jobs, tag="backends-", backend=b) for b in BACKENDS}
    result: dict[str, Any] = {"payments": n}
    for backend in BACKENDS:
        result[f"{backend}_p50_ms"] = round(percentile(timings[backend], 50) * 1000, 3)
        result[f"{backend}_p95_ms"] = round(percentile(timings[backend], 95) * 1000, 3)
    result["blockfrost_vs_ogmios_p50"] = round(result["blockfrost_p50_ms"] / result["ogmios_p50_ms"], 2)
    result["blockfrost_requests_per_payment"] = round(requests_per_payment, 2)
    result["jobs_8_workers"] = jobs
    for backend in BACKENDS:
        result[f"{backend}_calls_per_s_8"] = round(runs[backend]["calls_per_s"], 2)
    done = runs["blockfrost"]["done"]
    result["blockfrost_requests_per_call_8"] = round((runs["blockfrost"]["requests"] or 0) / done, 2) if done else 0.0
    result["query_blockfrost_python_p50_ms"] = round(sdk_ms, 3)
    result["query_httpx_keepalive_p50_ms"] = round(httpx_ms, 3)
    result["payments_on_chain"] = sum(on_chain.values())
    result["failed"] = sum(r["failed"] for r in runs.values())
    result["double_spent"] = sum(r["double_spent"] for r in runs.values())
    result["missing_on_chain"] = sum(r["missing_on_chain"] for r in runs.values()) + sum(
        len(paid[b]) - on_chain[b] for b in BACKENDS)
    result["ledger_mismatch_lovelace"] = sum(r["ledger_mismatch_lovelace"] for r in runs.values())
    errors = [e for r in runs.values() for e in r["errors"]]
    if errors:
        result["first_errors"] = "; ".join(errors[:3])
    return result

