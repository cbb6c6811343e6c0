"""New users on the simulator: is a multimodal taste vector (MusicCLIP / Audio MAE / FLAVA-style fields) worth more
than a text-only one? The seed's claim, on data where items carry real audio and images.

Run::

    python -m benchmarks.sim_new_users                  # ~1,400 items, ~600 users
    python -m benchmarks.sim_new_users --steps 120      # smaller

The community simulator's interactions (positive actions, with their timestamps) and items (tracks with rendered
music21 audio, moments with OpenMoji images, text posts) become an ``InteractionDataset``; the content fields come
from the stream's featuriser (``benchmarks.sim_cold_start._featurize``). The new-user harness
(``ranking.evaluation.new_users.run_new_users``: held-out users revealing their first 0/1/3/5 interactions in time
order, choices on validation users only, niche slice) runs twice — content = the MiniLM ``text`` field only, and
content = every field — and the report puts the two "multimodal-enhanced" rows side by side with group prior and
LightGCN-only. Writes ``benchmarks/results/sim_new_users.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json
from benchmarks.sim_cold_start import add_catalogue_options


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim_new_users", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    add_catalogue_options(ap)
    args = ap.parse_args(argv)

    from benchmarks.sim_cold_start import _featurize, simulate
    from ranking.evaluation.new_users import NewUserEvalConfig, run_new_users
    from workloads.datasets import InteractionDataset

    t_all = time.perf_counter()
    sim, rows, _ = simulate(args.steps, args.seed, args.catalogue, args.clips)
    items, users = sim.items, sim.users
    item_ix = {it.item_id: j for j, it in enumerate(items)}
    user_ix = {u.user_id: j for j, u in enumerate(users)}
    ds = InteractionDataset(
        name="simulator",
        users=np.array([user_ix[r[0]] for r in rows], dtype=np.int64),
        items=np.array([item_ix[r[1]] for r in rows], dtype=np.int64),
        weights=np.array([r[2] for r in rows], dtype=np.float32),
        timestamps=np.array([int(r[3]) for r in rows], dtype=np.int64),
        n_users=len(users), n_items=len(items),
        user_ids=[u.user_id for u in users], item_ids=[it.item_id for it in items],
        item_text=[it.asset.text for it in items], item_tags=[list(it.asset.tags) for it in items],
        user_features={"gender": np.array([u.gender for u in users]),
                       "age": np.array([{"<18": 16, "18-24": 21, "25-34": 30, "35-44": 40, "45-54": 50, "55+": 60}
                                        .get(u.age_bucket, 30) for u in users])},
        meta={"source": f"workloads.simulator seed={args.seed} steps={args.steps}", "weight": "action weight"},
    )
    content, finfo = _featurize(items)
    report: dict[str, Any] = {"benchmark": "sim_new_users", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "config": {"steps": args.steps, "seed": args.seed, "k": args.k,
                                         "catalogue": args.catalogue, "clips": args.clips},
                              "data": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
                              "featurizer": finfo, "machine": machine_info(), "runs": {}}
    print(f"[sim_new_users] {report['data']} features {finfo['present_share']}", file=sys.stderr)
    cfg = NewUserEvalConfig(k=args.k, seed=args.seed)
    for label, fields in (("text", ("text",)), ("all fields", tuple(content.names))):
        t0 = time.perf_counter()
        rep = run_new_users(ds, cfg, content=content.select(fields))
        rep["seconds"] = round(time.perf_counter() - t0, 1)
        report["runs"][label] = rep
        print(f"[sim_new_users] {label}: done in {rep['seconds']} s", file=sys.stderr)
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "sim_new_users.json", report)
    print(args.out / "sim_new_users.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
