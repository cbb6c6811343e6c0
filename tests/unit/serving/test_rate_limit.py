"""Per-caller rate limits (429 with Retry-After, one bucket per authenticated caller or client address) and the
reused /readyz answer. In-process apps over the fake recommender; no services."""

from __future__ import annotations

import pytest

from serving.api import create_apps
from serving.auth import key_digest
from serving.rate_limit import RateLimited, RateLimiter
from tests.unit.serving.helpers import FakeRecommender, clients, settings, typed

KEY_A = "thaw_rate-limit-key-a-0123456789abcdef"
KEY_B = "thaw_rate-limit-key-b-0123456789abcdef"
KEYS = [{"name": "a", "sha256": key_digest(KEY_A), "scopes": ["recommend"]},
        {"name": "b", "sha256": key_digest(KEY_B), "scopes": ["recommend"]}]


class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_bucket_allows_its_burst_then_its_rate():
    clock = _Clock()
    lim = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        lim.take("x")
    with pytest.raises(RateLimited) as exc:
        lim.take("x")
    assert exc.value.retry_after_s == pytest.approx(0.5)
    lim.take("y")  # another caller has its own bucket
    clock.t += 0.5
    lim.take("x")  # one token back after 1/rate
    with pytest.raises(RateLimited):
        lim.take("x")
    clock.t += 100
    for _ in range(3):  # refilled to the burst, never above
        lim.take("x")
    with pytest.raises(RateLimited):
        lim.take("x")


def test_zero_rate_is_no_limit_and_memory_is_bounded():
    off = RateLimiter(rate=0.0, burst=1)
    for _ in range(1000):
        off.take("x")
    lim = RateLimiter(rate=1.0, burst=1, max_clients=10)
    for i in range(1000):
        lim.take(f"caller{i}")
    assert len(lim._buckets) == 10


def test_the_api_answers_429_per_caller_with_retry_after():
    s = settings({"api_keys": KEYS}, rate_limit_rps=0.5, rate_limit_burst=2)
    rec = FakeRecommender()
    with clients(create_apps(s, served=lambda: typed(rec))) as (public, _ops):
        ok = [public.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_A}).status_code
              for _ in range(2)]
        limited = public.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_A})
        other = public.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_B})
        assert ok == [200, 200] and other.status_code == 200
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
        assert rec.calls == 3  # the limited request did no work
        unauthenticated = public.get("/recommend", params={"user_id": "u1"})
        assert unauthenticated.status_code == 401  # credentials are checked first


def test_with_auth_off_the_client_address_is_the_caller():
    rec = FakeRecommender()
    with clients(create_apps(settings(rate_limit_rps=0.5, rate_limit_burst=1), served=lambda: typed(rec))) as (
            public, ops):
        assert public.get("/recommend", params={"user_id": "u1"}).status_code == 200
        r = public.get("/recommend", params={"user_id": "u2"})
        assert r.status_code == 429
        assert 'thaw_api_rate_limited_total{endpoint="/recommend"} 1.0' in ops.get("/metrics").text


def test_readiness_is_reused_for_ready_cache_s():
    class Counting(FakeRecommender):
        def __init__(self) -> None:
            super().__init__()
            self.pings = 0
            ping = self.users.ping

            def counted() -> bool:
                self.pings += 1
                return ping()

            self.users.ping = counted  # type: ignore[method-assign]

    for ttl, expected in ((60.0, 1), (0.0, 3)):
        rec = Counting()
        with clients(create_apps(settings(ready_cache_s=ttl), served=lambda r=rec: typed(r))) as (_public, ops):
            assert [ops.get("/readyz").status_code for _ in range(3)] == [200, 200, 200]
        assert rec.pings == expected
