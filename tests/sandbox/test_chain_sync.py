"""Chain sync on the devnet's Ogmios: findIntersection and nextBlock, as Ogmios v6.14 shapes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from websockets.sync.client import connect

from tests.fixtures.devnet import new_key

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "ogmios" / "schemas"


def _validator(version: str) -> Any:
    cardano = json.loads((SCHEMAS / version / "cardano.json").read_text())
    ogmios = json.loads((SCHEMAS / version / "ogmios.json").read_text())
    # Value: "ada" is required but the key pattern only admits policy ids (a known schema quirk).
    cardano["definitions"]["Value"]["propertyNames"] = {"pattern": "^(ada|[0-9a-f]{56})$"}
    registry = Registry().with_resources([
        ("cardano.json", Resource.from_contents(cardano, default_specification=DRAFT7)),
        ("ogmios.json", Resource.from_contents(ogmios, default_specification=DRAFT7)),
    ])

    def check(name: str, message: dict[str, Any]) -> None:
        errors = list(Draft7Validator({"$ref": f"ogmios.json#/properties/{name}"}, registry=registry)
                      .iter_errors(message))
        assert not errors, f"{version} {name}: {errors[0].message} at {list(errors[0].absolute_path)}"

    return check


@pytest.fixture(scope="module")
def validate():
    """validate(name, message): the message matches ``name`` in the v6.14 schema (chain sync's methods).

    (The v6.6 schema predates conway blocks in ``Block<Praos>``; the devnet is in conway.)
    """
    return _validator("v6.14")


class _Session:
    """One WebSocket: every request and its answer, validated against the schema."""

    def __init__(self, url: str, validate: Any) -> None:
        self.ws = connect(url, max_size=None).__enter__()
        self.validate = validate
        self.n = 0

    def ask(self, method: str, params: Any = None, *, schema: str | None = None,
            request_schema: str | None = None) -> dict[str, Any]:
        self.n += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self.n}
        if params is not None:
            request["params"] = params
        if request_schema:
            self.validate(request_schema, request)
        self.ws.send(json.dumps(request))
        reply = json.loads(self.ws.recv(timeout=10))
        assert reply["id"] == self.n and reply["method"] == method
        if schema:
            self.validate(schema, reply)
        return reply

    def close(self) -> None:
        self.ws.close()


def _pay(devnet: Any, n: int) -> list[str]:
    return [devnet.fund(new_key().address, 2_000_000 + i) for i in range(n)]


def test_find_intersection_and_next_block_walk_the_chain_with_every_transaction(devnet, validate):
    """From an intersection, nextBlock rolls back to it, then forward through each block with its txs."""
    start = devnet.node.tip()
    tx_ids = _pay(devnet, 3)
    session = _Session(devnet.ogmios_url, validate)
    try:
        found = session.ask("findIntersection", {"points": [{"slot": start.slot, "id": start.id}]},
                            schema="FindIntersectionResponse", request_schema="FindIntersection")
        tip = devnet.node.tip()
        assert found["result"] == {"intersection": {"slot": start.slot, "id": start.id},
                                   "tip": {"slot": tip.slot, "id": tip.id, "height": tip.height}}
        back = session.ask("nextBlock", schema="NextBlockResponse", request_schema="NextBlock")["result"]
        assert back["direction"] == "backward" and back["point"] == {"slot": start.slot, "id": start.id}
        seen, ancestor = [], start.id
        for _ in tx_ids:
            step = session.ask("nextBlock", schema="NextBlockResponse")["result"]
            assert step["direction"] == "forward"
            block = step["block"]
            assert block["ancestor"] == ancestor and block["era"] == "conway" and block["type"] == "praos"
            ancestor = block["id"]
            for tx in block["transactions"]:
                seen.append(tx["id"])
                assert tx["spends"] == "inputs" and tx["inputs"]
        assert seen == tx_ids and ancestor == tip.id
    finally:
        session.close()


def test_next_block_from_origin_and_unknown_points(devnet, validate):
    """Without findIntersection the cursor is at the origin; an unknown point answers 1000 with the tip."""
    _pay(devnet, 1)
    session = _Session(devnet.ogmios_url, validate)
    try:
        first = session.ask("nextBlock", schema="NextBlockResponse")["result"]
        assert first["direction"] == "backward" and first["point"] == "origin"
        genesis = session.ask("nextBlock", schema="NextBlockResponse")["result"]["block"]
        assert genesis["ancestor"] == "genesis" and genesis["height"] == 1
        missing = session.ask("findIntersection", {"points": [{"slot": 5, "id": "ab" * 32}]},
                              schema="FindIntersectionResponse")
        assert missing["error"]["code"] == 1000 and missing["error"]["data"]["tip"]["id"] == devnet.node.tip().id
        bad = session.ask("findIntersection", {"points": [{"slot": "x"}]})
        assert bad["error"]["code"] == -32602
        origin = session.ask("findIntersection", {"points": ["origin"]}, schema="FindIntersectionResponse")
        assert origin["result"]["intersection"] == "origin"
    finally:
        session.close()


def test_next_block_at_the_tip_waits_for_the_next_block(devnet, validate):
    """At the tip, nextBlock answers when a new block is made, as a node does (no polling)."""
    tip = devnet.node.tip()
    session = _Session(devnet.ogmios_url, validate)
    try:
        session.ask("findIntersection", {"points": [{"slot": tip.slot, "id": tip.id}]})
        session.ask("nextBlock")  # the roll backward to the intersection
        session.n += 1
        session.ws.send(json.dumps({"jsonrpc": "2.0", "method": "nextBlock", "id": session.n}))
        [tx_id] = _pay(devnet, 1)  # makes a block: the waiting request answers
        step = json.loads(session.ws.recv(timeout=10))
        validate("NextBlockResponse", step)
        assert [tx["id"] for tx in step["result"]["block"]["transactions"]] == [tx_id]
    finally:
        session.close()


def test_block_history_survives_a_devnet_restart(devnet_factory, tmp_path):
    """The blocks are saved with the chain: after a restart, chain sync still finds the old points."""
    from wallets.ogmios import OgmiosChain

    first = devnet_factory(state_dir=tmp_path)
    start = first.node.tip()
    [tx_id] = _pay(first, 1)
    first.stop()
    again = devnet_factory(state_dir=tmp_path)
    with OgmiosChain(again.ogmios_url) as chain:
        found = chain.find_transaction(tx_id, since=(start.slot, start.id))
    assert found.landed and found.block[1] == again.node.tip().id
