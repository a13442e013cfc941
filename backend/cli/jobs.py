"""Running the work: jobs, the worker, a Ray cluster's view, and the dashboard's password check.

    python -m backend worker
    python -m backend cluster status | check          # with DUS_RAY_ADDRESS=http://HEAD:8265 (a Ray cluster)
    python -m backend jobs list | show ID | cancel ID | resume ID | wait ID [--timeout S]
    python -m backend jobs log ID [--lines N] [--follow]    # --follow: like tail -f, until the job ends
    python -m backend auth hash | check [--address 0.0.0.0]
"""

from __future__ import annotations

import sys
import time

from backend.cli.common import JSON_NULL, WorkFailed, _on_interrupt, _print_json


def cmd_jobs(a) -> None:
    from backend import runner

    if a.action == "list":
        jobs = runner.list_jobs(a.limit or None, kinds=a.kind, statuses=a.status)
        # one read of the queue, the models and the heartbeats for every line (runner's one_pass): a model lookup per
        # queued job and a heartbeat read per running one made 901 SQL statements for 537 lines
        with runner.one_pass(jobs) as (active, alive):  # the pages' message: which job keeps it waiting
            said = {j.id: runner.job_message(j, active, alive) for j in jobs}
            # a queued job whose model or data was deleted since it was queued: the Jobs page's warning, in its words
            making = runner.made_by(active)
            fails = {j.id: w for j in jobs if (w := runner.will_fail(j, active, making))}
        # the newest --limit and every older queued or running one: how many others there are, and how to see them
        total = runner.count_jobs(a.kind, a.status)
        shown = (f"{len(jobs):,} of {total:,} {'matching ' if a.kind or a.status else ''}jobs shown (the {a.limit:,} "
                 "newest, and any older one queued or running); --limit 0 lists all, --limit N the newest N"
                 if a.limit and len(jobs) < total else "")  # with 0 every one is listed (one queued meanwhile)
        if a.json:
            if shown:
                print(shown, file=sys.stderr)
            return _print_json([{"id": j.id, "kind": j.kind, "status": j.status, "progress": j.progress,
                                 "message": said[j.id], "will_fail": fails.get(j.id),
                                 "error": j.error,
                                 "name": j.spec.get("name"), "output": runner.job_output(j),
                                 "result": j.result, "after": j.after, "needs": j.needs or [],
                                 "waits": j.waits or [], "created": j.created, "started": j.started,
                                 "finished": j.finished, "seconds": runner.seconds_all(j)} for j in jobs])
        cut = False
        for j in jobs:  # what each job makes, as the pages' "→ output": 14 queued sft jobs read alike without it
            # on one line: a message of several lines (a worker's pydantic error) broke the table's rows
            line, output = " ".join(said[j.id].split()), runner.job_output(j) or "-"
            cut |= len(line) > 60 or len(output) > 24
            print(f"{j.id:5d} {j.kind:10} {j.status:12} {j.progress:6.1%} "
                  f"{output if len(output) <= 24 else output[:23] + '…':24} "
                  f"{line if len(line) <= 60 else line[:59] + '…'}")
        for warning in fails.values():  # after the table, not cut at 60 characters: the reason is the point
            print(f"warning: {warning}", file=sys.stderr)
        if cut:
            print("a name or message cut with … is whole in: python -m backend jobs show ID", file=sys.stderr)
        if shown:
            print(shown, file=sys.stderr)
    elif a.action == "show":
        print(job_details(a.id))
    elif a.action == "cancel":
        before = runner.get(a.id)
        if before is not None and before.status in runner.FINISHED:  # `job 1: succeeded` read as a cancel done
            raise WorkFailed(f"job {a.id} {_has_ended(before.status, a.id)}: nothing to cancel.")
        job = runner.cancel(a.id)
        print(f"job {a.id}: {job.status}{_after_cancel(before, job)}")
    elif a.action == "resume":
        job = runner.resume(a.id)
        # its run had registered its model before it was stopped: marked done, nothing run again (runner.resume)
        done = job.status == "succeeded"
        said = f"its work was done: {job.message.removeprefix('done: ')}" if done else resume_says(job)
        print(f"job {a.id}: {job.status} ({said})")
    elif a.action == "wait":
        sys.exit(wait_for(a.id, a.timeout, a.poll))
    elif a.action == "log":
        sys.exit(show_log(a.id, a.lines, a.follow, a.poll))
    elif a.action == "exec":
        sys.exit(runner.execute(a.id))


def _after_cancel(before, job) -> str:
    """What `jobs cancel` adds to "cancelled": a job stopped while running is told what a resume then does, as a
    killed job's row says it (runner.what_resume_does: "resume it to continue from its last checkpoint,
    checkpoint-20 (python -m backend jobs resume 20 …)"); "job 20: cancelled" left a training's checkpoints
    unsaid. A job cancelled while queued ran nothing: nothing to add."""
    from backend import runner

    if job.status != "cancelled" or before is None or before.status != "running":  # it ended first (its own end
        return ""  # stands), or it never ran
    return f"; {runner.what_resume_does(job)}"


