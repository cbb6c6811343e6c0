from contracts.actions import ACTION_WEIGHTS
from contracts.events import UserEvent
from streams.cores.engagement import ab_arm, tally

T0 = 1_795_600_800.0  # 2026-11-25T10:00:00Z


def _ev(user, item, action, ts="2026-11-25T10:00:00Z", **context):
    return UserEvent.model_validate({"user_id": user, "item_id": item, "action": action, "ts": ts,
                                     "context": context})


def test_seen_is_everything_but_impressions_engaged_is_positive_weight():
    e = tally([_ev("u1", "a", "impression"), _ev("u1", "b", "skip"), _ev("u1", "c", "like"),
               _ev("u2", "a", "play", ts="2026-11-25T10:00:10Z")])
    assert e.seen == {"u1": [("b", T0), ("c", T0)], "u2": [("a", T0 + 10)]}
    assert e.engaged == {"u1": [("c", T0)], "u2": [("a", T0 + 10)]}


def test_popularity_adds_positive_weights_only():
    e = tally([_ev("u1", "a", "like"), _ev("u2", "a", "play"), _ev("u3", "a", "skip"), _ev("u1", "b", "impression")])
    assert e.popularity == {0: {"a": ACTION_WEIGHTS["like"] + ACTION_WEIGHTS["play"]}}


def test_popularity_is_kept_per_shard_of_the_acting_user():
    e = tally([_ev("u1", "a", "like"), _ev("u2", "a", "play"), _ev("u3", "b", "like"), _ev("u4", "b", "skip")],
              shards=[0, 2, 2, 1])
    assert e.popularity == {0: {"a": ACTION_WEIGHTS["like"]},
                            2: {"a": ACTION_WEIGHTS["play"], "b": ACTION_WEIGHTS["like"]}}


def test_ab_actions_per_arm_with_bounded_labels():
    e = tally([_ev("u1", "a", "skip", ab_variant="gated", ab_bucket="3"), _ev("u2", "a", "skip", ab_variant="gated"),
               _ev("u1", "a", "click", ab_variant="x" * 40), _ev("u3", "b", "impression", ab_variant="ctl"),
               _ev("u4", "b", "like")])
    assert e.ab_actions == {("gated", "skip"): 2, ("invalid", "click"): 1, ("ctl", "impression"): 1}


def test_arm_names():
    assert ab_arm("ranker_v2.1-b") == "ranker_v2.1-b"
    assert ab_arm("x" * 32) == "x" * 32
    assert ab_arm("x" * 33) == "invalid"
    assert ab_arm("") == "invalid"
    assert ab_arm("a b") == "invalid"
    assert ab_arm("arm\n") == "invalid"


def test_arms_outside_the_configuration_share_one_label():
    arms = frozenset({"control", "gated"})
    assert ab_arm("gated", arms) == "gated"
    assert ab_arm("random-123", arms) == "other" and ab_arm("x" * 33, arms) == "invalid"
    evs = [_ev(f"u{i}", "a", "click", ab_variant=f"random-{i}") for i in range(50)]
    e = tally(evs + [_ev("u1", "a", "click", ab_variant="control")], arms)
    assert e.ab_actions == {("other", "click"): 50, ("control", "click"): 1}


def test_nothing_applied_tallies_nothing():
    e = tally([])
    assert e.seen == {} and e.engaged == {} and e.popularity == {} and e.ab_actions == {}
