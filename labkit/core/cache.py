"""A distributed cache in front of a slower backing store, with an optional per-gateway L1.

Why model it: agents read shared objects (memories, tool results, plans) on most requests, and
whether those reads cost a sub-millisecond cache hop or a backing-store round trip shapes the
tail latency the rest of the lab measures. The interesting behaviour is not the steady state but
what happens around events: a cache node dying, a burst of writes, a bulk invalidation, a scan.

*The L2 ring* (``CacheCluster``). Keys are spread over the cache nodes with a consistent-hash
ring (``HashRing``, ``vnodes`` points per node) so that losing or adding one of n nodes moves
only ≈ 1/n of the keys; modulo hashing would move almost all of them and empty the cache at
once. A key's *preference list* is the first ``replication`` distinct alive nodes clockwise
from it; the first is its primary. Each node has its own bounded store (``eviction``: LRU or
LFU) of ``Entry(version, expires_at)``.

* Read: ask the primary, then each replica in order, one ``node_rtt`` each (sequential, as a
  client library falls back). A replica hit is *read-repaired* onto the nodes asked before it
  that missed (off the critical path); a miss everywhere reads the backing store and fills the
  whole preference list with the store's current version (also asynchronous). Replication thus
  buys availability after a node failure (the preference list shifts by one and the old first
  replica becomes the primary, still warm) at the cost of capacity and write fan-out.
* Write (write-through): bump the store's version, then update every node of the preference
  list. The caller waits for the store write plus a *quorum*: the primary and enough of the
  fastest replicas that a majority of the list has acknowledged, i.e. ⌊r/2⌋ replicas for a list
  of r nodes (r = 3: the fastest 1, r = 5: the fastest 2, r = 1: none). The others catch up
  asynchronously. The cluster updates every copy on the key's current nodes, so the L2 is stale
  only through node churn: a copy left on a node that dropped out of the key's list can come
  back into it after later failures and be served (counted as a stale hit). Otherwise
  staleness comes from L1.
* Expiry is lazy: an expired entry is deleted (and counted) when a read finds it, which is how
  real caches avoid a timer per key. ``ttl_s=None`` means entries never expire.
* Node failure drops the node's contents (a restarted cache node is cold) and rebuilds the ring
  over the survivors; recovery re-adds it *empty*, so the keys that move back miss until
  refilled. Both report the fraction of keys the cluster has seen whose primary changed.
* With no alive node, ``read`` and ``write`` raise ``LookupError`` before changing any state:
  the driver then treats the cache as unavailable and calls ``bypass``, which reads or writes
  the backing store directly.

*The L1* (``GatewayCache``). Each gateway may keep a small in-process cache in front of the
ring: a hit costs nothing (no network hop), but nothing tells it about another gateway's write,
so it serves the old version until its own TTL runs out. That bounded staleness window
(``l1.ttl_s``) is the classic trade-off the lab exposes: ``stale_hits_l1`` counts it. A gateway's
own writes update its own L1 (write-allocate), so a client sees its own writes through the same
gateway. Invalidation reaches L1 only through ``GatewayCache.invalidate``: the driver calls the
cluster once and every gateway's L1 once, mirroring a broadcast purge.

*Staleness* is judged against ``store_version``, the backing store's current version of each key
(0 for a key never written; a fill of such a key stores version 0), so a run without writes never
reports a stale read.

Like the rest of ``labkit.core`` this is sans-I/O: latencies come from the caller's samplers (in
milliseconds, returned in seconds), time from the caller's ``now``, and there is no other
randomness. Iteration orders come from dicts and lists, never sets, so runs do not depend on
hash seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from labkit.core.eviction import LfuStore, LruStore, make_store
from labkit.core.hashring import HashRing

EVICTION_POLICIES = ("lru", "lfu")


@dataclass(frozen=True)
class L1Config:
    """A small in-process cache in each gateway, in front of the shared L2 ring."""

    capacity: int = 1000
    ttl_s: float = 5.0
    eviction: str = "lru"

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {self.ttl_s}")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(
                f"eviction must be one of {', '.join(EVICTION_POLICIES)}, got {self.eviction!r}"
            )


@dataclass(frozen=True)
class CacheConfig:
    """The L2 ring: ``nodes`` cache nodes, each key stored on ``replication`` of them."""

    nodes: int = 4
    vnodes: int = 100
    replication: int = 2  # copies of each key: its primary plus replication - 1 replicas
    capacity: int = 10_000  # entries per node
    eviction: str = "lru"
    ttl_s: float | None = 60.0  # None: entries never expire
    read_repair: bool = True
    l1: L1Config | None = None
    #: fraction of requests whose handling reads the request key's object through the cache
    read_fraction: float = 1.0
    #: fraction of requests that update the object (write-through: store, then cache quorum)
    write_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {self.vnodes}")
        if not 1 <= self.replication <= self.nodes:
            raise ValueError(
                f"replication must be between 1 and nodes ({self.nodes}), got {self.replication}"
            )
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(
                f"eviction must be one of {', '.join(EVICTION_POLICIES)}, got {self.eviction!r}"
            )
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {self.ttl_s}")
        for name in ("read_fraction", "write_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class CacheSamplers:
    """One draw (milliseconds) per call: a gateway↔cache-node round trip, a backing-store read,
    a backing-store write."""

    node_rtt: Callable[[], float]
    store_read: Callable[[], float]
    store_write: Callable[[], float]


# -- results ------------------------------------------------------------------------------------

#: layer codes, stored as ints in result columns; ``LAYERS[code]`` is the name
L1, L2, REPLICA, STORE = 0, 1, 2, 3
LAYERS = ("l1", "l2", "replica", "store")


@dataclass(slots=True)
class Entry:
    """One cached copy: the store version it holds and when it expires (``inf``: never).

    Entries are replaced, never mutated, so one object may safely sit on several nodes.
    """

    version: int
    expires_at: float


#: layer code of a write in access logs (reads use L1..STORE)
WRITE = -1


@dataclass(frozen=True, slots=True)
class CacheAccess:
    latency_s: float
    layer: int  # L1, L2, REPLICA, STORE for a read; WRITE for an update
    stale: bool
    unavailable: bool  # no cache node was alive: the backing store answered directly


@dataclass(frozen=True, slots=True)
class CacheRead:
    """The outcome of one read: how long it took, where the value came from, and whether it is
    older than the backing store's current version."""

    latency_s: float
    layer: int
    stale: bool


