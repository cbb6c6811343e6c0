"""Per-caller rate limits (429 with Retry-After, one bucket per authenticated caller or client address), the limit
of failed authentications per client address, and the reused /readyz answer. In-process apps over the fake
recommender; no services."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.api import create_apps
from serving.auth import key_digest
from serving.rate_limit import (
    AUTH_FAILURE_BURST,
    AUTH_FAILURE_REFUSAL,
    AUTH_FAILURE_RPS,
    CALLER_REFUSAL,
    RateLimited,
    RateLimiter,
    auth_failure_limiter,
)
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


def test_a_failure_bucket_refuses_once_spent_without_taking_and_refills():
    clock = _Clock()
    lim = RateLimiter(rate=1.0, burst=2, clock=clock, refusal="too many failures")
    lim.check("ip:a")
    lim.check("ip:a")  # a check takes nothing
    lim.charge("ip:a")
    lim.charge("ip:a")
    lim.charge("ip:a")  # past empty: never raises, never below zero
    with pytest.raises(RateLimited) as exc:
        lim.check("ip:a")
    assert exc.value.detail == "too many failures" and exc.value.retry_after_s == pytest.approx(1.0)
    lim.check("ip:b")  # another address has its own bucket
    clock.t += 1.0
    lim.check("ip:a")  # one failure forgiven per 1/rate


def _bad_token_flood(public: TestClient, n: int) -> list[int]:
    return [public.get("/recommend", params={"user_id": "u1"},
                       headers={"Authorization": "Bearer not-a-jwt"}).status_code for _ in range(n)]


def test_bad_credentials_from_one_address_are_limited_before_they_are_checked():
    s = settings({"api_keys": KEYS}, rate_limit_rps=0.5, rate_limit_burst=2)
    rec = FakeRecommender()
    apps = create_apps(s, served=lambda: typed(rec))
    clock = _Clock()  # the app's own limiters, on a clock that stands still (no refill while the test runs)
    apps.public.state.auth_failure_limiter = auth_failure_limiter(AUTH_FAILURE_RPS, AUTH_FAILURE_BURST, clock=clock)
    apps.public.state.rate_limiter = RateLimiter(0.5, 2, clock=clock)
    burst = int(AUTH_FAILURE_BURST)
    with clients(apps) as (public, ops), \
            TestClient(apps.public, raise_server_exceptions=False, client=("203.0.113.9", 4000)) as other:
        codes = _bad_token_flood(public, burst + 5)
        assert codes == [401] * burst + [429] * 5
        limited = public.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_B + "x"})
        assert limited.status_code == 429 and limited.json() == {"detail": AUTH_FAILURE_REFUSAL}
        assert int(limited.headers["Retry-After"]) >= 1
        # refused before verification: a good key from the flooding address waits too, and nothing more was checked
        assert public.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_A}).status_code == 429
        metrics = ops.get("/metrics").text
        assert f'thaw_api_auth_failures_total{{reason="invalid_token"}} {float(burst)}' in metrics
        assert 'thaw_api_rate_limited_total{endpoint="/recommend"} 7.0' in metrics
        # another address is unaffected, and the flood took nothing of the principal's own bucket (burst 2)
        ok = [other.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_A}).status_code
              for _ in range(3)]
        assert ok == [200, 200, 429]
        assert other.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": KEY_A}).json() == {
            "detail": CALLER_REFUSAL}
        clock.t += 1.0 / AUTH_FAILURE_RPS  # one failure forgiven: the flooding address may try once more
        assert _bad_token_flood(public, 2) == [401, 429]
    assert rec.calls == 2


def test_a_good_caller_spends_no_failure_budget():
    s = settings({"api_keys": KEYS}, rate_limit_rps=0.0)  # the per-caller limit off: only the failure limit
    rec = FakeRecommender()
    with clients(create_apps(s, served=lambda: typed(rec))) as (public, _ops):
        n = int(AUTH_FAILURE_BURST) * 2
        assert [public.get("/ab", headers={"X-API-Key": KEY_A}).status_code for _ in range(n)] == [200] * n
        assert _bad_token_flood(public, 1) == [401]


def test_the_failure_limit_follows_the_settings():
    s = settings({"api_keys": KEYS}, auth_failure_rps=0.5, auth_failure_burst=3)
    with clients(create_apps(s, served=lambda: typed(FakeRecommender()))) as (public, _ops):
        assert _bad_token_flood(public, 5) == [401, 401, 401, 429, 429]
    off = settings({"api_keys": KEYS}, auth_failure_rps=0.0)  # 0: no failure limit
    with clients(create_apps(off, served=lambda: typed(FakeRecommender()))) as (public, _ops):
        n = int(AUTH_FAILURE_BURST) + 5
        assert _bad_token_flood(public, n) == [401] * n
