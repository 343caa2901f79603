"""AutoGen-style agent ids, topics and subscriptions, with an index for fan-out.

Semantics follow autogen-core: an RPC goes to one ``AgentId(type, key)``; a published event on
``TopicId(type, source)`` reaches, for every matching subscription, ``AgentId(agent_type,
source)``. ``TypeSubscription`` matches a topic type exactly, ``TypePrefixSubscription`` by
prefix. Recipients are unique: two subscriptions mapping a topic to the same agent type deliver
once, which is what lets the gateway choose one worker per recipient (a worker given the event
would otherwise deliver it to its own copy of the agent too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class AgentId(NamedTuple):
    type: str
    key: str

    def __str__(self) -> str:
        return f"{self.type}/{self.key}"


class TopicId(NamedTuple):
    type: str
    source: str


@dataclass(frozen=True, slots=True)
class TypeSubscription:
    topic_type: str
    agent_type: str
    id: str = ""

    def matches(self, topic_type: str) -> bool:
        return topic_type == self.topic_type

    @property
    def identity(self) -> tuple[str, str, str]:
        return ("type", self.topic_type, self.agent_type)


@dataclass(frozen=True, slots=True)
class TypePrefixSubscription:
    topic_type_prefix: str
    agent_type: str
    id: str = ""

    def matches(self, topic_type: str) -> bool:
        return topic_type.startswith(self.topic_type_prefix)

    @property
    def identity(self) -> tuple[str, str, str]:
        return ("prefix", self.topic_type_prefix, self.agent_type)


Subscription = TypeSubscription | TypePrefixSubscription


class SubscriptionIndex:
    """Subscriptions by identity, with a per-topic-type cache of subscribed agent types.

    Adding a subscription that already exists (same kind, topic and agent type — e.g. from a
    second worker hosting the same type) returns the existing one instead of failing, unlike
    AutoGen's host.
    """

    def __init__(self) -> None:
        self._by_identity: dict[tuple[str, str, str], Subscription] = {}
        self._by_id: dict[str, Subscription] = {}
        self._cache: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_identity)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_identity.values())

    def add(self, subscription: Subscription) -> Subscription:
        existing = self._by_identity.get(subscription.identity)
        if existing is not None:
            return existing
        if subscription.id and subscription.id in self._by_id:
            raise ValueError(f"subscription id {subscription.id!r} is already used")
        self._by_identity[subscription.identity] = subscription
        if subscription.id:
            self._by_id[subscription.id] = subscription
        self._cache.clear()
        return subscription

    def remove(self, subscription_id: str) -> Subscription:
        subscription = self._by_id.pop(subscription_id, None)
        if subscription is None:
            raise KeyError(f"no subscription with id {subscription_id!r}")
        del self._by_identity[subscription.identity]
        self._cache.clear()
        return subscription

    def agent_types_for(self, topic_type: str) -> tuple[str, ...]:
        """Agent types subscribed to a topic type, each once, in subscription order."""
        types = self._cache.get(topic_type)
        if types is None:
            types = tuple(
                dict.fromkeys(
                    s.agent_type for s in self._by_identity.values() if s.matches(topic_type)
                )
            )
            self._cache[topic_type] = types
        return types

    def recipients(self, topic: TopicId) -> list[AgentId]:
        return [AgentId(t, topic.source) for t in self.agent_types_for(topic.type)]
