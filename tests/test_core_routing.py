"""Tests for ``labkit.core.routing``: subscriptions and the fan-out index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.routing import (
    AgentId,
    SubscriptionIndex,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=80)


def test_agent_and_topic_ids() -> None:
    agent = AgentId("planner", "session-1")
    assert str(agent) == "planner/session-1"
    assert agent.type == "planner" and agent.key == "session-1"
    topic = TopicId("news", "src")
    assert topic.type == "news" and topic.source == "src"
    assert AgentId("a", "b") == AgentId("a", "b") and hash(agent) == hash(AgentId(*agent))


def test_type_subscription_matches_exactly() -> None:
    s = TypeSubscription("news", "reader")
    assert s.matches("news")
    assert not s.matches("news.sports")
    assert not s.matches("new")
    assert not s.matches("")
    assert s.identity == ("type", "news", "reader")


def test_type_prefix_subscription_matches_by_prefix() -> None:
    s = TypePrefixSubscription("news.", "reader")
    assert s.matches("news.")
    assert s.matches("news.sports")
    assert not s.matches("news")
    assert not s.matches("sports.news.")
    assert s.identity == ("prefix", "news.", "reader")
    assert TypePrefixSubscription("", "all").matches("anything")


def test_same_fields_of_different_kinds_have_different_identities() -> None:
    assert TypeSubscription("t", "a").identity != TypePrefixSubscription("t", "a").identity


def test_recipients_carry_the_topic_source_as_key() -> None:
    index = SubscriptionIndex()
    index.add(TypeSubscription("news", "reader"))
    index.add(TypePrefixSubscription("ne", "indexer"))
    index.add(TypeSubscription("weather", "reader"))
    assert index.recipients(TopicId("news", "s1")) == [
        AgentId("reader", "s1"),
        AgentId("indexer", "s1"),
    ]
    assert index.recipients(TopicId("weather", "s2")) == [AgentId("reader", "s2")]
    assert index.recipients(TopicId("nothing", "s3")) == []


def test_recipients_are_unique_per_agent_type() -> None:
    index = SubscriptionIndex()
    index.add(TypeSubscription("news.sports", "reader", id="s1"))
    index.add(TypePrefixSubscription("news.", "reader", id="s2"))
    index.add(TypePrefixSubscription("news", "reader", id="s3"))
    index.add(TypePrefixSubscription("news.", "archiver", id="s4"))
    assert len(index) == 4
    assert index.agent_types_for("news.sports") == ("reader", "archiver")
    assert index.recipients(TopicId("news.sports", "k")) == [
        AgentId("reader", "k"),
        AgentId("archiver", "k"),
    ]


def test_adding_an_existing_subscription_returns_the_existing_object() -> None:
    index = SubscriptionIndex()
    first = TypeSubscription("news", "reader", id="s1")
    assert index.add(first) is first
    again = TypeSubscription("news", "reader", id="s1")
    assert index.add(again) is first
    # Same identity, other id (e.g. a second worker hosting the type): still the existing one.
    other_id = TypeSubscription("news", "reader", id="s2")
    assert index.add(other_id) is first
    assert len(index) == 1
    assert list(index) == [first]
    assert index.recipients(TopicId("news", "k")) == [AgentId("reader", "k")]


def test_a_duplicate_id_with_a_different_identity_is_rejected() -> None:
    index = SubscriptionIndex()
    index.add(TypeSubscription("news", "reader", id="s1"))
    with pytest.raises(ValueError, match="s1"):
        index.add(TypeSubscription("news", "writer", id="s1"))
    with pytest.raises(ValueError, match="s1"):
        index.add(TypePrefixSubscription("news", "reader", id="s1"))
    assert len(index) == 1
    assert index.agent_types_for("news") == ("reader",)


def test_subscriptions_without_an_id_do_not_collide() -> None:
    index = SubscriptionIndex()
    index.add(TypeSubscription("a", "x"))
    index.add(TypeSubscription("b", "y"))
    assert len(index) == 2


def test_remove_by_id() -> None:
    index = SubscriptionIndex()
    sub = TypeSubscription("news", "reader", id="s1")
    index.add(sub)
    index.add(TypeSubscription("news", "archiver", id="s2"))
    assert index.remove("s1") is sub
    assert len(index) == 1
    assert index.agent_types_for("news") == ("archiver",)
    with pytest.raises(KeyError, match="s1"):
        index.remove("s1")
    # The id is free again, and so is the identity.
    assert index.add(TypeSubscription("news", "reader", id="s1")) is not sub
    assert index.agent_types_for("news") == ("archiver", "reader")


def test_remove_an_unknown_id_raises_key_error() -> None:
    index = SubscriptionIndex()
    with pytest.raises(KeyError):
        index.remove("nope")
    with pytest.raises(KeyError):
        index.remove("")


def test_cache_is_invalidated_by_add_and_remove() -> None:
    index = SubscriptionIndex()
    topic = TopicId("news.sports", "k")
    assert index.recipients(topic) == []  # cached as empty
    index.add(TypePrefixSubscription("news.", "reader", id="p"))
    assert index.recipients(topic) == [AgentId("reader", "k")]
    index.add(TypeSubscription("news.sports", "scorer", id="t"))
    assert index.recipients(topic) == [AgentId("reader", "k"), AgentId("scorer", "k")]
    index.remove("p")
    assert index.recipients(topic) == [AgentId("scorer", "k")]
    index.remove("t")
    assert index.recipients(topic) == []


# -- a model-based check ------------------------------------------------------------------------

TOPICS = ["a", "ab", "abc", "b", "ba", ""]
AGENTS = ["x", "y", "z"]


def _expected(subs: list, topic_type: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.agent_type for s in subs if s.matches(topic_type)))


@SETTINGS
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("add"),
                st.sampled_from(["type", "prefix"]),
                st.sampled_from(TOPICS),
                st.sampled_from(AGENTS),
                st.sampled_from(["", "i1", "i2", "i3", "i4"]),
            ),
            st.tuples(st.just("remove"), st.sampled_from(["i1", "i2", "i3", "i4", "zz"])),
            st.tuples(st.just("lookup"), st.sampled_from(TOPICS)),
        ),
        max_size=40,
    )
)
def test_index_agrees_with_a_plain_model(ops: list[tuple]) -> None:
    index = SubscriptionIndex()
    model: list = []  # subscriptions in insertion order
    for op in ops:
        if op[0] == "add":
            _, kind, topic, agent, sid = op
            cls = TypeSubscription if kind == "type" else TypePrefixSubscription
            sub = cls(topic, agent, sid)
            existing = next((s for s in model if s.identity == sub.identity), None)
            if existing is not None:
                assert index.add(sub) is existing
            elif sid and any(s.id == sid for s in model):
                with pytest.raises(ValueError):
                    index.add(sub)
            else:
                assert index.add(sub) is sub
                model.append(sub)
        elif op[0] == "remove":
            sid = op[1]
            found = next((s for s in model if s.id == sid), None)
            if found is None:
                with pytest.raises(KeyError):
                    index.remove(sid)
            else:
                assert index.remove(sid) is found
                model.remove(found)
        else:
            topic = op[1]
            assert index.agent_types_for(topic) == _expected(model, topic)
        assert len(index) == len(model)
    for topic in TOPICS:
        types = index.agent_types_for(topic)
        assert types == _expected(model, topic)
        assert len(set(types)) == len(types)
        assert index.recipients(TopicId(topic, "src")) == [AgentId(t, "src") for t in types]
