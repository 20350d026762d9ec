"""Figure 1: payment overhead, from a 402 body in hand to the retry's proof, agent vs plain pycardano.

The agent path is ``WalletPayer.pay(request, body)`` exactly as ``agent.app.Agent`` assembles it
(parse, policy, budget reservation, coin selection with UTxO reservation, build, sign, durable
ledger rows, submit over the persistent Ogmios connection). The naive path is what a user writes
with pycardano alone: ``OgmiosV6ChainContext`` (a fresh connection per query) and
``TransactionBuilder.build_and_sign``, then ``submit_tx``, for the same invoice outputs. The
fair baseline beside it: the same pycardano script with a warm chain context (one persistent
Ogmios connection, protocol parameters cached; ``benchmarks._setup.warm_context``), so what
is left is pycardano's building and signing against the agent's whole payment.
Fetching each 402 from the twin is not timed. The devnet and twin run in a child process, as a
node would run elsewhere, so their CPU time does not land inside either path's timing.

Beside the T path, the x402 v2 path: ``WalletPayer.pay_v2(request, response)`` from a
``PAYMENT-REQUIRED`` in hand to the ``PAYMENT-SIGNATURE`` (decode, choose among accepts, policy,
reservation, build, sign, the payload stored; no submit: the sandbox facilitator submits it
when the untimed paid retry is sent).

Beside them, the wallet layers alone from the wallet helper's ``scripts/bench_payment.py``
(imported, not copied): build+sign, ``PaymentSender.pay`` over a fake chain and over Ogmios.
What ``pay`` costs above the Ogmios sender is the agent's own work (parse, policy, SQLite rows).

Also the price of durability: one payment's ledger writes (reserve, signed, submitted,
settled) as the agent makes them (the ``signed`` commit with ``synchronous=FULL``, synced to
disk so it survives power loss) beside the same writes all with ``synchronous=NORMAL``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path
from contextlib import ExitStack
from typing import Any

from benchmarks._sandbox_proc import SandboxProcess
from benchmarks._setup import (fetch_402, make_home, naive_builder, naive_submit, open_agent, percentile, temp_root,
                               warm_context)

FULL_PAYMENTS = 200
QUICK_PAYMENTS = 20
WALLET_LOVELACE = 100_000_000_000
LAYER_RUNS = {True: (200, 50, 20), False: (1000, 200, 100)}
"""(build+sign, sender on a fake chain, sender over Ogmios) repetitions for quick / full runs."""
BENCH_PAYMENT = Path(__file__).resolve().parents[1] / "scripts" / "bench_payment.py"


def wallet_layers(quick: bool) -> dict[str, float]:
    """p50 of the wallet layers alone, measured by ``scripts/bench_payment.py`` (the wallet helper's)."""
    spec = importlib.util.spec_from_file_location("bench_payment", BENCH_PAYMENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    n_build, n_fake, n_ogmios = LAYER_RUNS[quick]
    return {
        "wallet_build_sign_p50_ms": module.bench_build(n_build)["p50_ms"],
        "wallet_sender_fake_chain_p50_ms": module.bench_sender(n_fake)["p50_ms"],
        "wallet_sender_ogmios_p50_ms": module.bench_sender_devnet(n_ogmios)["p50_ms"],
    }


LEDGER_RUNS = {True: 50, False: 300}


def ledger_durability(quick: bool, root: Path) -> dict[str, float]:
    """p50 of one payment's four ledger writes, as the agent makes them vs all NORMAL, on the bench's disk."""
    from agent.budget import BudgetBook, BudgetSpec
    from agent.ledger import SpendLedger
    from agent.store import Database, SqliteDatabase
    from wallets.types import OutputRef, RequiredOutput

    class _Normal(SqliteDatabase):
        def atomic(self, *, immediate: bool = True, durable: bool = False) -> Any:
            return super().atomic(immediate=immediate)

    def p50_ms(db: Database) -> float:
        db.migrate()
        ledger = SpendLedger(db, BudgetBook(db, [BudgetSpec("total", {"lovelace": 10**15})]))
        times = []
        for n in range(LEDGER_RUNS[quick]):
            start = time.perf_counter()
            row = ledger.reserve(invoice_id=f"inv-{n}", host="bench", route="/chat", job_id=None,
                                 outputs=[RequiredOutput("addr_test1qbench", 2_000_000)],
                                 amounts={"lovelace": 2_000_000}, fee_estimate_lovelace=200_000)
            ledger.mark_signed(row.id, tx_id=f"{n:064x}", cbor=b"\x84" + bytes(300), fee_lovelace=170_000,
                               inputs=[OutputRef("f" * 64, n)], ttl_slot=10**9, cost_lovelace=2_170_000)
            ledger.mark_submitted(row.id)
            ledger.mark_settled(row.id)
            times.append(time.perf_counter() - start)
        db.close()
        return round(percentile(times, 50) * 1000, 3)

    full = p50_ms(SqliteDatabase(root / "durable" / "agent.db"))
    normal = p50_ms(_Normal(root / "normal" / "agent.db"))
    return {"ledger_writes_full_p50_ms": full, "ledger_writes_normal_p50_ms": normal}


def naive_key() -> Any:
    """A fixed pycardano key for the naive payer (a plain user script would load one from a file)."""
    from pycardano import PaymentSigningKey

    return PaymentSigningKey(hashlib.sha256(b"cardano-bench:naive").digest())


def naive_address(key: Any) -> str:
    from pycardano import Address, Network

    return Address(key.to_verification_key().hash(), network=Network.TESTNET).encode()


def naive_pay(key: Any, address: str, ogmios_url: str, body: bytes, context: Any = None) -> str:
    """Pay a 402 body the way a pycardano-only script does; return the submitted tx id.

    ``context``: a chain context to reuse (:func:`benchmarks._setup.warm_context`); else a fresh one.
    """
    from pycardano import AlonzoMetadata, AuxiliaryData, Metadata

    detail = json.loads(body)["detail"]
    outputs = [(detail["payTo"], int(detail["amountUnits"]))]
    for extra in detail.get("extra", {}).get("outputs", []):
        outputs.append((extra["address"], int(extra["amountUnits"])))
    context, builder = naive_builder(address, ogmios_url, outputs, context)
    builder.auxiliary_data = AuxiliaryData(AlonzoMetadata(metadata=Metadata(
        {674: {"msg": ["x402", detail["invoiceId"]]}})))
    builder.ttl = context.last_block_slot + int(detail.get("timeout", 300)) - 5
    return str(naive_submit(context, builder, key, address).id)


def measure(quick: bool) -> dict[str, Any]:
    """Time ``n`` agent payments and ``n`` naive payments on one devnet; return the figures."""
    import httpx

    n = QUICK_PAYMENTS if quick else FULL_PAYMENTS
    key = naive_key()
    plain_address = naive_address(key)
    with ExitStack() as stack:
        root = temp_root(stack)
        home, address = make_home(root, "payer")
        assert address is not None
        sandbox = stack.enter_context(SandboxProcess({address: WALLET_LOVELACE, plain_address: WALLET_LOVELACE}))
        agent = open_agent(home, sandbox.env)
        stack.callback(agent.close)
        client = stack.enter_context(httpx.Client(timeout=30))
        payer = agent.payer()

        def agent_once() -> float:
            response = fetch_402(client, sandbox.api_url)
            start = time.perf_counter()
            payer.pay(response.request, response.content)
            return time.perf_counter() - start

        def naive_once() -> float:
            response = fetch_402(client, sandbox.api_url)
            start = time.perf_counter()
            naive_pay(key, plain_address, sandbox.ogmios_url, response.content)
            return time.perf_counter() - start

        warm = warm_context(sandbox.ogmios_url)
        stack.callback(warm.close)

        def warm_once() -> float:
            response = fetch_402(client, sandbox.api_url)
            start = time.perf_counter()
            naive_pay(key, plain_address, sandbox.ogmios_url, response.content, warm)
            return time.perf_counter() - start

        agent_once()  # warm-up: first Ogmios connection, SQLite pages, imports
        naive_once()
        warm_once()
        agent_s, naive_s, warm_s = [], [], []
        for _ in range(n):  # interleaved, so machine noise hits every path alike
            agent_s.append(agent_once())
            naive_s.append(naive_once())
            warm_s.append(warm_once())
        paid_rows = [r for r in agent.ledger.rows() if r.paid]
        on_chain = sum(sandbox.confirmed([r.tx_id or "" for r in paid_rows]))
        v2_s, v2_settled = measure_v2(client, payer, sandbox.x402_url, n)
        durability = ledger_durability(quick, root)

    agent_p50, naive_p50 = percentile(agent_s, 50), percentile(naive_s, 50)
    return {
        "payments": n,
        "agent_p50_ms": round(agent_p50 * 1000, 3),
        "agent_p95_ms": round(percentile(agent_s, 95) * 1000, 3),
        "naive_p50_ms": round(naive_p50 * 1000, 3),
        "naive_p95_ms": round(percentile(naive_s, 95) * 1000, 3),
        "speedup_p50": round(naive_p50 / agent_p50, 2),
        "warm_p50_ms": round(percentile(warm_s, 50) * 1000, 3),
        "warm_p95_ms": round(percentile(warm_s, 95) * 1000, 3),
        "speedup_vs_warm_p50": round(percentile(warm_s, 50) / agent_p50, 2),
        "agent_payments_on_chain": on_chain,
        "v2_agent_p50_ms": round(percentile(v2_s, 50) * 1000, 3),
        "v2_agent_p95_ms": round(percentile(v2_s, 95) * 1000, 3),
        "v2_payments_settled": v2_settled,
        **wallet_layers(quick),
        **durability,
    }


def measure_v2(client: Any, payer: Any, url: str, n: int) -> tuple[list[float], int]:
    """Time ``n`` x402 v2 payments (402 in hand to the signed payload); settle each, untimed."""
    from benchmarks.errors import BenchError

    samples: list[float] = []
    settled = 0
    for i in range(n + 1):  # the first is a warm-up
        response = client.get(f"{url}/premium", headers={"X-Request-Id": f"bench-v2-{i}"})
        if response.status_code != 402:
            raise BenchError(f"expected a 402 from the v2 server, got {response.status_code}")
        start = time.perf_counter()
        proof = payer.pay_v2(response.request, response)
        elapsed = time.perf_counter() - start
        paid = client.get(f"{url}/premium", headers={**proof.headers, "X-Request-Id": f"bench-v2-{i}"})
        if paid.status_code != 200:
            raise BenchError(f"the v2 server refused a paid call: {paid.status_code} {paid.headers}")
        payer.settled(proof, paid)
        if i:
            samples.append(elapsed)
            settled += 1
    return samples, settled
