"""Using and judging models from the command line: eval, scores, compare and chat.

    python -m backend eval MODEL [MODEL ...] --tasks perplexity synth-math qa[:FILE] mc:FILE gsm8k:FILE [--limit N]
    python -m backend scores [MODEL ...] [--tasks TASK ...] [--format md|csv|tex | --json]   # the Compare page's table
    python -m backend compare A B --task synth-math [--outcome hallucination]   # or just shorter answers?
    python -m backend chat MODEL --prompt TEXT [--system TEXT] [--max-new-tokens N]   # one reply, printed
"""

from __future__ import annotations

import argparse
import sys

from backend.cli.common import (JSON_NULL, WorkFailed, _job_options, _local_model, _local_task, _on_interrupt,
                                _print_json, _run_or_queue, _save_spec, absolute_paths, queued_json)


def cmd_eval(a) -> None:
    from backend.specs import EvalSpec

    spec = EvalSpec(models=a.models, tasks=a.tasks, limit=a.limit, max_new_tokens=a.max_new_tokens,
                    samples=a.samples, device=a.device, batch_size=a.batch_size,
                    overlap_threshold=a.overlap_threshold, ngram=a.ngram, judge_url=a.judge_url,
                    judge_model=a.judge_model, perplexity_window=a.perplexity_window)
    spec = absolute_paths(spec)
    queued = bool(a.queue or a.after)
    if a.fan_out and len(a.models) > 1 and not queued:
        raise ValueError("eval --fan-out: one job per model runs through the worker; add --queue.")
    if queued and len(a.models) > 1 and a.fan_out is not False:  # the Eval page's default: one job per model
        from backend import runner

        runner.check_before_queueing(spec)  # every model, before the first job is queued
        _save_spec(spec, a)
        jobs = [runner.submit(one, after=a.after) for one in spec.per_model()]
        if a.json:
            return _print_json(queued_json(jobs))
        print(f"queued jobs {', '.join(str(j.id) for j in jobs)} (eval, one per model); they run side by side on "
              "the worker's free slots (python -m backend worker --slots N) or a Ray cluster; --no-fan-out queues "
              "one job")
        return
    if a.queue or a.after:
        return _run_or_queue(spec, a)
    mine = stored_rows(spec.models)
    _run_or_queue(spec, a, more=lambda result: rows_json(mine()))
    if a.json:
        return
    notes: dict[str, None] = {}
    from backend import qatable, scoretable, tablenotes

    rows = mine()
    latest = {(r.model, r.task, r.metric): r for r in rows}
    width = max([40, *(len(r.model) for r in rows)])  # a longer name pushed its row's columns out of line
    for r in rows:
        over = f"  overlap {r.overlap_share:.0%}" if r.overlap_share else ""
        value = scoretable.number_text(r.value)  # a perplexity of 3.2e17 printed its 18 digits
        value = f"{value:>10}" if isinstance(value, str) else f"{value:10.4f}"
        # a hallucination rate of a model that mostly never answered: "—", as `scores` leaves it blank (its 0.0000
        # beside cut_off_rate 1.0000 read as the best score); the stored row and --json keep the value
        value = f"{'—':>10}" if qatable.mostly_unanswered(latest, r.model, r.task, r.metric) else value
        print(f"{r.model:{width}} {r.task:28} {r.metric:28} {value}  (n={r.n}){over}")
        overlap = (r.details or {}).get("overlap") or {}
        # a note names the model of the lineage it is about ("tiny: base model, …"): once, for the model itself
        notes.update(dict.fromkeys(n if n.startswith(f"{r.model}: ") else f"{r.model}: {n}"
                                   for n in overlap.get("notes", [])))
        notes.update(dict.fromkeys(f"{r.model}: overlap unknown: its training data {src} could not be read ({why})"
                                   for src, why in (overlap.get("unchecked") or {}).items()))
    if blank := tablenotes.cut_off_note(latest):
        notes[f"{blank} Printed as — above, as `scores` leaves it blank; --json holds the stored values."] = None
    for note in notes:  # what the overlap check could not read (a deleted ancestor's training data): the pages say it
        print(f"note: {note}")


def stored_rows(models: list[str]):
    """What a foreground evaluation of `models` (as its spec holds them: a folder's path absolute) stores, read once
    it has run: call before it runs, call the function returned after. A registered folder's scores are stored
    under its name (stored_name), as `eval` and `run EVAL.yaml` look them up."""
    from backend.evaluate import stored_name

    before = _last_score_id()
    names = [stored_name(m) for m in models]
    return lambda: _scores_since(before, names)


