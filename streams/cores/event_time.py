"""Event time an untrusted publisher cannot use to poison state. Pure.

Every input event carries a time its publisher chose (``ts`` of user events and profiles, ``created_at`` of new
posts). The engine trusts that time for two things: the decay of a user's vector (a state is decayed to the newest
event time it has seen, :mod:`streams.cores.user_update`) and the fresh window of new items (an item is "new" while
``created_at`` is inside the window, :mod:`ranking.online.recall`). One event dated far ahead would move a user's
state time there for good (every real event after it counts as decades old, so the vector stops moving), and one
post dated ahead would stay "new" forever and take the new-item quota of every list.

So the worker checks each event's time against its own clock (:func:`check`) before anything is applied:

- more than ``max_ahead_s`` ahead of the worker's clock (clock skew between producers and the worker, default
  5 minutes): dead-lettered as ``FutureTimestamp``;
- older than ``max_age_s`` (when set): dead-lettered as ``StaleTimestamp``. Events are stamped when they happen
  (the replayer stamps send time), so an old one is a producer bug or a replay of stale data; the bound is wide
  enough (30 days for user events by default) for a worker that was down for a while to apply its backlog.

And the update rule does not rely on the check alone (:func:`clamp`): a state time or an event time ahead of
``now + max_ahead_s`` counts as ``now``, so a state poisoned before this check existed decays normally again from
its next event on.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from streams.cores.decode import Rejected

FUTURE = "FutureTimestamp"
STALE = "StaleTimestamp"


def check(field: str, t: datetime, now_s: float, max_ahead_s: float, max_age_s: float | None) -> Rejected | None:
    """Why the event time ``t`` of field ``field`` cannot be used at worker time ``now_s`` (None when it can)."""
    ts = t.timestamp()
    if ts > now_s + max_ahead_s:
        return Rejected(FUTURE, f"{field} is {ts - now_s:.0f} s ahead of the worker's clock "
                                f"(at most {max_ahead_s:.0f} s allowed)")
    if max_age_s is not None and ts < now_s - max_age_s:
        return Rejected(STALE, f"{field} is {now_s - ts:.0f} s old (at most {max_age_s:.0f} s allowed)")
    return None


def clamp(ts: np.ndarray | float, now_s: float, max_ahead_s: float) -> np.ndarray:
    """Times (epoch seconds) with every value past ``now_s + max_ahead_s`` replaced by ``now_s``; -inf and other
    times unchanged."""
    t = np.asarray(ts, dtype=np.float64)
    return np.where(t > now_s + max_ahead_s, now_s, t)