_L1_FRESH = CacheRead(0.0, L1, False)  # L1 hits cost nothing; share the two possible results
_L1_STALE = CacheRead(0.0, L1, True)

_CLUSTER_COUNTERS = (
    "reads",  # reads that reached the cluster
    "hits_l2",  # served by the key's primary
    "hits_replica",  # served by a replica after the primary missed
    "misses",  # served by the backing store
    "stale_hits",  # cluster hits older than the store's version
    "writes",
    "read_repairs",  # node copies written by read repair (one per node repaired)
    "evictions",  # capacity evictions, over all nodes
    "expirations",  # expired entries found (and dropped) by reads
    "invalidated",  # entries dropped by invalidate(), over all nodes
)
_GATEWAY_COUNTERS = ("reads", "hits_l1", "stale_hits_l1", "l1_evictions", "l1_expirations")


def _drop_matching(store: LruStore | LfuStore, pattern: str) -> int:
    """Delete the store's keys matching the glob ``pattern``; ``keys()`` is a snapshot."""
    snapshot = store.keys()
    removed = 0
    for key in snapshot:
        if fnmatchcase(key, pattern):
            store.delete(key)
            removed += 1
    return removed


def _owner(ring: HashRing, key: str) -> object:
    """The key's primary on ``ring``, or None if the ring is empty (every key then 'moved')."""
    return ring.node_for(key) if len(ring) else None


def key_movement(before: HashRing, after: HashRing, keys: Iterable[str]) -> float:
    """The fraction of ``keys`` whose owner differs between two rings (0.0 for no keys).

    An empty ring owns nothing, so every key counts as moved to or from it.
    """
    moved = total = 0
    for key in keys:
        total += 1
        if _owner(before, key) != _owner(after, key):
            moved += 1
    return moved / total if total else 0.0


# -- the L2 ring --------------------------------------------------------------------------------