def rows_json(rows: list) -> dict:
    """--json's rows of a foreground evaluation (eval, run EVAL.yaml): each as `scores --json` gives a score."""
    return {"rows": [{"model": r.model, "task": r.task, "metric": r.metric, "value": r.value, "n": r.n,
                      "overlap_share": r.overlap_share, "run": r.run, "details": r.details} for r in rows]}


def _last_score_id() -> int:
    """The newest score row before an evaluation in the foreground: the rows after it are the ones it wrote (earlier
    runs of the same models and tasks stay in the table, and are not this run's scores)."""
    from sqlmodel import func, select

    from storage import db
    from storage.models import EvalScore

    with db.session() as s:
        return s.exec(select(func.max(EvalScore.id))).one() or 0


def _scores_since(after_id: int, models: list[str]) -> list:
    """The rows this foreground evaluation stored: newer than `after_id`, of its models, and written without a job
    (backend/evaluate.py stores DUS_JOB_ID's, unset here), so a worker's job storing scores meanwhile is not shown."""
    import os

    from sqlmodel import select

    from storage import db
    from storage.models import EvalScore

    job = int(os.environ["DUS_JOB_ID"]) if os.environ.get("DUS_JOB_ID") else None
    mine = EvalScore.job_id.is_(None) if job is None else EvalScore.job_id == job
    with db.session() as s:
        rows = s.exec(select(EvalScore).where(EvalScore.id > after_id, EvalScore.model.in_(models), mine)).all()
    return sorted(rows, key=lambda r: (r.model, r.task, r.metric))


def cmd_scores(a) -> None:
    """The Compare page's models × tasks table: headline score per task with its standard error (lm-eval's
    "value ± stderr"), the average over the tasks every model has, hallucination and cut-off shares, the overlap
    badges and the lineage, then the notes the page shows under it."""
    from backend import registry, scoretable
    from backend.recipe import tables

    latest = scoretable.latest_scores()
    if a.models:
        scored = {m for m, _, _ in latest}
        # a name that is no model (a typo) is said as such: "evaluate first" sent the user to evaluate it
        if unknown := [m for m in dict.fromkeys(a.models) if m not in scored and registry.record(m) is None]:
            raise ValueError(f"{_unknown_models(unknown)} (`python -m backend models list` lists the registered "
                             f"models); models with scores: {_some(scored)}.")
        if unscored := sorted(set(a.models) - scored):
            raise ValueError(f"no scores for {', '.join(unscored)} yet: evaluate first (`python -m backend eval "
                             "MODEL`).")
        latest = {k: r for k, r in latest.items() if k[0] in a.models}
    if a.tasks:  # the table, its notes, its average and --json of these tasks alone (15 tasks: 47 columns)
        latest = _only_tasks(latest, a.tasks, a.models)
    if a.json and a.format:  # one or the other: --format was dropped without a word
        raise ValueError(f"scores --json prints JSON; --format {a.format} is for the table: give one of them.")
    a.format = a.format or "md"
    if not latest and not a.json:  # --json: [], as every other list for scripts (jobs, models, data sets)
        raise ValueError("no scores yet: evaluate first (`python -m backend eval MODEL`).")
    if a.json:  # for scripts: every stored score of the table's runs by its own keys (the CSV's columns are the
        # page's labels, "synth-math (accuracy) ±"), with the standard error and items the table shows beside it
        _print_json([{**scoretable.headline_score(latest, r, a.clean), "clean": a.clean, "overlap_share":
                      r.overlap_share, "job": r.job_id, "run": r.run, "created": r.created, "details": r.details}
                     for _, r in sorted(latest.items()) if not r.metric.endswith(scoretable.STDERR)])
        return
    rows = scoretable.table_rows(latest, {r.name: r for r in registry.list_models()}, clean=a.clean)
    if a.format == "csv":  # every score numeric, its error in its own ± column (as the page's Export CSV)
        print(tables.to_csv(tables.Table("scores", "Models × tasks", list(rows[0]), [list(r.values()) for r in rows])),
              end="")
        return
    print({"md": tables.to_markdown, "tex": tables.to_latex}[a.format](scoretable.export_table(rows)), end="")
    from backend import scorenotes

    # a note naming more than scorenotes.MANY models counts them (a 114-model table printed 8,278-character notes);
    # --verbose prints each with every model named
    notes = scorenotes.table_notes(latest, rows, a.clean)
    for note in notes:  # as LaTeX comments in a .tex: its % and _ broke it
        print(f"{'% ' if a.format == 'tex' else ''}note: {note.full if a.verbose and note.full else note.text}")
    # a model asked for that has none of the tasks asked for: said, where its row was left out without a word
    if a.tasks and (unshown := [m for m in dict.fromkeys(a.models) if m not in {row["model"] for row in rows}]):
        print(f"{'% ' if a.format == 'tex' else ''}note: not in the table: {', '.join(unshown)} (no score on "
              f"{', '.join(a.tasks)}).")
    if not a.verbose and any(n.full for n in notes):
        print(f"{'% ' if a.format == 'tex' else ''}note: the notes count models past {scorenotes.MANY}; --verbose "
              "names every one.")


