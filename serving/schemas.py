"""The API's response bodies as Pydantic models (the schemas ``/openapi.json`` publishes).

Optional keys that the wire leaves out when they do not apply (``debug``, an item's ``task_scores``, a user's
``n_events``) are optional fields the routes serialize with ``response_model_exclude_unset``: a body carries
exactly the keys it was built with.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ABAssignment(BaseModel):
    """The user's A/B bucket and arm (clients echo them in ``user.events`` ``context``)."""

    bucket: int
    variant: str


class RecommendedItem(BaseModel):
    """One item of a list, in list order."""

    item_id: str
    score: float = Field(description="the list score (the ranker's, or the recall similarity in the recall order)")
    kind: str
    new: bool = Field(description="created within the freshness window")
    created_at_ms: int
    task_scores: dict[str, float] | None = Field(
        default=None, description="the ranker's probability per task (absent in the recall order)")


class Exposure(BaseModel):
    """How many new items were recalled, kept by the ranking, and placed by the exposure quota."""

    recalled: int
    recalled_new: int
    new_in_top_k_by_rank: int
    new_added_by_quota: int
    new_in_top_k: int
    new_item_share: float


class DebugUser(BaseModel):
    """What the pipeline read about the user."""

    seen: int
    engaged: int
    ranker_history: int
    profile: dict[str, str]
    n_events: int | None = None
    state_source: str | None = None


class DebugItem(BaseModel):
    """Where a listed item came from."""

    item_id: str
    recall_source: str = Field(description="vector | fresh | fallback")
    recall_rank: int
    recall_score: float
    by_quota: bool


class RecommendDebug(BaseModel):
    """``debug=true``: the recall source, the user, stage timings and each item's recall."""

    recall_source: str = Field(description="vector | fallback")
    user: DebugUser
    timings_ms: dict[str, float]
    items: list[DebugItem]


class RecommendResponse(BaseModel):
    """``GET /recommend``: the list for one user."""

    user_id: str
    ab: ABAssignment
    ranker: str | None = Field(description="name@version, none (the arm's choice), or null (its ranker is missing)")
    ranked_by: Literal["ranker", "recall_order"]
    degraded: str | None = Field(description="why the arm's ranker was not used (deepfm-mmoe not published)")
    space: str
    items: list[RecommendedItem]
    exposure: Exposure
    debug: RecommendDebug | None = None


class VariantSummary(BaseModel):
    """One arm of the split and its bucket range (inclusive)."""

    name: str
    weight: float
    ranker: str
    new_item_share: float | None
    buckets: list[int] = Field(description="[first, last] bucket of the arm")


class ABSplitResponse(BaseModel):
    """``GET /ab``: the A/B split."""

    buckets: int
    variants: list[VariantSummary]


class ABUserResponse(BaseModel):
    """``GET /ab/{user_id}``: one user's bucket and arm."""

    user_id: str
    bucket: int
    variant: str


class HealthResponse(BaseModel):
    """``GET /healthz``: the process answers."""

    status: Literal["ok"] = "ok"


class MilvusCheck(BaseModel):
    """The served collection, loaded."""

    collection: str
    rows: int


class ReadyChecks(BaseModel):
    """One entry per dependency: its state, or ``error: <what>``."""

    space: str | None = None
    redis: str | None = None
    milvus: MilvusCheck | str | None = None
    rankers: dict[str, str] | str | None = None


class ReadyResponse(BaseModel):
    """``GET /readyz``: ready (200) or not (503), and why."""

    ready: bool
    checks: ReadyChecks


class RankerNotPublished(BaseModel):
    """An arm's ranker is not in the model directory, and how to publish it."""

    error: Literal["ranker_not_published"] = "ranker_not_published"
    message: str
    model: str
    version: str | None
    models_dir: str
    variant: str | None
    reason: str = Field(description="not_published | version_not_found | load_failed (a published version was "
                                    "refused: hash mismatch, missing file, corrupt manifest or a load error)")
    publish: str = Field(description="the command that publishes the ranker")


class ErrorResponse(BaseModel):
    """An error answer (422 for a bad parameter, 503 for a dependency that is down)."""

    detail: str


class ValidationIssue(BaseModel):
    """One invalid parameter, as FastAPI reports it."""

    loc: list[str | int]
    msg: str
    type: str


class InvalidRequestResponse(BaseModel):
    """422: FastAPI's field-level details, or our message (an unknown variant, an invalid user id)."""

    detail: list[ValidationIssue] | str


class UnavailableResponse(BaseModel):
    """503: a dependency (the served space, Redis, Milvus) is down or did not answer within the request's deadline,
    the API is at its concurrency limit, or the arm's ranker is not published."""

    detail: str | RankerNotPublished
    dependency: str | None = Field(
        default=None, description="redis | milvus | the served space, or null when none is to blame (a deadline "
        "passed in the ranker, or the request was shed at the concurrency limit); absent for a missing ranker")