class CacheCluster:
    """The shared L2: ``config.nodes`` cache nodes on a consistent-hash ring, plus the backing
    store's versions. See the module docstring for the read, write and failure semantics.

    Read-only attributes: ``config``, ``node_names`` ("c-0" .. "c-{n-1}"), ``store_version``
    (key → the store's current version; absent means 0), ``counters`` (meanings beside
    ``_CLUSTER_COUNTERS``), ``ring`` (the current ``HashRing`` over alive nodes) and
    ``last_version`` (the version of the value returned by the latest ``read``, which
    ``GatewayCache`` copies into its L1).
    """

    __slots__ = (
        "_alive",
        "_prefs",
        "_r",
        "_read_repair",
        "_rtt",
        "_seen",
        "_store_read",
        "_store_write",
        "_stores",
        "_ttl",
        "config",
        "counters",
        "last_version",
        "node_names",
        "ring",
        "samplers",
        "store_version",
    )

    def __init__(self, config: CacheConfig, samplers: CacheSamplers) -> None:
        self.config = config
        self.samplers = samplers
        self.node_names: tuple[str, ...] = tuple(f"c-{i}" for i in range(config.nodes))
        self._stores: dict[str, LruStore | LfuStore] = {
            name: make_store(config.eviction, config.capacity) for name in self.node_names
        }
        self._alive: dict[str, None] = dict.fromkeys(self.node_names)  # ordered set
        self.ring = HashRing(self._alive, config.vnodes)
        self._prefs: dict[str, tuple[LruStore | LfuStore, ...]] = {}  # memo; reset on ring change
        self._seen: dict[str, None] = {}  # every key read or written, in first-seen order
        self.store_version: dict[str, int] = {}
        self.counters: dict[str, int] = dict.fromkeys(_CLUSTER_COUNTERS, 0)
        self.last_version = 0
        self._r = config.replication
        self._ttl = math.inf if config.ttl_s is None else config.ttl_s
        self._read_repair = config.read_repair
        self._rtt = samplers.node_rtt
        self._store_read = samplers.store_read
        self._store_write = samplers.store_write

    # -- preference lists -----------------------------------------------------------------------

    def _preference(self, key: str) -> tuple[LruStore | LfuStore, ...]:
        """The stores of the key's preference list (memoised until the ring changes)."""
        prefs = self._prefs.get(key)
        if prefs is not None:
            return prefs
        if not self._alive:
            raise LookupError(
                f"no cache node is alive (all of {', '.join(self.node_names)} failed): "
                "the cache is unavailable"
            )
        stores = self._stores
        r = self._r
        out = []
        for name in self.ring.walk(key):
            out.append(stores[name])  # type: ignore[index]
            if len(out) == r:
                break
        prefs = self._prefs[key] = tuple(out)
        self._seen[key] = None
        return prefs

    def preference_list(self, key: str) -> tuple[str, ...]:
        """Names of the key's primary and replicas among alive nodes (fewer than
        ``replication`` when fewer nodes are alive). Raises ``LookupError`` if none is."""
        if not self._alive:
            raise LookupError("no cache node is alive: the cache is unavailable")
        walk = self.ring.walk(key)
        return tuple(str(next(walk)) for _ in range(min(self._r, len(self._alive))))

    # -- reads and writes -----------------------------------------------------------------------

    def _fresh(self, store: LruStore | LfuStore, key: str, now: float) -> Entry | None:
        """The node's unexpired entry for ``key``; an expired one is dropped and counted."""
        entry = store.get(key)
        if entry is not None and entry.expires_at <= now:
            store.delete(key)
            self.counters["expirations"] += 1
            return None
        return entry

    def _put(self, store: LruStore | LfuStore, key: str, entry: Entry) -> None:
        if store.put(key, entry) is not None:
            self.counters["evictions"] += 1

    def read(self, key: str, now: float) -> CacheRead:
        """Read ``key`` through the ring: primary, then replicas, then the backing store."""
        prefs = self._preference(key)
        counters = self.counters
        counters["reads"] += 1
        rtt = self._rtt
        latency_ms = rtt()
        entry = self._fresh(prefs[0], key, now)
        if entry is not None:
            counters["hits_l2"] += 1
            layer = L2
        else:
            for i in range(1, len(prefs)):
                latency_ms += rtt()
                entry = self._fresh(prefs[i], key, now)
                if entry is not None:
                    counters["hits_replica"] += 1
                    layer = REPLICA
                    if self._read_repair:  # every node asked before this one missed
                        for store in prefs[:i]:
                            self._put(store, key, entry)
                        counters["read_repairs"] += i
                    break
            else:
                latency_ms += self._store_read()
                counters["misses"] += 1
                entry = Entry(self.store_version.get(key, 0), now + self._ttl)
                for store in prefs:
                    self._put(store, key, entry)
                self.last_version = entry.version
                return CacheRead(latency_ms / 1000.0, STORE, False)
        version = entry.version
        self.last_version = version
        stale = version < self.store_version.get(key, 0)
        if stale:
            counters["stale_hits"] += 1
        return CacheRead(latency_ms / 1000.0, layer, stale)

    def write(self, key: str, now: float) -> float:
        """Write-through update of ``key``: the store's version goes up by one and every node of
        the preference list gets it; returns the store write plus the quorum's acknowledgement
        time (primary and the fastest ⌊r/2⌋ replicas, one RTT drawn per node in list order)."""
        prefs = self._preference(key)
        self.counters["writes"] += 1
        version = self.store_version.get(key, 0) + 1
        self.store_version[key] = version
        latency_ms = self._store_write()
        rtt = self._rtt
        ack_ms = rtt()  # the primary always acknowledges
        n = len(prefs)
        if n > 1:
            replicas = sorted(rtt() for _ in range(n - 1))
            need = n // 2  # replicas that, with the primary, make a majority of the list
            ack_ms = max(ack_ms, replicas[need - 1])
        entry = Entry(version, now + self._ttl)
        for store in prefs:
            self._put(store, key, entry)
        return (latency_ms + ack_ms) / 1000.0

    def bypass(self, key: str, now: float, *, write: bool) -> float:
        """The cache is unavailable (no node alive, ``read``/``write`` raised ``LookupError``):
        go straight to the backing store. A write still changes the store's version, so copies
        that come back later are judged stale against it. Returns the store's latency."""
        self.counters["bypassed"] = self.counters.get("bypassed", 0) + 1
        if write:
            self.store_version[key] = self.store_version.get(key, 0) + 1
            return self._store_write() / 1000.0
        return self._store_read() / 1000.0

    def invalidate(self, pattern: str, now: float) -> int:
        """Drop every entry whose key matches the glob ``pattern`` (``fnmatchcase``) on every
        node; returns the number of copies dropped. Immediate, so ``now`` is unused (kept for
        the driver's uniform call shape)."""
        removed = 0
        for name in self._alive:
            removed += _drop_matching(self._stores[name], pattern)
        self.counters["invalidated"] += removed
        return removed

    # -- membership -----------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if name not in self._stores:
            raise ValueError(
                f"unknown cache node {name!r}; nodes are {self.node_names[0]} .. "
                f"{self.node_names[-1]}"
            )

    def _rebuild(self) -> HashRing:
        before = self.ring
        self.ring = HashRing(
            [name for name in self.node_names if name in self._alive], self.config.vnodes
        )
        self._prefs.clear()
        return before

    def fail_node(self, name: str, now: float) -> float:
        """Take ``name`` off the ring and lose its contents; returns the fraction of seen keys
        whose primary moved (≈ 1/n of them with n alive nodes before)."""
        self._check_name(name)
        if name not in self._alive:
            raise ValueError(f"cache node {name!r} has already failed")
        del self._alive[name]
        self._stores[name].clear()
        before = self._rebuild()
        return key_movement(before, self.ring, self._seen)

    def recover_node(self, name: str, now: float) -> float:
        """Put ``name`` back on the ring, empty; returns the fraction of seen keys whose primary
        moved (back) to it."""
        self._check_name(name)
        if name in self._alive:
            raise ValueError(f"cache node {name!r} is alive; only a failed node can recover")
        self._alive[name] = None
        before = self._rebuild()
        return key_movement(before, self.ring, self._seen)

    def alive_nodes(self) -> tuple[str, ...]:
        """Alive node names, in node order."""
        return tuple(name for name in self.node_names if name in self._alive)

    # -- inspection (no side effects on recency or counts) --------------------------------------

    def holds(self, name: str, key: str) -> bool:
        """Whether node ``name`` holds an entry for ``key`` (expired or not)."""
        self._check_name(name)
        return key in self._stores[name]

    def node_sizes(self) -> dict[str, int]:
        """Entries held per node (failed nodes hold none)."""
        return {name: len(self._stores[name]) for name in self.node_names}

    @property
    def known_keys(self) -> int:
        """How many distinct keys have been read or written (the base of key movement)."""
        return len(self._seen)