def _only_tasks(latest: dict, asked: list[str], models: list[str]) -> dict:
    """The scores of the `asked` tasks, each named as the table names it (its stored name: a file task's whole
    path), as `eval --tasks` was given it (a file relative to here, made absolute as eval stored it) or by its label
    on the Compare page (tasknames.task_labels: mc:arc for mc:/data/arc.jsonl). A task without scores (of `models`,
    when given) is refused with the tasks that have them, as an unknown model is."""
    from backend import tasknames

    scored = sorted({t for _, t, _ in latest})
    labels = tasknames.task_labels(scored)
    known = {**{label: t for t, label in labels.items()}, **{t: t for t in scored}}  # a stored name wins
    found = {name: known.get(name) or known.get(_local_task(name)) for name in dict.fromkeys(asked)}
    if missing := [name for name, t in found.items() if t is None]:
        of = f" of {', '.join(dict.fromkeys(models))}" if models else ""
        listed = _some(f"{labels[t]} ({t})" if labels[t] != t else t for t in scored)
        raise ValueError(f"no scores{of} on {', '.join(missing)}: evaluate first (`python -m backend eval MODEL "
                         f"--tasks {missing[0]}`), or give a task with scores; tasks with scores{of}: {listed}.")
    keep = set(found.values())
    return {k: r for k, r in latest.items() if k[1] in keep}


def cmd_compare(a) -> None:
    """The Compare page's answer to "fewer hallucinations, or just shorter answers?" for two models on one task:
    the sentence, the raw gap (paired bootstrap), McNemar on accuracy, and the gap within length bins."""
    from backend import analysis

    if not 2 <= a.bins <= 6:
        raise ValueError(f"--bins {a.bins}: give 2 to 6 answer-length bins (as the Compare page's slider).")
    from backend.specs import EVAL_ANSWER_HELP, SCORES_ONLY

    a.task = _local_task(a.task)  # as `eval` stored it: a task file under its absolute path
    if why := SCORES_ONLY.get(a.task.partition(":")[0]):  # "evaluate with --tasks mc:FILE first" would not help
        raise ValueError(f"{a.task} stores a score per model, no answers to compare ({why}): compare needs a task "
                         f"with answers ({EVAL_ANSWER_HELP}); `scores` shows {a.task}'s scores.")
    _check_compared(a.task, [a.model_a, a.model_b])
    pair = analysis.pair_records(a.task, a.model_a, a.model_b)  # the two models' answers only (every model's: 0.7 s
    # at 150 models)
    res = analysis.compare(pair, a.model_a, a.model_b, outcome=a.outcome)
    print(res["sentence"])
    if not res["ok"]:  # the comparison could not be made (too few shared items): said above, and not a success
        raise WorkFailed("")
    raw, mc = res["raw"], res["mcnemar"]
    rate = analysis.RATE_LABEL[a.outcome]
    print(f"{rate} {a.model_a} {res['rate_a']:.3f}, {a.model_b} {res['rate_b']:.3f}; A − B {raw['diff']:+.3f} "
          f"[{raw['low']:+.3f}, {raw['high']:+.3f}] (paired bootstrap over {raw['n']} items)")
    print(f"accuracy, McNemar: only {a.model_a} right on {mc['only_a_correct']}, only {a.model_b} on "
          f"{mc['only_b_correct']}, p = {mc['pvalue']:.3g}")
    strat = analysis.length_controlled(pair, a.model_a, a.model_b, n_bins=a.bins, boots=500, outcome=a.outcome)
    bins = f"{strat['bins']} length bins" if strat["bins"] else "length bins"  # 0: every compared reply cut off
    print(f"within {bins}: {rate} gap {analysis.within_bins_text(strat)}; mean length "
          f"{res['mean_tokens_a']:.0f} vs {res['mean_tokens_b']:.0f} tokens")


def _unknown_models(names: list[str]) -> str:
    return (f"unknown model{'s' if len(names) > 1 else ''} {', '.join(names)}: neither registered nor evaluated "
            "under that name")


