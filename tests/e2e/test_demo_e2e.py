"""The main job on a small community: ``run_demo`` from empty model and corpus folders to RESULT OK.

The whole pipeline as ``make demo`` runs it (encoders exported from the bundled weights, music21 clips rendered,
the community simulated, the CF space trained and published, a real worker and a real ``thaw serve``), only
smaller: 6 clips, 30 simulated steps."""

from __future__ import annotations

import pytest

from thaw.demo import run_demo
from thaw.demo_space import CommunityPlan

pytestmark = pytest.mark.e2e

EVERY_FIELD = {"track": {"text", "audio_clip", "audio_mae"}, "moment": {"text", "image", "image_text"}}


def test_the_demo_runs_every_encoder_and_the_cf_space(stack_settings, tmp_path):
    s = stack_settings.model_copy(update={"models": stack_settings.models.model_copy(
        update={"dir": tmp_path / "models"})})
    plan = CommunityPlan(n_clips=6, steps=30, music_dir=str(tmp_path / "music"))
    rep = run_demo(s, plan=plan, rate=50.0, notify=lambda _msg: None)
    assert rep.ok, rep.problems
    enc = rep.sections["encoders"]
    assert {f: r["status"] for f, r in enc["bundled"].items()} == {
        "musicclip": "installed", "audio-mae": "installed", "flava": "installed"}
    assert rep.sections["corpora"]["music_clips"] == 6
    space = rep.sections["CF space (offline, the same split)"]
    assert space["space"].startswith("cb2cf@demo-") and not space["reused"]
    assert space["featurizer"]["missing"] == []
    fields = rep.sections["new posts: produce -> searchable, content fields"]["content fields by kind"]
    for kind, want in EVERY_FIELD.items():
        assert fields[kind] and all(want <= set(key.split("+")) for key in fields[kind]), (kind, fields[kind])
    live = rep.sections["cold-start quality: new posts, live (Milvus search with Redis user vectors)"]
    assert live["truth: served CF space"]["ndcg@20"] > live["truth: random"]["ndcg@20"]
    assert rep.sections["reliability"]["found_in_dlq"] == rep.sections["reliability"]["bad_records_injected"] > 0
    assert rep.series["freshness_s"]["new post: produce -> searchable"] and rep.series["lag"]
    # a second run reuses the trained space and the exported encoders
    again = run_demo(s, plan=plan, rate=50.0, notify=lambda _msg: None)
    assert again.ok, again.problems
    assert again.sections["CF space (offline, the same split)"]["reused"]
    assert {r["status"] for r in again.sections["encoders"]["bundled"].values()} == {"present"}
