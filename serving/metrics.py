"""The API's Prometheus metric families and the middleware that counts every request.

Families (same conventions as the engine's ``infra.metrics``: ``thaw_`` prefix, seconds, ``_total``)::

    thaw_api_requests_total{endpoint,status}           counter
    thaw_api_request_seconds{endpoint}                 histogram
    thaw_recommend_requests_total{variant,bucket,recall_source}   counter   per-bucket traffic
    thaw_recommend_seconds{variant}                    histogram  end-to-end pipeline time per arm
    thaw_recommend_stage_seconds{stage}                histogram  redis_user, recall_vector, recall_fresh, rank, ...
    thaw_recommend_items_total{variant,new}            counter    served items; new / all = exposure share
    thaw_recommend_quota_items_total{variant}          counter    new items placed by the quota, not the ranking
    thaw_recommend_ranker_fallbacks_total{variant,reason}   counter   lists served in the recall order because the
                                                       arm's ranker is missing (not_published, version_not_found)
    thaw_api_deadline_exceeded_total{endpoint,dependency}   counter   503s at the request deadline, by what the
                                                       stuck call waited on (redis, milvus, the served space, none)
    thaw_api_shed_total{endpoint}                      counter    503s at the concurrency limit (load shedding)
    thaw_api_in_flight{pool}                           gauge      blocking calls running (recommend, ready), abandoned
                                                       ones included
    thaw_api_auth_failures_total{reason}               counter    401s (missing, ambiguous, invalid_token, expired,
                                                       invalid_key) and 403s (insufficient_scope, other_user)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from infra.metrics import STAGE_BUCKETS
from ranking.online.pipeline import Recommendation


class ServeMetrics:
    """The API's metric families on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("thaw_api_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.request_s = Histogram("thaw_api_request_seconds", "HTTP request wall time", ["endpoint"],
                                   buckets=STAGE_BUCKETS, registry=r)
        self.recommend = Counter("thaw_recommend_requests", "Served recommendation lists by A/B arm and bucket",
                                 ["variant", "bucket", "recall_source"], registry=r)
        self.recommend_s = Histogram("thaw_recommend_seconds", "Recommendation pipeline time per A/B arm",
                                     ["variant"], buckets=STAGE_BUCKETS, registry=r)
        self.stage_s = Histogram("thaw_recommend_stage_seconds", "Recommendation pipeline stage time", ["stage"],
                                 buckets=STAGE_BUCKETS, registry=r)
        self.items = Counter("thaw_recommend_items", "Served items by A/B arm and whether the item is new",
                             ["variant", "new"], registry=r)
        self.quota = Counter("thaw_recommend_quota_items", "New items placed in a list by the exposure quota",
                             ["variant"], registry=r)
        self.ranker_fallbacks = Counter(
            "thaw_recommend_ranker_fallbacks",
            "Lists served in the recall order because the arm's ranker is not published, by arm and reason",
            ["variant", "reason"], registry=r)
        self.deadline_exceeded = Counter(
            "thaw_api_deadline_exceeded", "Requests answered 503 at their deadline, by what the stuck call waited on",
            ["endpoint", "dependency"], registry=r)
        self.shed = Counter("thaw_api_shed", "Requests answered 503 at once at the concurrency limit", ["endpoint"],
                            registry=r)
        self.in_flight = Gauge("thaw_api_in_flight", "Blocking calls running, abandoned ones included", ["pool"],
                               registry=r)
        self.auth_failures = Counter("thaw_api_auth_failures", "Requests refused 401 or 403, by reason", ["reason"],
                                     registry=r)
        self.rate_limited = Counter("thaw_api_rate_limited", "Requests answered 429 at their caller's rate limit",
                                    ["endpoint"], registry=r)
        self.ranker_refused = Counter(
            "thaw_ranker_refused",
            "Published ranker versions refused at load (the arm keeps its last good version, or is degraded), by "
            "model and reason (hash_mismatch, missing_file, corrupt_manifest, unrecorded_file, load_error)",
            ["model", "failure"], registry=r)

    def count_refused_ranker(self, model: str, version: str | None, failure: str) -> None:
        """``RankerPool``'s ``on_load_failure`` hook: one refused version (counted once per version)."""
        self.ranker_refused.labels(model, failure).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    def observe_recommendation(self, out: Recommendation) -> None:
        """Count one served list: its arm and bucket, its stage times, its new items and quota, a fallback."""
        self.recommend.labels(out.variant, str(out.bucket), out.recall_source).inc()
        self.recommend_s.labels(out.variant).observe(out.timings_ms["total"] / 1000)
        for stage, ms in out.timings_ms.items():
            if stage != "total":
                self.stage_s.labels(stage).observe(ms / 1000)
        n_new = sum(c.is_new for c in out.items)
        self.items.labels(out.variant, "true").inc(n_new)
        self.items.labels(out.variant, "false").inc(len(out.items) - n_new)
        self.quota.labels(out.variant).inc(out.exposure["new_added_by_quota"])
        if out.degraded is not None:
            self.ranker_fallbacks.labels(out.variant, out.fallback_reason or "unknown").inc()


async def observe_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: count each request by its route's path (``unmatched`` for none) and status, and time it.

    The metric families are ``request.app.state.metrics`` (a :class:`ServeMetrics`).
    """
    m: ServeMetrics = request.app.state.metrics
    t0 = time.perf_counter()
    route = request.scope.get("route")
    response = await call_next(request)
    route = request.scope.get("route") or route
    endpoint = getattr(route, "path", "unmatched")
    m.requests.labels(endpoint, str(response.status_code)).inc()
    m.request_s.labels(endpoint).observe(time.perf_counter() - t0)
    return response