def _some(names, shown: int = 12) -> str:
    """The first `shown` of `names` and a count of the rest: in a workspace of 150 models the refusal of one typo
    was a screenful of names."""
    names = sorted(names)
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "") if names else "none yet"


def _check_compared(task: str, models: list[str]) -> None:
    """`compare`'s refusals before it reads answers: a task that is no task, and a model that is neither registered
    nor has answers stored, are said as unknown (with what is known), not as "evaluate with --tasks X first", which
    sent a user with a typo to evaluate a task or model that does not exist. A known task or model without answers
    is left to pair_records' "evaluate first"."""
    from sqlmodel import select

    from backend import registry
    from backend.specs import EVAL_TASK_HELP, EVAL_TASK_KINDS
    from storage import db
    from storage.models import Generation

    with db.session() as s:  # two SELECT DISTINCTs on indexed columns: no answer is loaded
        tasks = sorted(s.exec(select(Generation.task).distinct()).all())
        answered = set(s.exec(select(Generation.model).distinct()).all())
    stored = f"tasks with stored answers: {_some(tasks)}"
    if task.partition(":")[0] not in EVAL_TASK_KINDS:
        raise ValueError(f"unknown task {task!r}: a task is {EVAL_TASK_HELP}; {stored}.")
    if unknown := [m for m in dict.fromkeys(models) if m not in answered and registry.record(m) is None]:
        raise ValueError(f"{_unknown_models(unknown)} (`python -m backend models list` lists the registered "
                         f"models); models with answers: {_some(answered)}.")
    if task not in tasks:
        raise ValueError(f"no model has answers on {task} yet: evaluate with --tasks {task} first ({stored}).")


def cmd_chat(a) -> None:
    """`chat MODEL --prompt TEXT`: one reply, streamed to standard output as it is generated, through the Models
    page's Quick chat functions (backend/chat.py load and stream_reply: greedy by default, float32 on the CPU,
    bfloat16 on a GPU); its tokens and speed on standard error."""
    from backend import chat, registry

    if a.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {a.max_new_tokens}: give 1 or more.")
    if a.temperature < 0:
        raise ValueError(f"--temperature {a.temperature}: give 0 (greedy) or more.")
    prompt = sys.stdin.read() if a.prompt == "-" else a.prompt
    if not prompt.strip():
        raise ValueError("--prompt is empty: give the message to answer (or - to read it from standard input).")
    folder, name = registry.resolve(_local_model(a.model))
    messages = [*([{"role": "system", "content": a.system}] if a.system else []), {"role": "user", "content": prompt}]
    _on_interrupt[0] = lambda: f"the reply of {name or folder.name} stopped"
    lm = chat.load(folder, name or folder.name)
    stats, text = chat.GenerationStats(), []
    try:
        for piece in chat.stream_reply(lm, messages, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                                       stats=stats):
            text.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except chat.TemplateRefused as exc:  # Gemma's refuses a system message ("System role not supported")
        raise ValueError(f"{lm.name}: {exc}"
                         + (" (leave out --system)" if a.system and not isinstance(exc, chat.ContextTooLong)
                            else "")) from None
    except RuntimeError as exc:  # stream_reply: "generation failed: …"
        raise WorkFailed(str(exc)) from exc
    print()
    if not "".join(text).strip():
        print("(the reply is only whitespace or special tokens)", file=sys.stderr)
    print(f"{stats.new_tokens} tokens · first token {stats.first_token_s or 0:.2f} s · "
          f"{stats.tokens_per_s:.1f} tokens/s", file=sys.stderr)


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "eval": "evaluate models on the same tasks (scores stored per model and task)",
    "scores": "the models × tasks table of the Compare page, with standard errors",
    "compare": ("fewer hallucinations, or just shorter answers? two models on one task's stored answers, with answer "
                "length held fixed"),
    "chat": "one reply from a model to a prompt, printed as it is generated (the Models page's Quick chat)",
}


