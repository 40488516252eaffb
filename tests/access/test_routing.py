"""Picking an instance by prompt prefix: consistent hashing with bounded load (pure; the hit rates
against vLLM's own prefix-cache counters are measured by bench/serving.py)."""

from __future__ import annotations

import random

from access.gateway import routes
from fleet.deployments.choices import Routing


def _route(n: int, routing: str = Routing.PREFIX) -> routes.Route:
    upstreams = [routes.Upstream(100 + i, f"http://127.0.0.1:{9000 + i}") for i in range(n)]
    return routes.Route(1, "chat", 1, 0, "llama", upstreams, routing=routing)


def _chat(system: str, user: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


SYSTEMS = [f"You are assistant number {i}. " + "Follow the house style guide closely. " * 40 for i in range(8)]


def test_calls_sharing_a_prefix_go_to_one_instance_and_prefixes_spread_over_all():
    route = _route(3)
    owner = {}
    for system in SYSTEMS:
        picked = {route.pick(set(), routes.prefix_key(_chat(system, f"question {q}"))).instance_id for q in range(20)}
        assert len(picked) == 1  # short user turns after a long shared prompt: one instance
        owner[system] = picked.pop()
    assert len(set(owner.values())) >= 2  # eight prefixes do not all land on one instance
    # Another gateway process (a fresh table, same instances) sends each prefix to the same one.
    again = _route(3)
    assert all(again.pick(set(), routes.prefix_key(_chat(s, "hi"))).instance_id == owner[s] for s in SYSTEMS)


def test_a_busy_owner_passes_calls_on_and_a_lost_instance_moves_only_its_own_prefixes():
    route = _route(3)
    key = routes.prefix_key(_chat(SYSTEMS[0], "hi"))
    owner = route.pick(set(), key)
    owner.outstanding = 10  # far over 1.25 × the mean load
    other = route.pick(set(), key)
    assert other is not owner and other is not None
    owner.outstanding = 0
    # Least busy takes over where the deployment does not route by prefix, or without text.
    owner.outstanding = 1
    assert route.pick(set(), None) is not owner
    owner.outstanding = 0
    assert _route(3, Routing.LEAST_BUSY).pick(set(), key).instance_id == 100
    assert routes.prefix_key({"messages": []}) is None
    # Removing one instance moves only the prefixes it owned (consistent hashing).
    prefixes = [routes.prefix_key(_chat(f"{random.random()}", "x")) for _ in range(300)]
    before = {k: route.pick(set(), k).instance_id for k in prefixes}
    smaller = routes.Route(1, "chat", 1, 0, "llama", route.upstreams[:2], routing=Routing.PREFIX)
    after = {k: smaller.pick(set(), k).instance_id for k in prefixes}
    assert all(after[k] == before[k] for k in prefixes if before[k] != 102)
    assert 40 < sum(1 for k in prefixes if before[k] == 102) < 160  # about a third each


def test_the_prefix_is_the_conversations_start_in_text_parts_or_a_prompt():
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "image_url"}]}]}
    assert routes.prefix_key(parts) == routes.prefix_key({"messages": [{"role": "user", "content": "Hello"}]})
    assert routes.prefix_key({"prompt": "Hello"}) is not None
    long = "x" * routes.PREFIX_CHARS
    assert routes.prefix_key(_chat(long, "one")) == routes.prefix_key(_chat(long, "two"))  # only the start counts
    assert isinstance(routes.prefix_key({"messages": "not a list"}), int)  # odd input: still a key, no error
    assert routes.prefix_key({"messages": [None, 3, {"content": None}]}) is None


def test_the_owner_keeps_a_prefix_up_to_the_bound_of_its_share():
    route = _route(2)
    key = routes.prefix_key(_chat(SYSTEMS[1], "hi"))
    owner = route.pick(set(), key)
    other = next(u for u in route.upstreams if u is not owner)
    other.outstanding = 1
    for load, expected in ((2, owner), (3, owner), (4, other)):  # bound: ceil(1.25 × (load + 1 + 1) / 2)
        owner.outstanding = load
        assert route.pick(set(), key) is expected, load
    # Under MIN_BOUND calls the owner keeps its prefix however idle the others are (the mean bound
    # alone would pass the 4th of 4 calls on 2 instances to a cold cache).
    other.outstanding = 0
    owner.outstanding = routes.MIN_BOUND - 1
    assert route.pick(set(), key) is owner
    owner.outstanding = routes.MIN_BOUND
    assert route.pick(set(), key) is other
    # A reload that keeps the same instances keeps their ring (it is not rebuilt on the event loop).
    ring = route.ring()
    fresh = routes.Route(
        1, "chat", 1, 0, "llama", [routes.Upstream(u.instance_id, u.base_url) for u in route.upstreams]
    )
    merged = routes.merge({"chat": route}, {"chat": fresh})["chat"]
    assert merged.ring() is ring