def _has_ended(status: str, job_id: int) -> str:
    """"has already succeeded", "was already cancelled": a finished job's status in a sentence ("is succeeded
    already" read as broken English)."""
    return {"succeeded": "has already succeeded", "failed": "has already failed",
            "cancelled": "was already cancelled",
            "interrupted": f"was already interrupted (python -m backend jobs resume {job_id} goes on from it)"
            }.get(status, f"has already ended ({status})")


def resume_says(job) -> str:
    """What a resume will do, by the Jobs page's rule (runner.messages.resume_action): `jobs resume` promised a
    checkpoint to a run cancelled at step 12 with none saved, and said a stopped evaluation started over."""
    from backend import runner

    return runner.messages.resume_action(job).says


def wait_for(job_id: int, timeout: float | None, poll: float) -> int:
    """`jobs wait ID`: poll until the job has finished; exit 0 if it succeeded, 1 if not (failed, cancelled,
    interrupted), 124 when --timeout ran out first (as timeout(1)); a job that is not there is refused (2)."""
    from backend import runner

    start = time.monotonic()
    _on_interrupt[0] = lambda: _job_goes_on(job_id, "stopped waiting", f"jobs wait {job_id} waits again")
    while True:
        job = runner.get(job_id)
        if job is None:
            raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
        if job.status in runner.FINISHED:
            print(_ended_line(job))
            return 0 if job.status == "succeeded" else 1
        if timeout is not None and time.monotonic() - start >= timeout:
            print(f"job {job_id}: still {job.status} after {timeout:g} s: {runner.job_message(job)}", file=sys.stderr)
            return 124
        time.sleep(poll if timeout is None else max(0.0, min(poll, timeout - (time.monotonic() - start))))


def _ended_line(job) -> str:
    """`job 2: failed: …` once: a failed job's message starts with its status already (runner.job_message), and
    "job 2: failed: failed: A model named …" said it twice."""
    from backend import runner

    said = runner.job_message(job)
    return f"job {job.id}: {said}" if said.startswith(job.status) else f"job {job.id}: {job.status}: {said}"


def _job_goes_on(job_id: int, what: str, again: str) -> str:
    """A Ctrl-C's line for a command that watched a job: the job is the worker's and goes on without it."""
    from backend import runner

    job = runner.get(job_id)
    if job is None or job.status in runner.FINISHED:
        return f"{what}; job {job_id} is {job.status if job else 'gone'} (python -m backend jobs show {job_id})"
    return (f"{what}; job {job_id} is still {job.status} and goes on without this command (python -m backend "
            f"{again}; jobs show {job_id} shows it, jobs cancel {job_id} stops it)")