def add_eval(sub) -> None:
    """The `eval` command's parser."""
    from backend.specs import EvalSpec  # its fields' words are the options' help

    ev = sub.add_parser("eval", help=HELP["eval"])
    ev.add_argument("models", nargs="+", help="registered names or model folders")
    ev.add_argument("--tasks", nargs="+", default=["perplexity", "synth-math"],
                    help="perplexity[:FILE] (held-out text), synth-math (held-out math), qa[:FILE] (closed-book QA "
                         "with unanswerable questions), mc:FILE (multiple choice), gsm8k:FILE (generation), "
                         "lm-eval:TASK (lm-evaluation-harness: dus_truthfulqa_mini, dus_gsm8k_mini, h6, or any "
                         "task name, which downloads its data)")
    ev.add_argument("--limit", type=int, default=40, help="items per task")
    ev.add_argument("--max-new-tokens", type=int, default=96, help="token cap of a generated answer")
    ev.add_argument("--samples", type=int, default=1, help="k sampled answers for a consistency score")
    ev.add_argument("--perplexity-window", type=int, default=EvalSpec.model_fields["perplexity_window"].default,
                    metavar="TOKENS", help=EvalSpec.model_fields["perplexity_window"].description)
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help=EvalSpec.model_fields["device"].description)
    ev.add_argument("--batch-size", type=int, help="generation batch (default: fitted to free GPU memory, 8 on CPU)")
    ev.add_argument("--overlap-threshold", type=float, default=EvalSpec.model_fields["overlap_threshold"].default,
                    help=EvalSpec.model_fields["overlap_threshold"].description)
    ev.add_argument("--ngram", type=int, default=EvalSpec.model_fields["ngram"].default,
                    help=EvalSpec.model_fields["ngram"].description)
    ev.add_argument("--judge-url", help="qa: grade replies with an OpenAI-compatible server (http://host:port/v1)")
    ev.add_argument("--judge-model", help="qa: the model name the judge server serves")
    ev.add_argument("--fan-out", action=argparse.BooleanOptionalAction, default=None,
                    help="with --queue: one job per model, run in parallel on free slots or cluster nodes (the "
                         "scores are the same as one job's); the default with --queue and several models, as on "
                         "the Eval page; --no-fan-out queues one job for all")
    _job_options(ev, json_holds="the count of scores stored (scores), the device each model ran on and the rows "
                 "this run stored (rows: model, task, metric, value, n, overlap_share, details); with --fan-out a list "
                 "of the queued jobs")
    ev.set_defaults(fn=cmd_eval)


def add_scores(sub) -> None:
    """The `scores` command's parser."""
    sc = sub.add_parser("scores", help=HELP["scores"])
    sc.add_argument("models", nargs="*", help="only these models (default: every model with scores)")
    sc.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks: the table's columns, its notes and "
                    "--json's rows, and the average over the accuracy-like tasks among them; a task as the table "
                    "names it (mc:/data/arc.jsonl), as eval was given it (mc:FILE, from the current folder) or by the "
                    "Compare page's short name (mc:arc) (default: every task with scores)")
    sc.add_argument("--clean", action="store_true", help="score only the items that do not overlap the training "
                                                         "data of the model's lineage")
    sc.add_argument("--format", choices=["md", "csv", "tex"], help="Markdown (the default), CSV or LaTeX")
    sc.add_argument("--json", action="store_true", help="a JSON array for scripts: one object per model, task and "
                    "metric (value, stderr, n, the stored details), not the table (--format is then unused); "
                    + JSON_NULL)
    sc.add_argument("--verbose", action="store_true", help="the notes under the table with every model named (past "
                    "10 models they give counts)")
    sc.set_defaults(fn=cmd_scores)


def add_compare(sub) -> None:
    """The `compare` command's parser."""
    from backend import analysis  # numpy only: statsmodels loads when a fit runs
    from backend.specs import EVAL_ANSWER_HELP

    cp = sub.add_parser("compare", help=HELP["compare"])
    cp.add_argument("model_a", metavar="A", help="a model with stored answers on the task")
    cp.add_argument("model_b", metavar="B", help="the model to compare it with")
    cp.add_argument("--task", required=True, help=f"a task with stored answers: {EVAL_ANSWER_HELP} (perplexity, "
                    "mc and lm-eval store scores only)")
    cp.add_argument("--outcome", choices=list(analysis.OUTCOMES), default="hallucination",
                    help="correct: compare the rate of answers that are not correct (wrong, abstained or cut off; "
                         "items either model replied empty on are left out, as for hallucination)")
    cp.add_argument("--bins", type=int, default=3, help="answer-length bins of the model-free check (2–6)")
    cp.set_defaults(fn=cmd_compare)


def add_chat(sub) -> None:
    """The `chat` command's parser."""
    ch = sub.add_parser("chat", help=HELP["chat"])
    ch.add_argument("model", metavar="MODEL", help="registered name or model folder")
    ch.add_argument("--prompt", required=True, help="the user's message; - reads it from standard input")
    ch.add_argument("--system", help="a system message before it (a model whose chat template takes none refuses it)")
    ch.add_argument("--max-new-tokens", type=int, default=96, help="token cap of the reply")
    ch.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the same reply each time)")
    ch.set_defaults(fn=cmd_chat)
