"""The recipe command: new, plan, run, runs, show, tables and cancel of a SOLAR experiment in one YAML file.

    python -m backend recipe new smoke|solar-mini|solar-10.7b [--base B] [--m M] > R.yaml
    python -m backend recipe plan R.yaml | run R.yaml [--queue] | cancel RUN
    python -m backend recipe tables [RUN] [--format md|csv|tex] [--all-metrics]  # headline scores; or every metric
    python -m backend recipe runs [--limit N] [--json]      # the runs and their stages' statuses (the Recipe page)
    python -m backend recipe show RUN > R.yaml               # a run's recipe, as it ran: `recipe run R.yaml` reruns it
"""

from __future__ import annotations

import sys
import time

from backend.cli.common import JSON_NULL, WorkFailed, _on_interrupt, _print_json


def cmd_recipe(a) -> None:
    """`new PRESET` prints a recipe; `plan FILE` shows what would run and what is reused; `run FILE` submits the
    stages as dependent jobs and (without --queue) runs them here; `tables RUN` prints the paper's tables."""
    from backend import recipe

    if a.action == "new":
        print(recipe.preset(a.target, getattr(a, "base", None), getattr(a, "m", None)), end="")
        return
    if a.action == "tables":
        from backend.recipe import tables
        from backend.recipe.state import get_run, run_scores_note

        latest = recipe.runs(1)
        if a.target is None and not latest:
            raise ValueError("no recipe has run yet: `recipe run FILE` first.")
        run_id = get_run(a.target).id if a.target is not None else latest[0].id
        for t in tables.run_tables(run_id, all_metrics=a.all_metrics):  # a table's notes say why scores are missing
            print({"md": tables.to_markdown, "csv": tables.to_csv, "tex": tables.to_latex}[a.format](t))
        if a.format == "csv" and (why := run_scores_note(run_id)):  # a CSV has no notes
            print(why, file=sys.stderr)
        return
    if a.action == "show":  # the page's "Save as YAML" of the run: what `recipe run FILE` reads back
        from backend.recipe.state import run_text

        print(run_text(a.target), end="")
        return
    if a.action == "cancel":  # nothing left to cancel is refused with exit 1, as `jobs cancel` of a finished job
        if not (done := recipe.cancel_run(a.target)):
            raise WorkFailed(nothing_to_cancel(a.target))
        print(f"recipe run {a.target}: cancelled job{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}")
        return
    if a.action == "runs":
        return print_runs(a.limit, a.json)
    with open(a.target) as f:
        text = f.read()
    _refuse_job_spec(a.target, text)
    plans = recipe.plan_text(text)
    for p in plans:
        print("\n".join(p.lines()))
    if a.action == "run":
        if not a.queue:  # Ctrl-C while its stages run here: which runs were submitted, and what goes on
            before = max([r.id for r in recipe.runs(1)], default=0)
            _on_interrupt[0] = lambda: _recipe_interrupted(before)
        ids = recipe.run_recipe(text, queue=a.queue, plans=plans)  # without --queue: its own jobs, run here
        print(f"recipe run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} "
              f"{'submitted' if a.queue else 'submitted and run here'}")
        if not a.queue:
            from backend import runner

            _wait_for_other_workers(ids)
            bad = []
            for run_id in ids:
                for row, job in recipe.stages(run_id):
                    state = recipe.stage_state(row, job) or "-"
                    said = runner.job_message(job) if job else ""  # the reason, as `jobs list` says it
                    print(f"  {row.stage:28} {state:10} {row.output} {said[:100]}")
                    if not row.reused and job and job.status != "succeeded":
                        bad.append(f"{row.stage} ({job.status})")
            if bad:
                raise WorkFailed(f"recipe run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: "
                                 f"{len(bad)} stage{'s' if len(bad) > 1 else ''} did not succeed: {', '.join(bad)}.")


