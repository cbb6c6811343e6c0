"""How much each ``user.events`` action counts as engagement: the weights of the incremental user vector.

The stream's user core weights an item's vector by its action, producers and simulators draw interactions of that
strength, and the serving pipeline uses the positive set to tell which history a ranker counted. One table, so none
of them can drift apart; every :class:`contracts.events.Action` has a weight.
"""

from __future__ import annotations

ACTION_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "click": 1.0,
    "play": 2.0,
    "complete": 3.0,
    "like": 4.0,
    "comment": 4.0,
    "share": 5.0,
    "follow": 3.0,
    "skip": -1.0,
}
POSITIVE_ACTIONS = frozenset(a for a, w in ACTION_WEIGHTS.items() if w > 0)
