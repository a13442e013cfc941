"""The evaluation job: every model on every task set, each (model, task)'s scores and answers stored together, with
where the items came from and how they were run (backend/evaluate.py says what is stored and lists the tasks).

    python -m backend eval SmolLM2-135M-Instruct --tasks perplexity synth-math qa
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable

from backend import evaldevice, heldout, qa, registry
from backend.evalscore import score_task, settings
from backend.evaltasks import EvalError, EvalFailed, TaskSet, task_set
from backend.specs import EvalSpec
from storage import db
from storage.models import EvalScore, Generation

Progress = Callable[[float, str], None]
ITEM_PROGRESS_EVERY = 0.5  # seconds between two progress calls within a task (the CLI prints at most twice a second)


def _load(path: str, plan: evaldevice.DevicePlan | None = None):
    """The model's tokenizer and weights. A file gone since the job was planned (deleted or moved while the models
    before it were scored) failed with a bare "[Errno 2]"; the scores already stored are kept."""
    folder = registry.resolve(path)[0]
    try:
        return evaldevice.load_model(folder, plan)
    except OSError as exc:  # a shard gone (FileNotFoundError), or every weights file (transformers' OSError)
        what = f"{exc.filename} is missing" if exc.filename else str(exc).splitlines()[0][:300]
        raise EvalFailed(f"{path}: {what}: were the model's files deleted or moved while this evaluation ran? The "
                         "scores it stored are kept: restore the model (or leave it out) and run it again (a job: "
                         "resume it).") from None


def _counts(ts: TaskSet, gens: list[Generation], ix) -> dict[str, int]:
    """The items behind the rows scored over items `ix`: "n", and for a QA task each kind's `n[kind]`, which its
    `metric[kind]` rows record (qa.counts_by_kind)."""
    ix = list(ix)
    return qa.counts_by_kind([gens[i].item_kind for i in ix]) if ts.kind == "qa" else {"n": len(ix)}


def _judge(spec: EvalSpec) -> qa.Judge | None:
    if not spec.judge_url:
        return None
    return qa.Judge(spec.judge_url, spec.judge_model or "", os.environ.get(spec.judge_key_env, ""),
                    timeout=spec.judge_timeout)


def stored_by_job(job_id: int | None) -> dict[tuple[str, str], int]:
    """(model, task) -> score rows this job already stored. A task's rows and generations commit together, so a
    resumed job (backend/runner/states.py resume) that skips these pairs adds no second copy and keeps the first."""
    if job_id is None:
        return {}
    from sqlmodel import func, select

    with db.session() as s:
        rows = s.exec(select(EvalScore.model, EvalScore.task, func.count()).where(EvalScore.job_id == job_id)
                      .group_by(EvalScore.model, EvalScore.task)).all()
    return {(m, t): int(n) for m, t, n in rows}


def stored_name(model: str) -> str:
    """The name a model's scores are stored under: its registered name when `model` is a registered folder's path
    or "builtin" (stored under the path, its scores stood apart from its other scores, without lineage columns)."""
    rec = registry.record(model)
    return rec.name if rec else registry.BUILTIN_NAME if model.lower() == "builtin" else model


def missing_models(models: list[str]) -> list[str]:
    """The models that are neither registered, nor the built-in one, nor a folder: what a recipe's evaluation
    leaves out when the stage that was to make one failed (EvalSpec.skip_missing). A registered model whose folder
    is gone is not among them: that is an error the evaluation reports."""
    builtin = ("builtin", registry.BUILTIN_NAME.lower())
    return [m for m in models
            if registry.record(m) is None and m.lower() not in builtin and not Path(m).expanduser().is_dir()]


def _within(progress: Progress, step: int, steps: int, what: str) -> Callable[[int, int], None]:
    """score_task's on_items for one (model, task): "SmolLM2-135M-Instruct: qa 8/16", the fraction moving within the
    task's share, at most every ITEM_PROGRESS_EVERY seconds. A 16-item qa task read "[ 0.0%] …: qa" for 7 minutes
    and looked hung on the Jobs and Monitor pages."""
    last = [time.monotonic()]  # the task's own line was said just now

    def on_items(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < ITEM_PROGRESS_EVERY or not total:
            return
        last[0] = now
        progress((step + min(done / total, 1.0)) / steps, f"{what} {done}/{total}")
    return on_items


NONE_MADE = "none of the models to evaluate exists"  # how a skip_missing run with no model left fails: the runner
# queues such an evaluation again when a job it waits for is resumed (runner._left_out)


def run_eval(spec: EvalSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    """Score every model of `spec` on every task and store the scores. Every task's items are read and checked, and
    every model's device plan made (one that cannot fit says so), before any model loads; with spec.skip_missing (a
    recipe's evaluation) a model whose job did not succeed is left out. Writes no files (`out_dir` is unused): each
    (model, task) lands as one database transaction of EvalScore rows and their generations, marked with this job.
    A resume of the job keeps the (model, task) scores its earlier run stored and scores only the rest; the result
    counts them ("kept") and its notes say so."""
    progress = progress or (lambda f, m: None)
    spec = spec.model_copy(update={"models": list(dict.fromkeys(stored_name(m) for m in spec.models))})
    job_id = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    skipped = missing_models(spec.models) if spec.skip_missing else []
    if skipped:
        if len(skipped) == len(spec.models):
            raise EvalError(f"{NONE_MADE} ({', '.join(skipped)}): the jobs that were to "
                            "make them did not succeed.")
        spec = spec.model_copy(update={"models": [m for m in spec.models if m not in skipped]})
        progress(0.0, f"left out {', '.join(skipped)}: not registered (the job that was to make it did not succeed)")
    try:  # every task's items are read and checked before any model loads
        sets = [task_set(t, spec.limit) for t in spec.tasks]
    except (qa.QAError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    done = stored_by_job(job_id)
    kept = sum(done.get((m, ts.task), 0) for m in spec.models for ts in sets)
    notes = [f"left out, not registered: {', '.join(skipped)}"] if skipped else []
    notes += [f"resumed: kept the {kept} scores of {', '.join(f'{m} / {t}' for m, t in done)} that this job "
             "stored before it stopped"] if kept else []
    todo = [m for m in spec.models if any((m, ts.task) not in done for ts in sets)]
    # fail early on an unknown model; one whose scores were all kept may have been deleted since
    folders = {m: registry.resolve(m)[0] for m in todo}
    judge = _judge(spec)
    seq_len = 256 + spec.max_new_tokens
    plans = {}
    for m in todo:  # a model that cannot fit says so before anything loads
        try:
            plans[m] = evaldevice.plan_for(folders[m], seq_len=seq_len, batch_size=spec.batch_size,
                                           device=spec.device, score_len=spec.perplexity_window)
        except evaldevice.DeviceError as exc:
            raise EvalError(f"{m}: {exc}") from None
    t0 = time.perf_counter()
    stored = 0
    cache: dict = {}
    steps = len(spec.models) * len(sets)
    for i, model_name in enumerate(spec.models):
        if model_name not in todo:
            progress(i * len(sets) / steps, f"{model_name}: every task already scored by this job's earlier run, kept")
            continue
        plan = plans[model_name]
        progress(i * len(sets) / steps, f"{model_name}: loading ({plan.note})")
        tok, model = _load(model_name, plan)
        tidx = heldout.training_index(model_name, spec.ngram, cache)
        for k, ts in enumerate(sets):
            if (model_name, ts.task) in done:
                progress((i * len(sets) + k) / steps, f"{model_name}: {ts.task} already scored by this job's "
                                                      "earlier run, kept")
                continue
            progress((i * len(sets) + k) / steps, f"{model_name}: {ts.task}")
            try:
                scores, gens, rescore, _, extra = score_task(ts, tok, model, spec, model_name, job_id, plan,
                                                             judge, _within(progress, i * len(sets) + k, steps,
                                                                            f"{model_name}: {ts.task}"))
            except Exception as exc:  # nothing of this task is stored; the job fails with the reason
                raise (EvalError if isinstance(exc, ValueError) else EvalFailed)(
                    f"{model_name} / {ts.task} failed: {type(exc).__name__}: {exc}") from exc
            overlaps = [tidx.overlap(t) for t in ts.texts]
            run = uuid.uuid4().hex  # this (model, task) scoring: its rows and answers replace an earlier run's whole
            for g, o in zip(gens, overlaps):
                g.overlap = o
            for g in gens:
                g.run = run
            summary = heldout.overlap_summary(overlaps, spec.overlap_threshold, tidx) if ts.texts else None
            clean_ix = [j for j, o in enumerate(overlaps) if o < spec.overlap_threshold]
            clean = None
            if rescore and summary and summary["items_over"] and clean_ix:
                clean = {**rescore(clean_ix), **_counts(ts, gens, clean_ix)}
            elif rescore and summary and not summary["items_over"]:
                clean = {**scores, **_counts(ts, gens, range(len(overlaps)))}
            # a Hub lm-eval task's items are unknown here: no fingerprint (every one was the hash of an empty list)
            details = {"source": ts.source, "fingerprint": heldout.fingerprint(ts.items) if ts.items else None,
                       "items": len(ts.items), "settings": settings(ts, spec, tok, model, plan.batch_size),
                       "overlap": summary, "clean": clean, "device": plan.note, **extra}
            n = extra.get("n") or len(ts.items) or spec.limit  # lm-eval reports how many items it scored
            counts = _counts(ts, gens, range(len(gens))) if ts.kind == "qa" else {}
            rows = [EvalScore(job_id=job_id, model=model_name, task=ts.task, metric=metric, value=float(v),
                              n=counts.get(qa.count_key(metric), n), details=details,
                              overlap_share=summary["share_over"] if summary else 0.0, run=run)
                    for metric, v in scores.items()]
            with db.session() as s:  # one transaction: a task's scores and generations land together or not at all
                s.add_all(rows + gens)
                s.commit()
            stored += len(rows)
        del model
    progress(1.0, f"{stored} scores in {time.perf_counter() - t0:.0f} s" + (f", {kept} kept from the earlier run"
                                                                           if kept else ""))
    return {"scores": stored + kept, "kept": kept, "notes": notes, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 1), "device": {m: p.note for m, p in plans.items()}}