def nothing_to_cancel(run_id: int) -> str:
    """Why `recipe cancel RUN` found no job of the run waiting or running, and what to do instead: "cancelled jobs:
    none were still waiting or running" exited 0, where `jobs cancel` of a finished job exits 1."""
    from backend import recipe
    from backend.recipe.state import NOT_QUEUED

    rows = [(row, job) for row, job in recipe.stages(run_id) if (row.info or {}).get("status") != "given"]
    # stages that wait on an earlier run's jobs (an unchanged recipe run again while the first still ran): theirs
    theirs = sorted({job.id for row, job in rows if job is not None and not row.reused and job.status in (
        "queued", "running") and (row.info or {}).get("status") == "in-flight"})
    if theirs:
        return (f"recipe run {run_id}: nothing to cancel: its waiting stages run in job{'s' if len(theirs) > 1 else ''}"
                f" {', '.join(map(str, theirs))} of an earlier recipe run; cancel that run (python -m backend recipe "
                f"runs shows which), or the job{'s' if len(theirs) > 1 else ''} (python -m backend jobs cancel "
                f"{theirs[0]}).")
    tally: dict[str, int] = {}
    for row, job in rows:
        state = recipe.stage_state(row, job)
        state = "not queued" if state == NOT_QUEUED else state or "not run"
        tally[state] = tally.get(state, 0) + 1
    said = ", ".join(f"{n} {state}" for state, n in tally.items()) or "no stage of its own to run"
    again = (f"; to run its stages that did not succeed again, python -m backend recipe show {run_id} > recipe.yaml, "
             "then python -m backend recipe run recipe.yaml (the stages that succeeded are reused)"
             if set(tally) - {"succeeded", "skipped"} else "")
    return (f"recipe run {run_id}: nothing to cancel: no job of it is waiting or running ({said}){again}; python -m "
            f"backend recipe runs shows its stages.")


def _refuse_job_spec(path: str, text: str) -> None:
    """A job spec (a train, merge, upscale … file, as `--save-spec` and the pages write) given to `recipe plan/run`:
    said as such, with the command that runs it, not "a recipe is a mapping with kind: recipe"."""
    import shlex

    import yaml

    from backend.specs import SPECS

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # the recipe's loader says what is wrong with the YAML
        return
    kind = data.get("kind") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind.lower() in SPECS:
        raise ValueError(f"{path} is a job spec (kind: {kind}), not a recipe: `python -m backend run "
                         f"{shlex.quote(path)}` runs it (--queue hands it to the worker). A recipe has kind: recipe "
                         "(`python -m backend recipe new smoke --base MODEL` prints one).")


def _taken_elsewhere(run_ids: list[int]) -> list[int]:
    """The runs' stage jobs still to end once the foreground worker found nothing more to run: running, or queued
    behind a job that still runs (not those that will not run, behind a failed one). A worker started elsewhere
    (run.sh's, another machine's) claimed one of them first, and the rest wait on it."""
    from backend import recipe, runner

    alive, active = runner.worker_alive(), runner.active_jobs()
    return sorted({job.id for run_id in run_ids for row, job in recipe.stages(run_id)
                   if job is not None and not row.reused and (job.status == "running" or (
                       job.status == "queued" and not runner.job_message(job, active, alive).startswith("will not")))})


def _wait_for_other_workers(run_ids: list[int]) -> None:
    """A foreground `recipe run` ends when its runs end: with another worker alive that took a stage (its jobs are
    queued for any worker), wait for it, rather than report its running and queued stages as failed (exit 1 while
    the run went on)."""
    from backend import runner

    waiting = _taken_elsewhere(run_ids)
    if not waiting or not runner.worker_alive():
        return
    runs = ", ".join(map(str, run_ids))
    print(f"another worker took stage jobs of recipe run {runs}: waiting for jobs {', '.join(map(str, waiting))} to "
          "end (Ctrl-C stops waiting, not them)", file=sys.stderr, flush=True)
    _on_interrupt[0] = lambda: (f"stopped waiting; recipe run {runs} goes on in the other worker (python -m backend "
                                "recipe runs shows it)")
    while _taken_elsewhere(run_ids) and runner.worker_alive():
        time.sleep(2.0)


