"""A consistent-hash ring with virtual nodes.

Used for agent-key affinity in the balancer and (later) for the distributed cache ring. Hashes
must be the same in every process and run, so Python's salted ``hash()`` is out; blake2b gives a
well-spread 64-bit value.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Iterator
from functools import lru_cache
from hashlib import blake2b


@lru_cache(maxsize=1 << 16)
def hash64(value: str) -> int:
    """A stable 64-bit hash of a string (memoised: agent keys repeat a lot)."""
    return int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Nodes placed at ``vnodes`` points each; a key belongs to the first node clockwise."""

    def __init__(self, nodes: Iterable[Hashable], vnodes: int = 100) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.nodes: tuple[Hashable, ...] = tuple(dict.fromkeys(nodes))
        self.vnodes = vnodes
        points = sorted(
            (hash64(f"{node}#{v}"), i) for i, node in enumerate(self.nodes) for v in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [self.nodes[i] for _, i in points]

    def __len__(self) -> int:
        return len(self.nodes)

    def node_for(self, key: str) -> Hashable:
        if not self._hashes:
            raise LookupError("the hash ring is empty")
        i = bisect.bisect(self._hashes, hash64(key))
        return self._owners[i if i < len(self._owners) else 0]

    def walk(self, key: str) -> Iterator[Hashable]:
        """Distinct nodes in ring order starting at the key's owner (for skipping/fallback)."""
        owners = self._owners
        n = len(owners)
        if n == 0:
            return
        start = bisect.bisect(self._hashes, hash64(key))
        seen: set[Hashable] = set()
        for step in range(n):
            node = owners[(start + step) % n]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == len(self.nodes):
                    return
