"""BlockfrostChain against scripted HTTP answers: parsing, paging, rate limits, backoff, typed errors."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from wallets.blockfrost import (
    BlockfrostAuthError,
    BlockfrostChain,
    BlockfrostQuotaError,
    RateLimiter,
    submit_failure,
)
from wallets.errors import (
    ChainProtocolError,
    ChainUnavailableError,
    FeeTooSmallError,
    InputsSpentError,
    OutsideValidityError,
    SubmitError,
)
from wallets.types import OutputRef

URL = "http://127.0.0.1:9/api/v0"
SECRET = "preprodSECRETsecretSECRETsecret0000"
TX = "ab" * 32
BLOCK = "cd" * 32
ADDR = "addr_test1vqd8tnqp475uezf7pm6vjnr00z89h2f36fjwu8nn3cha6yg4sdnqm"
PARAMS = {"min_fee_a": 44, "min_fee_b": 155381, "coins_per_utxo_size": "4310", "max_tx_size": 16384,
          "max_val_size": "5000"}


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def error(status: int, message: str = "x") -> httpx.Response:
    return httpx.Response(status, json={"status_code": status, "error": "E", "message": message})


def utxo(tx: str = TX, index: int = 0, lovelace: int = 5_000_000, **assets: int) -> dict:
    amount = [{"unit": "lovelace", "quantity": str(lovelace)}]
    amount += [{"unit": unit, "quantity": str(q)} for unit, q in assets.items()]
    return {"address": ADDR, "tx_hash": tx, "tx_index": index, "output_index": index, "amount": amount,
            "block": BLOCK, "data_hash": None, "inline_datum": None, "reference_script_hash": None}


def make_chain(handler, time_=None, **options):
    """A BlockfrostChain whose requests go to ``handler(request) -> Response`` (recorded in ``seen``)."""
    time_ = time_ or FakeTime()
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    options.setdefault("wall_clock", lambda: 1_800_000_000.0)
    chain = BlockfrostChain(URL, SECRET, network="preprod", transport=httpx.MockTransport(record),
                            clock=time_.clock, sleep=time_.sleep, **options)
    return chain, seen, time_


def test_every_request_carries_the_project_id_in_its_header_and_nowhere_else():
    """The project id goes in the ``project_id`` header; the repr and the URL never show it."""
    chain, seen, _ = make_chain(lambda r: httpx.Response(200, json=PARAMS))
    chain.protocol_params()
    assert seen[0].headers["project_id"] == SECRET
    assert SECRET not in str(seen[0].url) and SECRET not in repr(chain)


def test_utxos_are_parsed_and_every_page_is_read():
    """Pages of 100 are read until a short one; lovelace and tokens are parsed from strings."""
    token = "82888098ca0a60c75af54db1b9817832a9da4b7a32ea575c461568a2" + "4445564e4554"
    pages = {1: [utxo(f"{i:064x}", 0) for i in range(100)], 2: [utxo(TX, 3, 7, **{token: 9})]}
    chain, seen, _ = make_chain(lambda r: httpx.Response(200, json=pages[int(r.url.params["page"])]))
    found = chain.utxos_at(ADDR)
    assert len(found) == 101 and len(seen) == 2
    last = found[-1]
    assert last.ref == OutputRef(TX, 3) and last.lovelace == 7
    assert last.assets == {"82888098ca0a60c75af54db1b9817832a9da4b7a32ea575c461568a2.4445564e4554": 9}


def test_an_address_the_chain_never_saw_has_no_utxos():
    """Blockfrost answers 404 for an unknown address: that is an empty UTxO set, not an error."""
    chain, _, _ = make_chain(lambda r: error(404))
    assert chain.utxos_at(ADDR) == []


@pytest.mark.parametrize("bad", [
    {"tx_hash": "zz", "output_index": 0, "amount": []},
    {"tx_hash": TX, "output_index": -1, "amount": []},
    {"tx_hash": TX, "output_index": 0, "amount": [{"unit": "lovelace", "quantity": "1e9"}]},
    {"tx_hash": TX, "output_index": 0, "amount": [{"unit": "not-a-unit", "quantity": "1"}]},
])
def test_malformed_utxos_are_refused(bad):
    """A UTxO item that does not parse strictly raises ChainProtocolError."""
    chain, _, _ = make_chain(lambda r: httpx.Response(200, json=[{"address": ADDR, **bad}]))
    with pytest.raises(ChainProtocolError):
        chain.utxos_at(ADDR)


def test_rate_limiter_allows_a_burst_then_paces_requests():
    """A bucket of 3 at 10/s: three requests at once, the fourth waits 0.1 s (on the injected clock)."""
    time_ = FakeTime()
    limiter = RateLimiter(10, 3, clock=time_.clock, sleep=time_.sleep)
    for _ in range(4):
        limiter.acquire()
    assert time_.slept == [pytest.approx(0.1)]


def test_client_paces_itself_to_blockfrosts_sustained_rate():
    """Past the burst, requests go out at the configured rate: 20 calls at 10/s after a burst of 5 take 1.5 s."""
    chain, seen, time_ = make_chain(lambda r: httpx.Response(200, json=PARAMS), burst=5, rate_per_s=10,
                                    params_ttl_s=0)
    for _ in range(20):
        chain.protocol_params()
    assert len(seen) == 20
    assert time_.now - 1000.0 == pytest.approx(1.5)


def test_429_is_retried_with_backoff_honouring_retry_after():
    """429s back off (Retry-After wins when longer) and the request succeeds once allowed."""
    answers = [httpx.Response(429, headers={"Retry-After": "2"},
                              json={"status_code": 429, "error": "Project Over Limit", "message": "x"}),
               error(429), httpx.Response(200, json=PARAMS)]
    chain, seen, time_ = make_chain(lambda r: answers.pop(0))
    assert chain.protocol_params().min_fee_coefficient == 44
    assert len(seen) == 3
    assert time_.slept == [2.0, 0.5]


def test_persistent_429_or_5xx_ends_in_a_retryable_error():
    """After every attempt a 429 or 503, the caller gets ChainUnavailableError (the job waits and retries)."""
    chain, seen, _ = make_chain(lambda r: error(503), attempts=3)
    with pytest.raises(ChainUnavailableError, match="unavailable after 3 attempts: HTTP 503"):
        chain.tip()
    assert len(seen) == 3


def test_garbage_json_is_retried_then_named():
    """A 200 that is not JSON is retried; if it persists, one clear ChainProtocolError."""
    chain, seen, _ = make_chain(lambda r: httpx.Response(200, content=b"<html>oops</html>"), attempts=2)
    with pytest.raises(ChainProtocolError, match="not JSON"):
        chain.tip()
    assert len(seen) == 2
    answers = [httpx.Response(200, content=b"{"), httpx.Response(200, json=PARAMS)]
    chain, _, _ = make_chain(lambda r: answers.pop(0))
    assert chain.protocol_params().max_tx_size == 16384


def test_timeouts_are_retried_for_queries():
    """A read timeout on a query is retried; the second try answers."""
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json=PARAMS)

    chain, _, _ = make_chain(handler)
    assert chain.protocol_params().min_fee_constant == 155381
    assert len(calls) == 2


def test_wrong_project_id_is_one_line_naming_network_and_setting(caplog):
    """A 403 ends at once with one line naming the network and BLOCKFROST_PROJECT_ID, never the id."""
    caplog.set_level(logging.DEBUG)
    chain, seen, _ = make_chain(lambda r: error(403, "Invalid project token."))
    with pytest.raises(BlockfrostAuthError) as info:
        chain.tip()
    text = str(info.value)
    assert "preprod" in text and "BLOCKFROST_PROJECT_ID" in text and "\n" not in text
    assert SECRET not in text and SECRET not in caplog.text
    assert len(seen) == 1


def test_missing_project_id_is_refused_before_any_request():
    """No project id at all: one line saying which variable to set."""
    with pytest.raises(BlockfrostAuthError, match="set BLOCKFROST_PROJECT_ID"):
        BlockfrostChain(URL, "", network="mainnet")


@pytest.mark.parametrize("status, needle", [(402, "daily request quota"), (418, "banned")])
def test_spent_quota_and_ban_end_at_once_with_a_clear_line(status, needle):
    """402 (daily quota spent) and 418 (banned) are not hammered: one request, one clear retryable error."""
    chain, seen, _ = make_chain(lambda r: error(status))
    with pytest.raises(BlockfrostQuotaError, match=needle) as info:
        chain.tip()
    assert isinstance(info.value, ChainUnavailableError) and "preprod" in str(info.value)
    assert len(seen) == 1


def test_stale_tip_is_refused_retryably_when_a_lag_limit_is_set():
    """A latest block older than max_tip_lag_s means the index lags: ChainUnavailableError."""
    block = {"hash": BLOCK, "slot": 100, "time": 1_800_000_000 - 900, "height": 5}
    chain, _, _ = make_chain(lambda r: httpx.Response(200, json=block), max_tip_lag_s=600)
    with pytest.raises(ChainUnavailableError, match="900 s old"):
        chain.tip()
    fresh, _, _ = make_chain(lambda r: httpx.Response(200, json=block))
    assert fresh.tip().slot == 100


def test_current_slot_counts_from_a_seen_block_and_the_slot_length():
    """The ledger's slot at ``now`` is the latest block's slot plus the slots elapsed since its time."""
    answers = {"/api/v0/genesis": {"slot_length": 1},
               "/api/v0/blocks/latest": {"hash": BLOCK, "slot": 5000, "time": 1_800_000_000, "height": 9}}
    chain, _, _ = make_chain(lambda r: httpx.Response(200, json=answers[r.url.path]))
    assert chain.current_slot(1_800_000_042.5) == 5042
    assert chain.slot_time(5042) == 1_800_000_042.0


def test_submit_returns_the_id_and_sends_cbor():
    """POST /tx/submit with application/cbor; the answer is the id as a JSON string."""
    chain, seen, _ = make_chain(lambda r: httpx.Response(200, json=TX))
    assert chain.submit(b"\x84\x01") == TX
    assert seen[0].method == "POST" and seen[0].headers["content-type"] == "application/cbor"
    assert seen[0].content == b"\x84\x01"


def _node_failure(text: str) -> httpx.Response:
    message = json.dumps({"tag": "TxSubmitFail", "contents": {"error": [f"ConwayUtxowFailure (UtxoFailure ({text}))"]}})
    return error(400, message)


def test_ledger_refusals_become_typed_submit_errors():
    """The node's failure constructor in Blockfrost's 400 picks the SubmitError subclass; spent inputs are parsed."""
    spent = f'BadInputsUTxO (fromList [TxIn (TxId {{unTxId = SafeHash "{TX}"}}) (TxIx {{unTxIx = 2}})])'
    chain, _, _ = make_chain(lambda r: _node_failure(spent))
    with pytest.raises(InputsSpentError) as info:
        chain.submit(b"\x00")
    assert info.value.data == {"unknownOutputReferences": [{"transaction": {"id": TX}, "index": 2}]}
    assert isinstance(submit_failure("... OutsideValidityIntervalUTxO (...)"), OutsideValidityError)
    assert isinstance(submit_failure("FeeTooSmallUTxO (Mismatch ...)"), FeeTooSmallError)
    assert submit_failure("DeserialiseFailure 0 \"x\"").code == -32602
    odd = submit_failure("something new")
    assert type(odd) is SubmitError and "something new" in str(odd)


def test_a_fee_refusal_makes_the_parameters_be_asked_again():
    """After FeeTooSmallUTxO the cached protocol parameters are dropped."""
    answers = [httpx.Response(200, json=PARAMS), _node_failure("FeeTooSmallUTxO (Mismatch {})"),
               httpx.Response(200, json={**PARAMS, "min_fee_a": 45})]
    chain, _, _ = make_chain(lambda r: answers.pop(0))
    assert chain.protocol_params().min_fee_coefficient == 44
    with pytest.raises(FeeTooSmallError):
        chain.submit(b"\x00")
    assert chain.protocol_params().min_fee_coefficient == 45


@pytest.mark.parametrize("answer", [
    lambda r: error(500),
    lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)),
    lambda r: httpx.Response(200, content=b"not json"),
])
def test_a_submission_whose_outcome_is_unknown_is_never_resent(answer):
    """A 5xx, a timeout or garbage after sending: ChainUnavailableError at once, one POST only."""
    chain, seen, _ = make_chain(answer)
    with pytest.raises(ChainUnavailableError, match="outcome is unknown"):
        chain.submit(b"\x00")
    assert len(seen) == 1


def test_a_rate_limited_submission_is_sent_again():
    """429 means Blockfrost did not take the transaction: sending it again is safe."""
    answers = [error(429), httpx.Response(200, json=TX)]
    chain, seen, _ = make_chain(lambda r: answers.pop(0))
    assert chain.submit(b"\x00") == TX
    assert len(seen) == 2


def test_mempool_membership_and_transaction_lookup():
    """/mempool/{hash} and /txs/{hash}: 200 means there, 404 means not."""
    def handler(request):
        if request.url.path.endswith(f"/mempool/{TX}") or request.url.path.endswith(f"/txs/{TX}"):
            return httpx.Response(200, json={"hash": TX, "block": BLOCK, "slot": 7})
        return error(404)

    chain, _, _ = make_chain(handler)
    assert chain.in_mempool(TX) and not chain.in_mempool("ef" * 32)
    assert chain.transaction(TX)["block"] == BLOCK and chain.transaction("ef" * 32) is None


def test_utxos_by_refs_reads_transaction_outputs_and_who_consumed_them():
    """Outputs consumed by a later transaction are not unspent; unknown transactions give nothing."""
    other = "ef" * 32

    def handler(request):
        if request.url.path.endswith(f"/txs/{TX}/utxos"):
            return httpx.Response(200, json={"hash": TX, "inputs": [], "outputs": [
                {"address": ADDR, "amount": [{"unit": "lovelace", "quantity": "3"}], "output_index": 0,
                 "consumed_by_tx": None},
                {"address": ADDR, "amount": [{"unit": "lovelace", "quantity": "4"}], "output_index": 1,
                 "consumed_by_tx": other}]})
        return error(404)

    chain, _, _ = make_chain(handler)
    found = chain.utxos_by_refs([OutputRef(TX, 0), OutputRef(TX, 1), OutputRef(other, 0)])
    assert [(u.ref, u.lovelace) for u in found] == [(OutputRef(TX, 0), 3)]


def test_the_latest_block_is_reused_for_a_second():
    """Two tips within tip_ttl_s cost one request; a tip after it asks again."""
    block = {"hash": BLOCK, "slot": 100, "time": 1_800_000_000, "height": 5}
    chain, seen, time_ = make_chain(lambda r: httpx.Response(200, json=block))
    chain.tip()
    chain.tip()
    assert len(seen) == 1
    time_.now += 1.5
    chain.tip()
    assert len(seen) == 2


def test_absence_is_concluded_only_from_a_fresh_index():
    """With evidence_max_lag_s, 'in no block' and 'unspent' need a recent latest block; found needs nothing."""
    now = 1_800_000_000.0
    old = {"hash": BLOCK, "slot": 100, "time": int(now) - 300, "height": 5}
    fresh = {**old, "time": int(now) - 10}
    landed = {"hash": TX, "block": "ef" * 32, "block_height": 9, "slot": 120}
    outputs = {"hash": TX, "inputs": [], "outputs": [{"address": ADDR, "output_index": 0, "consumed_by_tx": None,
                                                       "amount": [{"unit": "lovelace", "quantity": "1"}]}]}

    def answers(latest, tx):
        def handler(request):
            path = request.url.path
            if path.endswith("/blocks/latest"):
                return httpx.Response(200, json=latest)
            if path.endswith("/utxos"):
                return httpx.Response(200, json=outputs)
            return httpx.Response(200, json=tx) if tx is not None else error(404)
        return handler

    lagging, _, _ = make_chain(answers(old, None), evidence_max_lag_s=60)
    with pytest.raises(ChainUnavailableError, match="300 s old"):
        lagging.find_transaction(TX, since=None)
    with pytest.raises(ChainUnavailableError, match="index catches up"):
        lagging.utxos_by_refs([OutputRef(TX, 0)])
    found, _, _ = make_chain(answers(old, landed), evidence_max_lag_s=60)
    assert found.find_transaction(TX, since=None).block == (120, "ef" * 32)
    current, _, _ = make_chain(answers(fresh, None), evidence_max_lag_s=60)
    assert not current.find_transaction(TX, since=None).landed
    assert current.utxos_by_refs([OutputRef(TX, 0)])[0].lovelace == 1


def test_a_full_mempool_is_waited_out_with_the_same_bytes():
    """425 (mempool full: nothing taken) is sent again, the same bytes, until the node takes it."""
    answers = [error(425), error(425), httpx.Response(200, json=TX)]
    chain, seen, time_ = make_chain(lambda r: answers.pop(0))
    assert chain.submit(b"\x84\x01") == TX
    assert [r.content for r in seen] == [b"\x84\x01"] * 3 and len(time_.slept) == 2


def test_a_mempool_full_past_the_submit_timeout_is_a_retryable_error_saying_nothing_was_taken():
    """No room for ``submit_timeout_s``: MempoolFullError (a ChainUnavailableError), the outcome known."""
    from wallets.errors import MempoolFullError

    chain, seen, time_ = make_chain(lambda r: error(425), submit_timeout_s=30)
    with pytest.raises(MempoolFullError, match="not taken") as info:
        chain.submit(b"\x00")
    assert isinstance(info.value, ChainUnavailableError) and not info.value.accepted_unknown
    assert 30 <= sum(time_.slept) <= 31 and len(seen) >= 3