def print_runs(limit: int, as_json: bool) -> None:
    """`recipe runs`: the recipe runs, newest first, each with its stages' statuses, jobs, models and messages (the
    Recipe page's run picker and stage table)."""
    from backend import recipe, runner

    if limit < 0:
        raise ValueError(f"--limit {limit}: give the number of runs, or 0 for all.")
    alive, active = runner.worker_alive(), runner.active_jobs()  # once, for every stage's message
    from backend.recipe.state import evaluations, model_scores, read_pass

    runs = []
    with read_pass():  # the models and each evaluation's scores read once, not per stage and model
        for run in recipe.runs(limit or None):
            rows = recipe.stages(run.id)
            counts, shared = model_scores(rows), {}  # an evaluation job's rows: its message is all its models' together
            for row, job in rows:
                if row.kind == "eval" and job is not None:
                    shared[job.id] = shared.get(job.id, 0) + 1
            jobs_said: dict[int, str] = {}

            def message(row, job) -> str:
                said = runner.job_message(job, active, alive) if job else ""
                if row.kind != "eval" or shared.get(job.id if job else None, 0) < 2 or job.status != "succeeded":
                    return said
                jobs_said[job.id] = said  # said once, under the run (the evaluation's line)
                return f"done: scores {counts.get((job.id, (row.info or {}).get('model')), 0)}"
            stages = [{"stage": row.stage, "kind": row.kind, "status": recipe.stage_state(row, job),
                       "job": job.id if job else row.job_id, "output": row.output, "message": message(row, job)}
                      for row, job in rows]
            evaluation = [{**e, "message": jobs_said[e["job"]]} if e["job"] in jobs_said else e
                          for e in evaluations(rows)]  # per evaluation job: its status, models scored of how many
            runs.append({"id": run.id, "name": run.name, "created": run.created, "stages": stages,
                         "evaluation": evaluation})
    if as_json:
        return _print_json(runs)
    if not runs:
        print("no recipe has run yet: `python -m backend recipe run FILE` first.", file=sys.stderr)
    from backend.recipe.state import NOT_QUEUED

    def short(status: str) -> str:  # NOT_QUEUED's reason once under the run, not in every row (it broke the columns)
        return "not queued" if status == NOT_QUEUED else status or "-"

    for run in runs:
        tally: dict[str, int] = {}
        for st in run["stages"]:
            tally[short(st["status"])] = tally.get(short(st["status"]), 0) + 1
        n = len(run["stages"])
        print(f"run {run['id']} · {run['name']} · {run['created']:%Y-%m-%d %H:%M} · {n} stage{'' if n == 1 else 's'}"
              + (": " + ", ".join(f"{k} {state}" for state, k in tally.items()) if tally else ""))
        width = max([len("stage"), *(len(st["stage"]) for st in run["stages"])])
        for st in run["stages"]:
            said = st["message"] if len(st["message"]) <= 60 else st["message"][:59] + "…"
            print(f"  {st['stage']:{width}} {st['kind']:10} {short(st['status']):11} {st['job'] or '-':>5} "
                  f"{st['output'] or '-'}  {said}".rstrip())
        for e in run["evaluation"]:  # the graph's evaluation box: how far a running evaluation job has got
            if e["status"] == "running":
                print(f"  {e['text']}")
            elif e.get("message"):  # a shared job's result, once: its rows give each model's own count
                print(f"  {e['text']} — {e['message']}")
        if "not queued" in tally:
            print(f"  not queued: {NOT_QUEUED.removeprefix('not queued (').removesuffix(')')}")


