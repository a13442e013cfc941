"""Soak: 10 queued jobs of every kind, two worker processes (2 device slots and 1 light slot each: lanes.py) under
a global cap of 2 running device jobs and 1 light job, while the Jobs and Monitor pages are rendered again and again
with Streamlit's AppTest. (It was 20 jobs: 10 keep
both workers claiming against each other under the cap the whole time, at half the cost.)

Checks: every job finishes and none runs twice (one start line per log, each model/data set/score set written
once), never more than 2 device jobs and 1 light job run at once, every row of the database is consistent
afterwards, and the pages stay responsive (server-side render under 1 s). Prints the numbers it measured.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlmodel import select
from streamlit.testing.v1 import AppTest

from backend import registry, runner
from backend.runner import lanes
from backend.specs import DataSource, EvalSpec, MergeSpec, SftSpec, SynthMathSpec, UpscaleSpec
from storage import db
from storage.models import JOB_STATUSES, DatasetRecord, EvalScore, Job, ModelRecord
from tests.conftest import make_llama

ROOT = Path(__file__).resolve().parent.parent
MODEL_KINDS = ("upscale", "merge", "cpt", "sft", "dpo")


def check_database() -> list[str]:
    """Every row, checked: valid statuses, finished >= started, a succeeded model job's model registered with its
    folder present, no job left running, no model path registered twice. Returns the problems found."""
    problems = []
    with db.session() as s:
        jobs = s.exec(select(Job)).all()
        models = {m.name: m for m in s.exec(select(ModelRecord))}
    for j in jobs:
        if j.status not in JOB_STATUSES:
            problems.append(f"job {j.id}: status {j.status!r}")
        if j.status == "running":
            problems.append(f"job {j.id}: still running")
        if j.finished and j.started and j.finished < j.started:
            problems.append(f"job {j.id}: finished before it started")
        if j.status == "succeeded" and j.kind in MODEL_KINDS:
            rec = models.get(j.result.get("model"))
            if rec is None or not Path(rec.path, "config.json").exists():
                problems.append(f"job {j.id}: succeeded but model {j.result.get('model')!r} is missing")
    paths = Counter(m.path for m in models.values())
    problems += [f"{p} registered {n} times" for p, n in paths.items() if n > 1]
    return problems


def max_overlap(jobs: list[Job]) -> int:
    events = sorted([(j.started, 1) for j in jobs] + [(j.finished, -1) for j in jobs], key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def render_seconds(at: AppTest, page: str) -> float:
    at.switch_page(f"pages/{page}")
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    assert not at.exception, at.exception
    assert at.title[0].value == {"jobs.py": "Jobs", "monitor.py": "Monitor"}[page]  # the page itself was drawn
    return seconds


def test_soak_ten_jobs_two_workers_global_cap(tiny_llama, tokenizer_dir, tmp_path, workspace):
    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(make_llama(tokenizer_dir, tmp_path / "tiny-b", seed=7), "tiny-b")
    specs = []
    for i in range(3):  # the cheap kind makes up the numbers; every kind is there
        specs.append(UpscaleSpec(base="tiny" if i % 2 else "tiny-b", m=1 + i % 2, name=f"up{i}"))
    for i in range(2):
        specs.append(MergeSpec(models=["tiny", "tiny-b"], method="slerp" if i % 2 else "average", name=f"mg{i}",
                               **({"t": 0.25 * (i + 1)} if i % 2 else {})))
    specs.append(SynthMathSpec(num_seeds=6, seed=0, name="sm0"))
    for i in range(2):
        specs.append(EvalSpec(models=["tiny-b" if i else "tiny"], tasks=["perplexity"], limit=4))
    specs.append(SftSpec(model="tiny", data=[DataSource(source="builtin:alpaca-mini")], name="tr0", max_steps=3,
                         save_steps=3, eval_fraction=0.0, batch_size=1, max_length=32, max_rows=8))
    specs.append(UpscaleSpec(base="tiny", m=2, name="up-last"))
    assert len(specs) == 10
    jobs = [runner.submit(s) for s in specs]
    ids = [j.id for j in jobs]

    env = dict(os.environ)
    workers = [subprocess.Popen([sys.executable, "-m", "backend", "worker", "--slots", "2", "--light-slots", "1",
                                 "--poll", "0.2"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    times: dict[str, list[float]] = {"jobs.py": [], "monitor.py": []}
    running_seen = {False: 0, True: 0}  # running at once, by lane (True: light)
    t0 = next_render = time.monotonic()
    try:
        while time.monotonic() - t0 < 170:
            with db.session() as s:
                rows = s.exec(select(Job.status, Job.kind)).all()
            for lane in running_seen:
                running_seen[lane] = max(running_seen[lane], sum(st == "running" and (k in lanes.LIGHT_KINDS) == lane
                                                                 for st, k in rows))
            if all(st not in ("queued", "running") for st, _ in rows):
                break
            if time.monotonic() >= next_render:
                for page in times:
                    times[page].append(render_seconds(at, page))
                # a user's browser asks again every 2 s (the pages' fragments); leave the CPU to jobs
                next_render = time.monotonic() + 2.0
            time.sleep(0.2)  # the rows, read often: the end is seen at once (was: up to 2 s late)
        else:
            raise AssertionError("the soak did not finish in 170 s")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
    wall = time.monotonic() - t0

    done = [runner.get(i) for i in ids]
    assert [j.status for j in done] == ["succeeded"] * 10, [(j.id, j.kind, j.status, j.error) for j in done]
    assert check_database() == []
    # each lane's global cap held, sampled and from the rows
    light = [j for j in done if j.kind in lanes.LIGHT_KINDS]
    device = [j for j in done if j.kind not in lanes.LIGHT_KINDS]
    assert running_seen[False] <= 2 and max_overlap(device) <= 2 and len(device) == 4
    assert running_seen[True] <= 1 and max_overlap(light) <= 1 and len(light) == 6
    for j in done:  # none ran twice: one start line in each log
        assert Path(j.log_path).read_text().count(f"job {j.id} ({j.kind}) started") == 1, j.id
    names = [r.name for r in registry.list_models()]
    assert sorted(names) == sorted(["tiny", "tiny-b", "tr0", "up-last"] + [f"up{i}" for i in range(3)]
                                   + [f"mg{i}" for i in range(2)])
    with db.session() as s:
        datasets = Counter(d.name for d in s.exec(select(DatasetRecord)))
        scores = Counter((e.job_id, e.metric) for e in s.exec(select(EvalScore)))
    assert all(n == 1 for n in datasets.values()) and {"sm0-pairs"} <= set(datasets)
    # one score set per eval job: its perplexity and that perplexity's bootstrap error, each once
    assert [(scores[j.id, "perplexity"], scores[j.id, "perplexity_stderr"]) for j in done if j.kind == "eval"] == \
        [(1, 1), (1, 1)]
    # with lm-eval's word and byte perplexity, their errors and bits per byte, each once too
    assert sum(n for (job_id, _), n in scores.items() if job_id in {j.id for j in done if j.kind == "eval"}) == 14
    took = Counter()
    for j in done:
        took[j.kind] += (j.finished - j.started).total_seconds()
    print("\njob seconds by kind:", dict(took))
    stats = {page: (len(v), statistics.median(v), max(v)) for page, v in times.items()}
    print(f"\nsoak: {len(done)} jobs in {wall:.1f} s, at most {running_seen} running at once; page renders "
          + "; ".join(f"{p}: n={n} median {med:.3f} s max {mx:.3f} s" for p, (n, med, mx) in stats.items()))
    for page, (n, med, mx) in stats.items():
        assert n >= 3 and med < 1.0, (page, stats[page])