def show_log(job_id: int, lines: int, follow: bool, poll: float) -> int:
    """`jobs log ID`: the last `lines` lines of the job's log (runner.log_tail, as the Jobs page shows it); with
    `follow`, then each line as it is written until the job ends, as `tail -f` (a queued job's log appears when a
    worker starts it): exit 0 if it succeeded, 1 if not, as `jobs wait`; the end goes to standard error, so standard
    output holds the log alone."""
    from pathlib import Path

    from backend import runner

    if lines < 0 or poll <= 0:
        raise ValueError(f"--lines {lines} --poll {poll:g}: give 0 or more lines, and a poll above 0 s.")
    job = runner.get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
    log = Path(job.log_path) if job.log_path else None
    if not follow:
        if log is None or not log.exists():
            if job.status in ("queued", "running"):  # as the Jobs page: not there yet, not an error
                print(f"job {job_id} is {job.status}: no log yet (a worker writes one when it starts the job; "
                      f"--follow waits for it)", file=sys.stderr)
                return 0
            raise ValueError(f"job {job_id} ({job.status}) has no log on this machine"
                             + (f" ({log} is not there)" if log else "") + ".")
        for line in runner.log_tail(log, lines):
            print(line)
        return 0
    _on_interrupt[0] = lambda: _job_goes_on(job_id, "stopped following its log", f"jobs log {job_id} --follow "
                                                                                 "follows it again")
    offset, rest, said = None, b"", False
    while True:
        job = runner.get(job_id)  # its status before the file: what it wrote before it ended is read below
        if job is None:
            raise ValueError(f"job {job_id} was deleted while its log was followed.")
        ended = job.status in runner.FINISHED
        if log is not None and log.exists():
            if offset is None:  # the last lines first, then what comes after them
                for line in runner.log_tail(log, lines):
                    print(line, flush=True)
                offset = log.stat().st_size
            else:
                if log.stat().st_size < offset:  # written over from the start: read it from there
                    offset, rest = 0, b""
                with open(log, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                rest = _print_lines(rest + data, final=ended)
        elif not said and not ended:
            print(f"job {job_id} is {job.status}: no log yet; following it once a worker starts the job",
                  file=sys.stderr, flush=True)
            said = True
        if ended:
            print(_ended_line(job), file=sys.stderr)  # "job 2: failed: failed: …" said it twice
            return 0 if job.status == "succeeded" else 1
        time.sleep(poll)


def _print_lines(data: bytes, final: bool) -> bytes:
    """Print the whole lines of `data` (a tqdm bar's \r ends one, as runner.log_tail splits them) and hand back the
    unfinished last one, to be printed with what follows it (all of it when `final`)."""
    parts = data.splitlines(keepends=True)
    keep = b""
    # a line not ended yet, or a \r that may be the first half of \r\n
    if parts and not final and (not parts[-1].endswith((b"\n", b"\r")) or parts[-1].endswith(b"\r")):
        keep = parts.pop()
    for part in parts:
        print(part.decode("utf-8", errors="replace").rstrip("\r\n"), flush=True)
    return keep


def job_details(job_id: int) -> str:
    """`jobs show ID`: what `jobs list` has no room for: the whole message (a failure's fix is at its end), the
    log, the timings and the spec, as YAML that `python -m backend run` takes back."""
    import yaml

    from backend import runner

    job = runner.get(job_id)
    if job is None:
        raise ValueError(f"No job {job_id}: python -m backend jobs list shows the jobs.")
    last, every = runner.seconds_run(job), runner.seconds_all(job)
    ran = "" if not (job.started and job.finished) else f" ({last:.0f} s)" if every == last else (
        f" (this run {last:.0f} s; all runs {every:.0f} s)")
    waits = [*([job.after] if job.after else []), *job.needs, *(job.waits or [])]
    lines = [f"job {job.id} ({job.kind}): {job.status}, {job.progress:.0%}",
             f"message: {runner.job_message(job)}",
             f"log: {job.log_path or '-'}",
             f"created: {job.created:%Y-%m-%d %H:%M:%S}  started: {_when(job.started)}  finished: "
             f"{_when(job.finished)}{ran}"]
    lines += [f"waits for jobs: {', '.join(map(str, waits))}"] if waits else []
    lines += [f"warning: {said}"] if (said := runner.will_fail(job)) else []
    lines += [f"host: {job.host}"] if job.host else []
    lines += ["result:", yaml.safe_dump(job.result, sort_keys=False, allow_unicode=True).rstrip()] if job.result else []
    spec = {"kind": job.spec.get("kind", job.kind), **job.spec}
    return "\n".join(lines + ["spec:", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).rstrip()])


def _when(at) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else "-"


def cmd_worker(a) -> None:
    from backend import runner
    from storage.models import utcnow

    start = utcnow()
    _on_interrupt[0] = lambda: _worker_interrupted(start)
    runner.worker(poll=a.poll, once=a.once, slots=a.slots, light_slots=a.light_slots)


def _worker_interrupted(start) -> str:
    """A Ctrl-C's line for `worker`: the jobs it was running, which it marked interrupted as it ended
    (runner._interrupt_running; those started since it started and interrupted now), and the queue that waits."""
    from datetime import timezone

    from backend import runner

    def utc(at):
        return at if at.tzinfo else at.replace(tzinfo=timezone.utc)  # SQLite hands times back without their zone

    ended = sorted(j.id for j in runner.list_jobs(None, statuses=["interrupted"]) if j.started and
                   utc(j.started) >= start)
    many = len(ended) > 1
    return ("the worker stopped; " + (f"job{'s' if many else ''} {', '.join(map(str, ended))} it was running "
                                      f"{'were' if many else 'was'} interrupted (python -m backend jobs resume "
                                      f"{ended[0] if not many else 'ID'} goes on); " if ended else "")
            + "queued jobs wait for the next worker")


def cmd_cluster(a) -> None:
    from backend.cluster import ray_view

    if a.action == "check":
        print(ray_view.check(a.address))
        return
    view = ray_view.status(a.address)
    print(f"Ray cluster at {view.address}\n\nnodes (free / total):\n{ray_view.table(view.node_rows())}"
          f"\n\nDUS jobs on it:\n{ray_view.table(view.job_rows())}")


def cmd_auth(a) -> None:
    """`hash`: DUS_PASSWORD_HASH from DUS_PASSWORD, standard input, or a prompt; `check`: run.sh's start check."""
    import getpass
    import os

    from backend import auth

    if a.action == "check":
        why = auth.problem(a.address, dict(os.environ), oidc=auth.oidc_in_files())
        if why:
            raise ValueError(why)
        print(f"ok: {a.address} is loopback" if not auth.login_required(a.address) else "ok: login configured")
        return
    password = os.environ.get(auth.PASSWORD_ENV)
    if password is None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ.")
    print(auth.hash_password(password))


