"""Which topics, groups and collections a namespace owns, the refusal of the un-namespaced settings, and which older
demo runs the demo drops."""

from __future__ import annotations

import time

import pytest

from infra.namespace import NamespaceError, drop_namespace, owned_collections, owned_groups, owned_topics
from infra.settings import Settings
from thaw.demo import demo_runs_to_drop

TOPICS = [
    "content.new", "user.events",  # the un-namespaced engine's
    "t1.content.new", "t1.user.events.retry", "thaw-t1-__assignor-__leader", "thaw-t1-changelog",
    "t10.content.new", "thaw-t10-__assignor-__leader",  # a neighbour whose name starts with the same letters
    "t1x", "thaw-t1",  # not the namespace's: no dot after the prefix, no dash after the app id
]


def test_a_namespace_owns_its_prefixed_topics_and_its_apps_internal_topics_only():
    s = Settings().namespaced("t1")
    assert owned_topics(s, TOPICS) == ["t1.content.new", "t1.user.events.retry", "thaw-t1-__assignor-__leader",
                                       "thaw-t1-changelog"]


def test_groups_and_collections_of_a_namespace():
    s = Settings().namespaced("t1")
    assert owned_groups(s, ["thaw-t1", "thaw-t1-rawread", "thaw-t10", "thaw-engine", "t1.reader"]) == [
        "t1.reader", "thaw-t1", "thaw-t1-rawread"]
    assert owned_collections(s, ["thaw_t1", "thaw_t1__cb2cf_demo_ab", "thaw_t10", "thaw_items"]) == [
        "thaw_t1", "thaw_t1__cb2cf_demo_ab"]


def test_the_un_namespaced_settings_are_refused_before_any_client_is_made():
    s = Settings()
    for f in (lambda: owned_topics(s, TOPICS), lambda: drop_namespace(s)):
        with pytest.raises(NamespaceError, match="not a namespace"):
            f()
    odd = Settings.model_validate({"kafka": {"topic_prefix": "a.b."}})
    with pytest.raises(NamespaceError):
        owned_topics(odd, TOPICS)


def _name(t: float, tag: str = "abcd") -> str:
    return "demo_" + time.strftime("%Y%m%d%H%M%S", time.localtime(t)) + tag


def test_the_demo_drops_older_runs_but_keeps_the_newest_and_the_young():
    now = time.time()
    old = [_name(now - h * 3600, f"{h:04x}") for h in range(2, 9)]  # 2..8 hours old
    young = _name(now - 600, "ffff")
    this = _name(now, "eeee")
    names = [*old, young, this, "t1", "demo_bad", "demo_2026"]
    dropped = demo_runs_to_drop(names, this[len("demo_"):], now, keep=3)
    # newest three other runs: young, 2 h, 3 h; the remaining 4..8 h ones go; never this run, never non-demo names
    assert dropped == sorted(old[2:])
    assert demo_runs_to_drop(names, this[len("demo_"):], now, keep=0, min_age_s=3600) == sorted(old)
    assert demo_runs_to_drop(names, this[len("demo_"):], now, keep=0, min_age_s=10 * 3600) == []