# -- the per-gateway L1 -------------------------------------------------------------------------


class GatewayCache:
    """One gateway's view of the cache: its optional L1 in front of the shared cluster.

    Without an L1 every call goes straight to the cluster. With one, a fresh L1 entry answers a
    read at latency 0 (possibly stale: other gateways' writes do not reach it), and every read
    that went to the cluster fills the L1 with the version it returned, expiring ``l1.ttl_s``
    later. L1 hits keep working while no cache node is alive; misses raise ``LookupError``.
    """

    __slots__ = ("_l1", "_ttl", "cluster", "counters", "l1")

    def __init__(self, cluster: CacheCluster, l1: L1Config | None) -> None:
        self.cluster = cluster
        self.l1 = l1
        self._l1 = None if l1 is None else make_store(l1.eviction, l1.capacity)
        self._ttl = math.inf if l1 is None else l1.ttl_s
        self.counters: dict[str, int] = dict.fromkeys(_GATEWAY_COUNTERS, 0)

    def read(self, key: str, now: float) -> CacheRead:
        """L1 first (latency 0 on a hit), then ``cluster.read``; fills L1 on the way back."""
        counters = self.counters
        counters["reads"] += 1
        l1 = self._l1
        if l1 is None:
            return self.cluster.read(key, now)
        entry = l1.get(key)
        if entry is not None:
            if entry.expires_at > now:
                counters["hits_l1"] += 1
                if entry.version < self.cluster.store_version.get(key, 0):
                    counters["stale_hits_l1"] += 1
                    return _L1_STALE
                return _L1_FRESH
            l1.delete(key)
            counters["l1_expirations"] += 1
        cluster = self.cluster
        result = cluster.read(key, now)
        if l1.put(key, Entry(cluster.last_version, now + self._ttl)) is not None:
            counters["l1_evictions"] += 1
        return result

    def write(self, key: str, now: float) -> float:
        """``cluster.write``, then this gateway's L1 holds the new version (write-allocate);
        other gateways' L1 copies stay until their TTL: the L1 staleness trade-off."""
        cluster = self.cluster
        latency_s = cluster.write(key, now)
        l1 = self._l1
        if (
            l1 is not None
            and l1.put(key, Entry(cluster.store_version[key], now + self._ttl)) is not None
        ):
            self.counters["l1_evictions"] += 1
        return latency_s

    def access(self, key: str, now: float, coin: float) -> CacheAccess | None:
        """What one request does with the cache, by the config's mix: with probability
        ``write_fraction`` a write-through update, else with probability ``read_fraction`` a
        read, else nothing (None). ``coin`` is the caller's uniform draw. With no cache node
        alive the request goes straight to the backing store (``unavailable``)."""
        config = self.cluster.config
        write_p = config.write_fraction
        write = coin < write_p
        if not write and coin >= write_p + (1 - write_p) * config.read_fraction:
            return None
        try:
            if write:
                return CacheAccess(self.write(key, now), WRITE, False, False)
            res = self.read(key, now)
            return CacheAccess(res.latency_s, res.layer, res.stale, False)
        except LookupError:
            latency = self.cluster.bypass(key, now, write=write)
            return CacheAccess(latency, WRITE if write else STORE, False, True)

    def invalidate(self, pattern: str, now: float) -> int:
        """Drop this L1's entries matching the glob ``pattern``; returns how many. The driver
        calls ``cluster.invalidate`` once and this on every gateway."""
        l1 = self._l1
        if l1 is None:
            return 0
        return _drop_matching(l1, pattern)