def _limit(text: str) -> int:
    """--limit N: 0 or more. `--limit -3` listed every job, as 0 does (list_jobs(-3 or None) took no limit)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give the number of newest jobs to list, or 0 for all.")
    return n


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "auth": "hash a dashboard password, or check the start address (README: 'Exposing the dashboard')",
    "worker": "run queued jobs",
    "cluster": ("a Ray cluster (DUS_RAY_ADDRESS): status (nodes, resources, which job runs where) or check (the address"
                " answers, every node sees the workspace)"),
    "jobs": "list jobs, show one in full, cancel or resume one; also its log (jobs log ID --follow) and wait for it",
}


def add_auth(sub) -> None:
    """The `auth` command's parser."""
    au = sub.add_parser("auth", help=HELP["auth"])
    au.add_argument("action", choices=["hash", "check"], help="hash a password, or check the start address")
    au.add_argument("--address", default="127.0.0.1", help="check: the address the dashboard will listen on")
    au.set_defaults(fn=cmd_auth)


def add_worker(sub) -> None:
    """The `worker` command's parser."""
    w = sub.add_parser("worker", help=HELP["worker"])
    w.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue")
    w.add_argument("--once", action="store_true", help="run what is queued, then exit")
    w.add_argument("--slots", type=int, help="device jobs at a time: trainings, evaluations, synthetic math "
                   "(default $DUS_JOB_SLOTS or 1)")
    w.add_argument("--light-slots", type=int, help="light jobs at a time beside them: imports, upscales, merges, "
                   "pushes (default $DUS_LIGHT_SLOTS or 1; 0: they wait for the device slots too)")
    w.set_defaults(fn=cmd_worker)


def add_cluster(sub) -> None:
    """The `cluster` command's parser."""
    cl = sub.add_parser("cluster", help=HELP["cluster"])
    cl.add_argument("action", choices=["status", "check"], help="status or check")
    cl.add_argument("--address", help="the head's dashboard URL (default $DUS_RAY_ADDRESS)")
    cl.set_defaults(fn=cmd_cluster)


def add_jobs(sub) -> None:
    """The `jobs` command's parser and its actions'."""
    j = sub.add_parser("jobs", help=HELP["jobs"])
    ja = j.add_subparsers(dest="action", required=True)
    jl = ja.add_parser("list", help="one line per job, newest first (messages cut at 60 characters)")
    jl.add_argument("--limit", type=_limit, default=100, help="the newest N jobs, 0 for all (queued and running ones "
                                                             "are always listed)")
    from backend.specs import SPECS
    from storage.models import JOB_STATUSES

    # choices, as --status: a misspelt kind (sftt) listed nothing, exit 0
    jl.add_argument("--kind", nargs="+", choices=list(SPECS), help="only these kinds")
    jl.add_argument("--status", nargs="+", choices=JOB_STATUSES, help="only these statuses")
    jl.add_argument("--json", action="store_true",
                    help=f"a JSON array with every field whole, for scripts ({JSON_NULL})")
    for action, what in (("show", "the job's whole message, log path, timings and spec"),
                         ("cancel", "stop a waiting or running job"),
                         ("resume", "queue an interrupted, failed or cancelled job again (training: from its last "
                                    "checkpoint)"),
                         ("exec", "run the job in this process (what the worker starts)")):
        ja.add_parser(action, help=what).add_argument("id", metavar="ID", type=int, help="the job's id (jobs list)")
    # wait's own parser, not the loop's last one: its flags were added after the loop and reached `wait` only
    # because it came last (an action added after it would have taken them)
    jw = ja.add_parser("wait", help="wait until the job has finished; exit 0 if it succeeded, 1 if not")
    jw.add_argument("id", metavar="ID", type=int, help="the job's id (jobs list)")
    jw.add_argument("--timeout", type=float, help="give up after this many seconds (exit code 124)")
    jw.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the job")
    jg = ja.add_parser("log", help="the job's log, its last lines (the Jobs page's); --follow: then each new line "
                                   "until the job ends, exit 0 if it succeeded, 1 if not")
    jg.add_argument("id", metavar="ID", type=int, help="the job's id (jobs list)")
    jg.add_argument("--lines", "-n", type=int, default=60, help="how many of the last lines")
    jg.add_argument("--follow", "-f", action="store_true",
                    help="print new lines as they are written, until the job ends (as tail -f; Ctrl-C stops "
                         "following, not the job)")
    jg.add_argument("--poll", type=float, default=1.0, help="--follow: seconds between looks at the log")
    j.set_defaults(fn=cmd_jobs)