def _recipe_interrupted(before: int) -> str:
    """What a Ctrl-C during a foreground `recipe run` leaves: the runs it submitted (newer than `before`), their
    stage jobs it stopped (the worker loop marks them interrupted as it ends: runner._interrupt_running; a row still
    running is one it was ending) and those still queued."""
    from backend import recipe

    mine = [r.id for r in recipe.runs(20) if r.id > before]
    if not mine:
        return "the recipe run stopped before its stages were submitted; nothing was queued"
    jobs = {job.id: job.status for run_id in mine for row, job in recipe.stages(run_id)
            if job is not None and not row.reused and (row.info or {}).get("status") != "in-flight"}
    stopped = [str(i) for i, status in sorted(jobs.items()) if status in ("running", "interrupted")]
    queued = [str(i) for i, status in sorted(jobs.items()) if status == "queued"]
    said = f"recipe run{'s' if len(mine) > 1 else ''} {', '.join(map(str, mine))} stopped here"
    if stopped:
        many = len(stopped) > 1
        said += (f"; job{'s' if many else ''} {', '.join(stopped)} {'were' if many else 'was'} interrupted (python -m "
                 f"backend jobs resume {stopped[0] if not many else 'ID'} goes on, and the stages waiting for "
                 f"{'them' if many else 'it'} with {'them' if many else 'it'})")
    if queued:
        many = len(queued) > 1
        said += (f"; queued job{'s' if many else ''} {', '.join(queued)} wait{'' if many else 's'} for a worker "
                 f"(python -m backend worker), or python -m backend recipe cancel "
                 f"{mine[0] if len(mine) == 1 else 'RUN'} drops {'them' if many else 'it'}")
    return said + f"; python -m backend recipe runs shows {'them' if len(mine) > 1 else 'it'}"


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "recipe": "the SOLAR experiment as one YAML file: new, plan, run, runs, show, tables, cancel",
}


def add_recipe(sub) -> None:
    """The `recipe` command's parser and its actions'."""
    rc = sub.add_parser("recipe", help=HELP["recipe"])
    ra = rc.add_subparsers(dest="action", required=True)
    rn = ra.add_parser("new", help="print a preset recipe (YAML)")
    rn.add_argument("target", metavar="PRESET", help="smoke, solar-mini or solar-10.7b")
    rn.add_argument("--base", help="the base model (smoke needs one)")
    rn.add_argument("--m", type=int, help="layers removed from each copy")
    ra.add_parser("plan", help="what would run and what is reused").add_argument("target", metavar="FILE",
                                                                                 help="a recipe YAML file")
    rr = ra.add_parser("run", help="submit the stages as dependent jobs and run them here")
    rr.add_argument("target", metavar="FILE", help="a recipe YAML file")
    rr.add_argument("--queue", action="store_true", help="leave the jobs to the worker")
    rt = ra.add_parser("tables", help="the paper's tables from a run")
    rt.add_argument("target", metavar="RUN", type=int, nargs="?", help="a recipe run's id (default: the latest)")
    rt.add_argument("--format", default="md", choices=["md", "csv", "tex"], help="output format")
    rt.add_argument("--all-metrics", action="store_true",
                    help="every stored metric of each task (qa's abstention, cut-off, empty and hallucination rates, "
                         "per kind of item); default: each task's headline score, as the Compare page's table shows "
                         "it (and lm-eval:h6's six tasks), in the paper's order")
    ra.add_parser("cancel", help="cancel the run's waiting and running jobs (exit code 1 when none is left to "
                                 "cancel)").add_argument(
        "target", metavar="RUN", type=int, help="a recipe run's id")
    rs = ra.add_parser("runs", help="the recipe runs, newest first, each with its stages' statuses, jobs and models "
                                    "(the Recipe page)")
    rs.add_argument("--limit", type=int, default=20, help="the newest N runs, 0 for all")
    rs.add_argument("--json", action="store_true",
                    help=f"a JSON array with every field whole, for scripts ({JSON_NULL})")
    ra.add_parser("show", help="print a run's recipe as YAML, as it ran (`recipe run FILE` reruns it)").add_argument(
        "target", metavar="RUN", type=int, help="a recipe run's id")
    rc.set_defaults(fn=cmd_recipe)
