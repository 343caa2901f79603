"""Tests for ``labkit.core.cache``: the L2 cache ring, its backing store and the gateway L1."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

import pytest

from labkit.core.cache import (
    L1,
    L2,
    LAYERS,
    REPLICA,
    STORE,
    WRITE,
    CacheCluster,
    CacheConfig,
    CacheRead,
    CacheSamplers,
    GatewayCache,
    L1Config,
    key_movement,
)
from labkit.core.hashring import HashRing

RTT, STORE_READ, STORE_WRITE = 2.0, 10.0, 5.0  # ms


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(values: Iterable[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def const_samplers(rtt: float = RTT) -> CacheSamplers:
    return CacheSamplers(constant(rtt), constant(STORE_READ), constant(STORE_WRITE))


def cluster(samplers: CacheSamplers | None = None, **config: object) -> CacheCluster:
    return CacheCluster(CacheConfig(**config), samplers or const_samplers())  # type: ignore[arg-type]


def ms(result: CacheRead) -> float:
    return result.latency_s * 1000


# -- layers and latency -------------------------------------------------------------------------


def test_layer_codes_name_their_layers() -> None:
    assert [LAYERS[c] for c in (L1, L2, REPLICA, STORE)] == ["l1", "l2", "replica", "store"]


@pytest.mark.parametrize("replication", [1, 2, 3])
def test_miss_costs_one_rtt_per_node_plus_store_then_l2_hit_costs_one(replication: int) -> None:
    c = cluster(nodes=4, replication=replication)
    first = c.read("k", 0.0)
    assert first == CacheRead((RTT * replication + STORE_READ) / 1000, STORE, False)
    assert c.read("k", 1.0) == CacheRead(RTT / 1000, L2, False)
    names = c.preference_list("k")
    assert len(names) == replication and names[0] == c.ring.node_for("k")
    assert all(c.holds(n, "k") for n in names)  # the miss filled the whole preference list
    assert sum(c.node_sizes().values()) == replication
    assert c.counters["reads"] == 2 and c.counters["misses"] == 1 and c.counters["hits_l2"] == 1


@pytest.mark.parametrize("read_repair", [True, False])
def test_replica_hit_costs_two_rtts_and_read_repair_fills_the_primary(read_repair: bool) -> None:
    c = cluster(nodes=4, replication=2, read_repair=read_repair)
    c.read("k", 0.0)
    primary, replica = c.preference_list("k")
    c.fail_node(primary, 1.0)  # the replica is now the (warm) primary
    assert c.read("k", 2.0).layer == L2
    c.recover_node(primary, 3.0)  # back, empty, and the key's primary again
    assert c.preference_list("k") == (primary, replica)
    assert c.read("k", 4.0) == CacheRead(2 * RTT / 1000, REPLICA, False)
    assert c.holds(primary, "k") is read_repair
    assert c.counters["read_repairs"] == int(read_repair)
    assert c.read("k", 5.0).layer == (L2 if read_repair else REPLICA)


def test_read_repair_fills_every_node_asked_before_the_hit() -> None:
    c = cluster(nodes=5, replication=3)
    c.read("k", 0.0)
    p, r1, _r2 = c.preference_list("k")
    c.fail_node(p, 1.0)
    c.fail_node(r1, 1.0)
    c.recover_node(p, 2.0)
    c.recover_node(r1, 2.0)
    assert c.read("k", 3.0) == CacheRead(3 * RTT / 1000, REPLICA, False)
    assert c.counters["read_repairs"] == 2
    assert c.holds(p, "k") and c.holds(r1, "k")
    assert c.read("k", 4.0).layer == L2


# -- expiry -------------------------------------------------------------------------------------


def test_ttl_expiry_is_lazy_and_counts_every_expired_copy() -> None:
    c = cluster(nodes=3, replication=2, ttl_s=10.0)
    assert c.read("k", 0.0).layer == STORE
    assert c.read("k", 9.999).layer == L2
    assert c.counters["expirations"] == 0
    expired = c.read("k", 10.0)  # expires_at = 10.0: expired from then on
    assert expired == CacheRead((2 * RTT + STORE_READ) / 1000, STORE, False)
    assert c.counters["expirations"] == 2  # primary and replica, both found expired
    assert c.read("k", 19.0).layer == L2  # refilled at 10.0
    assert c.read("k", 20.0).layer == STORE


def test_no_ttl_means_entries_never_expire() -> None:
    c = cluster(nodes=2, replication=1, ttl_s=None)
    c.read("k", 0.0)
    assert c.read("k", 1e12).layer == L2
    assert c.counters["expirations"] == 0


def test_capacity_evictions_are_counted() -> None:
    c = cluster(nodes=1, replication=1, capacity=3)
    for i in range(5):
        c.read(f"k{i}", float(i))
    assert c.counters["evictions"] == 2
    assert c.node_sizes() == {"c-0": 3}
    assert c.read("k0", 9.0).layer == STORE  # the LRU victim


# -- writes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replication", "rtts", "quorum"),
    [
        (1, [4.0], 4.0),  # just the primary
        (2, [1.0, 9.0], 9.0),  # a majority of 2 is both
        (3, [1.0, 9.0, 4.0], 4.0),  # primary + fastest 1 replica
        (3, [7.0, 3.0, 2.0], 7.0),  # the primary is always waited for
        (4, [1.0, 9.0, 8.0, 3.0], 8.0),  # primary + fastest 2 of 3
        (5, [1.0, 9.0, 8.0, 3.0, 6.0], 6.0),  # primary + fastest 2 of 4
    ],
)
def test_write_waits_for_store_and_a_quorum(
    replication: int, rtts: list[float], quorum: float
) -> None:
    samplers = CacheSamplers(sequence(rtts), constant(STORE_READ), constant(STORE_WRITE))
    c = cluster(samplers, nodes=5, replication=replication)
    assert c.write("k", 0.0) * 1000 == pytest.approx(STORE_WRITE + quorum)
    assert c.store_version == {"k": 1}
    # every node of the preference list holds the new version, quorum or not
    names = c.preference_list("k")
    for name in names:
        c.fail_node(name, 1.0)
        c.recover_node(name, 1.0)
        assert c.store_version["k"] == 1


def test_write_updates_every_copy_so_the_l2_is_not_stale() -> None:
    c = cluster(nodes=4, replication=3, ttl_s=10.0)
    c.read("k", 0.0)
    c.write("k", 5.0)
    c.write("k", 6.0)
    assert c.store_version["k"] == 2
    assert c.read("k", 14.0) == CacheRead(RTT / 1000, L2, False)  # expiry reset by the write
    p = c.preference_list("k")[0]
    c.fail_node(p, 15.0)
    assert c.read("k", 15.0) == CacheRead(RTT / 1000, L2, False)  # the old replica had v2 too
    assert (c.counters["writes"], c.counters["stale_hits"]) == (2, 0)


def test_a_replica_left_behind_by_ring_changes_can_serve_a_stale_value() -> None:
    """Copies are versioned, not invalidated, so an orphan can come back into a preference list."""
    c = cluster(nodes=5, replication=2)
    key = "k"
    a, d, b = list(c.ring.walk(key))[:3]
    c.fail_node(d, 0.0)
    assert c.preference_list(key) == (a, b)
    c.read(key, 1.0)  # a, b hold v0
    c.recover_node(d, 2.0)  # the list is now (a, d): b's copy is an orphan
    c.write(key, 3.0)  # a, d hold v1
    c.fail_node(a, 4.0)
    c.fail_node(d, 4.0)
    assert c.preference_list(key)[0] == b
    assert c.read(key, 5.0) == CacheRead(RTT / 1000, L2, True)
    assert c.counters["stale_hits"] == 1


# -- the gateway L1 -----------------------------------------------------------------------------


def test_gateway_without_l1_passes_through() -> None:
    c = cluster(nodes=2, replication=1)
    g = GatewayCache(c, None)
    assert g.read("k", 0.0).layer == STORE
    assert g.read("k", 1.0).layer == L2
    assert g.write("k", 2.0) * 1000 == pytest.approx(STORE_WRITE + RTT)
    assert g.invalidate("*", 3.0) == 0
    assert g.counters == {
        "reads": 2,
        "hits_l1": 0,
        "stale_hits_l1": 0,
        "l1_evictions": 0,
        "l1_expirations": 0,
    }


def test_l1_hit_is_free_and_expires_after_its_ttl() -> None:
    c = cluster(nodes=2, replication=1)
    g = GatewayCache(c, L1Config(capacity=10, ttl_s=5.0))
    assert g.read("k", 0.0).layer == STORE
    assert g.read("k", 4.9) == CacheRead(0.0, L1, False)
    assert g.read("k", 5.0) == CacheRead(RTT / 1000, L2, False)
    assert g.read("k", 9.0).layer == L1
    assert (g.counters["hits_l1"], g.counters["l1_expirations"], c.counters["reads"]) == (2, 1, 2)


def test_l1_evictions_are_counted() -> None:
    c = cluster(nodes=2, replication=1)
    g = GatewayCache(c, L1Config(capacity=2, ttl_s=100.0, eviction="lfu"))
    for k in ["a", "a", "b", "c", "a"]:
        g.read(k, 0.0)
    assert g.counters["l1_evictions"] == 1  # c evicted b (a was hotter)
    assert g.read("a", 1.0).layer == L1
    assert g.read("b", 1.0).layer == L2


def test_other_gateways_l1_serves_stale_until_its_ttl() -> None:
    c = cluster(nodes=3, replication=2)
    g1 = GatewayCache(c, L1Config(ttl_s=5.0))
    g2 = GatewayCache(c, L1Config(ttl_s=5.0))
    assert g1.read("k", 0.0).layer == STORE
    assert g2.read("k", 0.0).layer == L2  # L1 filled with v0, expires at 5.0
    g1.write("k", 1.0)
    assert g1.read("k", 2.0) == CacheRead(0.0, L1, False)  # the writer's own L1 is updated
    assert g2.read("k", 2.0) == CacheRead(0.0, L1, True)  # stale: v0 < v1
    assert g2.read("k", 4.9).stale
    assert g2.read("k", 5.0) == CacheRead(RTT / 1000, L2, False)  # expired; v1 from L2
    assert g2.read("k", 6.0) == CacheRead(0.0, L1, False)
    assert (g2.counters["hits_l1"], g2.counters["stale_hits_l1"]) == (3, 2)
    assert (g1.counters["stale_hits_l1"], c.counters["stale_hits"]) == (0, 0)


def test_l1_hits_survive_a_dead_cluster_but_misses_raise() -> None:
    c = cluster(nodes=1, replication=1)
    g = GatewayCache(c, L1Config(ttl_s=5.0))
    g.read("k", 0.0)
    c.fail_node("c-0", 1.0)
    assert g.read("k", 2.0).layer == L1
    with pytest.raises(LookupError, match="no cache node is alive"):
        g.read("other", 2.0)


# -- invalidation -------------------------------------------------------------------------------


def test_invalidate_by_pattern_on_every_node_and_l1() -> None:
    c = cluster(nodes=4, replication=2)
    g1 = GatewayCache(c, L1Config(ttl_s=100.0))
    g2 = GatewayCache(c, L1Config(ttl_s=100.0))
    keys = ["user:1:a", "user:1:b", "user:2:a", "user:10:a"]
    for k in keys:
        g1.read(k, 0.0)
    g2.read("user:1:a", 0.0)
    assert c.invalidate("user:1:*", 1.0) == 4  # two keys × two copies
    assert g1.invalidate("user:1:*", 1.0) == 2
    assert g2.invalidate("user:1:*", 1.0) == 1
    assert c.counters["invalidated"] == 4
    assert g1.read("user:1:a", 2.0).layer == STORE  # refetched
    assert g1.read("user:1:a", 2.0).layer == L1
    assert g1.read("user:10:a", 2.0).layer == L1
    assert c.read("user:2:a", 2.0).layer == L2
    assert c.invalidate("user:?:a", 3.0) == 4  # user:1:a and user:2:a; not user:10:a
    assert c.invalidate("USER:*", 3.0) == 0  # case-sensitive
    assert c.invalidate("*", 3.0) == 2  # only user:10:a (two copies) is left
    assert sum(c.node_sizes().values()) == 0


def test_a_fill_after_invalidation_gets_the_current_version() -> None:
    c = cluster(nodes=2, replication=1)
    c.write("k", 0.0)
    c.write("k", 0.0)
    c.invalidate("k", 1.0)
    assert c.read("k", 2.0) == CacheRead((RTT + STORE_READ) / 1000, STORE, False)
    assert c.read("k", 3.0) == CacheRead(RTT / 1000, L2, False)


# -- membership and key movement ----------------------------------------------------------------


def test_key_movement_function() -> None:
    a = HashRing(["x", "y", "z"], 50)
    assert key_movement(a, HashRing(["x", "y", "z"], 50), ["k1", "k2"]) == 0.0
    assert key_movement(a, a, []) == 0.0
    assert key_movement(a, HashRing([], 50), ["k1", "k2", "k3"]) == 1.0
    keys = [f"k{i}" for i in range(3000)]
    owned_by_z = sum(a.node_for(k) == "z" for k in keys) / len(keys)
    assert key_movement(a, HashRing(["x", "y"], 50), keys) == owned_by_z


def test_fail_and_recover_move_about_one_nth_of_the_keys() -> None:
    c = cluster(nodes=8, replication=1)
    keys = [f"agent-{i}" for i in range(20_000)]
    for k in keys:
        c.read(k, 0.0)
    assert c.known_keys == 20_000
    owners = {k: c.ring.node_for(k) for k in keys}
    fails = []
    for name in c.node_names:
        owned = sum(o == name for o in owners.values()) / len(keys)
        moved = c.fail_node(name, 1.0)
        assert moved == owned  # exactly the failed node's keys, no others
        assert abs(moved - 1 / 8) < 0.04
        assert c.recover_node(name, 2.0) == moved  # and exactly those come back
        fails.append(moved)
    assert sum(fails) == pytest.approx(1.0)  # every key is owned by exactly one node


def test_after_a_failure_only_moved_keys_miss_and_replication_hides_it() -> None:
    for replication, expected_misses in ((1, "moved"), (2, "none")):
        c = cluster(nodes=4, replication=replication)
        keys = [f"k{i}" for i in range(2000)]
        for k in keys:
            c.read(k, 0.0)
        moved = c.fail_node("c-1", 1.0)
        layers = [c.read(k, 2.0).layer for k in keys]
        misses = layers.count(STORE)
        if expected_misses == "moved":
            assert misses == round(moved * len(keys)) > 0
        else:
            assert misses == 0 and layers.count(L2) == len(keys)  # the replica is the primary
        assert c.alive_nodes() == ("c-0", "c-2", "c-3")
        c.recover_node("c-1", 3.0)  # back empty: its keys miss (or hit a replica)
        layers = [c.read(k, 4.0).layer for k in keys]
        back = layers.count(STORE) + layers.count(REPLICA)
        assert back == round(moved * len(keys))
        assert layers.count(REPLICA) == (back if replication == 2 else 0)


def test_bad_node_names_and_empty_ring_raise_clear_errors() -> None:
    c = cluster(nodes=2, replication=1)
    with pytest.raises(ValueError, match=r"unknown cache node 'c-9'; nodes are c-0 \.\. c-1"):
        c.fail_node("c-9", 0.0)
    with pytest.raises(ValueError, match="unknown cache node 'x'"):
        c.recover_node("x", 0.0)
    with pytest.raises(ValueError, match="'c-0' is alive"):
        c.recover_node("c-0", 0.0)
    c.read("k", 0.0)
    assert c.fail_node("c-0", 1.0) in (0.0, 1.0)
    with pytest.raises(ValueError, match="'c-0' has already failed"):
        c.fail_node("c-0", 1.0)
    assert c.fail_node("c-1", 1.0) == 1.0  # no owner left for any key
    assert c.alive_nodes() == ()
    for call in (c.read, c.write):
        with pytest.raises(LookupError, match=r"no cache node is alive .*cache is unavailable"):
            call("k", 2.0)
    with pytest.raises(LookupError, match="no cache node is alive"):
        c.preference_list("k")
    assert c.store_version == {}  # the failed write changed nothing
    assert c.recover_node("c-1", 3.0) == 1.0
    assert c.read("k", 4.0).layer == STORE  # recovered empty


def test_replication_shrinks_to_the_alive_nodes() -> None:
    samplers = CacheSamplers(sequence([1.0, 2.0, 3.0]), constant(STORE_READ), constant(STORE_WRITE))
    c = cluster(samplers, nodes=3, replication=3)
    c.fail_node("c-0", 0.0)
    c.fail_node("c-2", 0.0)
    assert c.preference_list("k") == ("c-1",)
    assert c.write("k", 1.0) * 1000 == pytest.approx(STORE_WRITE + 1.0)  # only one RTT drawn
    assert c.read("k", 2.0) == CacheRead(2.0 / 1000, L2, False)


# -- workloads ----------------------------------------------------------------------------------


def zipf_keys(n: int, s: float = 1.0) -> tuple[list[str], list[float]]:
    keys = [f"obj-{i}" for i in range(n)]
    return keys, list(itertools.accumulate(1 / (i + 1) ** s for i in range(n)))


def hit_rates_around_a_failure(replication: int, seed: int = 11) -> list[float]:
    """Cluster hit rate per window of 500 zipf reads over a warm cache; c-1 fails after window 4."""
    rng = random.Random(seed)
    samplers = CacheSamplers(
        lambda: rng.uniform(0.5, 1.5), constant(STORE_READ), constant(STORE_WRITE)
    )
    c = cluster(samplers, nodes=4, replication=replication, ttl_s=None)
    keys, cum = zipf_keys(3000)
    for k in keys:  # warm: every key cached, so the steady hit rate is 1
        c.read(k, 0.0)
    rates, now = [], 0.0
    for window in range(20):
        if window == 5:
            c.fail_node("c-1", now)
        hits = 0
        for k in rng.choices(keys, cum_weights=cum, k=500):
            now += 0.001
            hits += c.read(k, now).layer != STORE
        rates.append(hits / 500)
    assert c.counters["stale_hits"] == 0  # no writes, never stale
    return rates


def test_hit_rate_dips_after_a_failure_and_recovers_after_refill() -> None:
    rates = hit_rates_around_a_failure(replication=1)
    before = sum(rates[:5]) / 5
    right_after = rates[5]
    later = sum(rates[15:]) / 5
    assert before == 1.0
    assert right_after < before - 0.08  # ≈ a quarter of the keys went cold; hot ones refill fast
    assert later > right_after + 0.05  # refilled on the surviving nodes
    assert later > sum(rates[6:10]) / 4  # still climbing: the cold tail refills slowly
    # a replica on the next node hides the dip entirely: it becomes the warm primary
    assert min(hit_rates_around_a_failure(replication=2)) == 1.0


def scan_workload(policy: str) -> float:
    rng = random.Random(5)
    c = cluster(nodes=1, replication=1, capacity=100, eviction=policy, ttl_s=None)
    keys, cum = zipf_keys(400, s=1.1)
    stream = rng.choices(keys, cum_weights=cum, k=5000)
    stream += [f"scan-{i}" for i in range(1000)]  # a one-off scan (e.g. a batch export)
    stream += rng.choices(keys, cum_weights=cum, k=5000)
    hits = sum(c.read(k, float(t)).layer != STORE for t, k in enumerate(stream))
    return hits / len(stream)


def test_lfu_beats_lru_on_a_skewed_workload_with_a_scan() -> None:
    assert scan_workload("lfu") > scan_workload("lru")


def test_runs_are_deterministic() -> None:
    assert hit_rates_around_a_failure(1, seed=3) == hit_rates_around_a_failure(1, seed=3)


# -- what one request does: the read/write mix and the bypass ------------------------------------
def test_access_follows_the_mix_and_bypasses_a_dead_cache() -> None:
    c = cluster(nodes=1, replication=1, read_fraction=0.5, write_fraction=0.2)
    g = GatewayCache(c, None)
    assert g.access("k", 0.0, 0.1).layer == WRITE  # coin < write_fraction
    read = g.access("k", 0.0, 0.3)  # within 0.2 + 0.8 * 0.5 = 0.6: a read
    assert read is not None and read.layer != WRITE and not read.unavailable
    assert g.access("k", 0.0, 0.7) is None  # neither
    c.fail_node("c-0", 1.0)
    down = g.access("k", 1.0, 0.3)
    assert down is not None and down.unavailable
    assert down.latency_s * 1000 == STORE_READ
    version = c.store_version.get("k", 0)
    down_write = g.access("k", 1.0, 0.1)
    assert down_write is not None and down_write.unavailable
    assert down_write.latency_s * 1000 == STORE_WRITE
    assert c.store_version["k"] == version + 1  # the store still took the write
