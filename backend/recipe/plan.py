"""Plan a recipe, then hand its stages to the runner as jobs with dependencies.

    python -m backend recipe plan FILE      # what would run, what is reused
    python -m backend recipe run FILE       # submit and run (--queue: leave it to the worker)

Planning resolves every stage reference, checks what needs files (the base's depth against m, data sets present,
built-in, registered and local data and evaluation task files readable as their jobs will read them, the recipe's
own synthetic data of a layout its stage trains on, merges of models of one type, width and depth), and
gives every stage a hash of its spec and its inputs' fingerprints (upstream hashes, the base folder's file sizes
and mtimes — and the up-scale's second model's, data files' contents, each source of a mix, an evaluation's task
files and sets). The hash is part of the model's name (RECIPE-STAGE-HASH8), so a later stage
can name a model before it exists, an unchanged stage finds its model registered and is reused, and a changed
stage gets a new name and reruns with everything downstream of it.

The fingerprints and the checks of files live in inputs.py, those of models' shapes and weights in checks.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import select

from backend import data, registry, runner
from backend.recipe.checks import config_shape, folder_shape, made_shape, stage_shape, weights_missing
from backend.recipe.inputs import (SYNTH_PARTS, _check_part, _check_rows, _check_tasks, _num_layers, _offline,
                                   _order, _output_name, _sha, _source_fp, _synth_fps, _task_fps, folder_fingerprint,
                                   hub_online)
from backend.recipe.state import held_out_shortfall, stages
from backend.recipe.spec import (RESERVED, STAGE_REF, Budget, RecipeError, RecipeSpec, expand_runs, expand_stages,
                                 stage_refs, stage_spec)
from backend.spec_models import MERGE_ALIASES
from backend.specs import MERGE_DEFAULTS, TRAIN_KINDS, EvalSpec, ImportSpec, MergeSpec, UpscaleSpec, _Spec
from storage import db
from storage.models import DatasetRecord, Job, RecipeRun, RecipeStage

MODEL_KINDS = ("import", "upscale", "cpt", "sft", "dpo", "merge")


@dataclass
class Node:
    stage: str  # the stage's name; "base", "upscaled", "eval:STAGE"
    kind: str
    spec: _Spec | None  # None: the base as it is (nothing to run)
    output: str  # registered model name, data set prefix, or "" (eval)
    hash: str
    deps: list[str] = field(default_factory=list)
    depth: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # label, tables, sweep_of, data fingerprints
    status: str = "run"  # run | reuse | in-flight | given (the base)
    job_id: int | None = None
    replaces: list[int] = field(default_factory=list)  # queued jobs of an earlier run of it that can no longer run


@dataclass
class Plan:
    recipe: RecipeSpec
    nodes: list[Node]

    def node(self, stage: str) -> Node:
        return next(n for n in self.nodes if n.stage == stage)

    def lines(self) -> list[str]:
        out = [f"recipe {self.recipe.name}: {sum(n.status == 'run' for n in self.nodes)} to run, "
               f"{sum(n.status == 'reuse' for n in self.nodes)} reused, "
               f"{sum(n.status == 'in-flight' for n in self.nodes)} already queued"]
        replaced = sorted({j for n in self.nodes if n.status == "run" for j in n.replaces})
        if replaced:  # what `recipe run` will cancel: queued jobs of an earlier run that can no longer run
            out.append(f"  replaces queued job{'s' if len(replaced) > 1 else ''} {', '.join(map(str, replaced))}: "
                       "they wait for a job that ended without succeeding; this run makes their stages again")
        out += [f"  note: {note}" for note in self.notes()]
        for n in self.nodes:
            what = f"job {n.job_id}" if n.job_id else ""
            out.append(f"  {n.status:9} {n.stage:28} {n.kind:10} {n.hash[:8]}  {n.output or '-':44} "
                       f"{'needs ' + ', '.join(n.deps) if n.deps else ''} {what}".rstrip())
        return out

    def notes(self) -> list[str]:
        """What the run will lack, said before it runs: a training stage whose rows (after the budget, or in a small
        file) are too few to hold any out logs no held-out loss: a CPT stage then has no curve on the Recovery tab
        (DUS's headline), an SFT or DPO stage no eval loss to tell overfitting by."""
        out = []
        for n in (n for n in self.nodes if n.kind in TRAIN_KINDS and n.status != "reuse"):
            budget = "budget " if self.recipe.budget.max_rows == n.spec.max_rows else ""
            if why := held_out_shortfall(n.spec.model_dump(), budget):
                lacks = "held-out loss, so no recovery curve" if n.kind == "cpt" else "eval loss"
                more = ("an eval_fraction above 0" if "eval_fraction 0" in why else
                        f"more rows (max_rows {data.MIN_HELD_OUT_ROWS} or more)" if "max_rows" in why else
                        f"more rows ({data.MIN_HELD_OUT_ROWS} or more in all)")
                out.append(f"stage {n.stage} will log no {lacks}: {why}; give it eval_data or {more}.")
        return out


def plan(recipe: RecipeSpec) -> Plan:
    """Resolve, check and hash one (sweep-expanded) recipe; look up what is already made or queued."""
    if isinstance(recipe.upscale, dict) and isinstance(recipe.upscale.get("m"), (list, str)):
        raise RecipeError("upscale.m is a sweep: plan each run (expand_runs) separately.")
    known = _Known()
    nodes = [_base_node(recipe, known)]
    if recipe.upscale is not None:
        nodes.append(_upscale_node(recipe, nodes[0], known))
    # --- the stages, in dependency order
    stages = expand_stages(recipe.stages)
    kinds = {s["name"]: s["kind"] for s in stages}
    _check_refs(recipe, stages, kinds)
    for st in _order(stages):
        nodes.append(_stage_node(recipe, st, kinds, known))
    if recipe.eval is not None:
        nodes += _eval_nodes(recipe, nodes, known)
    _look_up(nodes)
    return Plan(recipe, nodes)


@dataclass
class _Known:
    """What planning has resolved so far, by stage name or outside model reference: each model's depth, output name
    and hash (a later stage's hash holds those of the models it reads), the data and task files read (once each),
    and whether the Hub answers (asked once, and only when the recipe names something there)."""
    depth: dict[str, int | None] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    checked: set = field(default_factory=set)
    online: bool | None = None
    shape: dict = field(default_factory=dict)  # each model's checks.Shape: what a merge compares of it

    def add(self, node: Node) -> None:
        self.depth[node.stage], self.out[node.stage], self.hashes[node.stage] = node.depth, node.output, node.hash

    def need_hub(self, what: str, ref: str) -> None:
        if self.online is None:
            self.online = hub_online()
        if not self.online:
            raise _offline(what, ref)


def _base_node(recipe: RecipeSpec, known: _Known) -> Node:
    """The base: registered, built-in, a folder (given: nothing to run), or (online) a Hub id imported by a job,
    whose depth its config.json on the Hub says."""
    try:
        folder, reg_name = registry.resolve(recipe.base)
        base = Node("base", "base", None, reg_name or str(folder), _sha(["base", folder_fingerprint(folder)]),
                    depth=_num_layers(folder), status="given")
        known.shape["base"] = folder_shape(reg_name or str(folder), folder)
    except registry.RegistryError:
        if recipe.base.count("/") != 1 or recipe.base.startswith((".", "/", "~")):
            raise RecipeError(f"base: {recipe.base!r} is neither a registered model, 'builtin', a model folder "
                              "nor a Hub id (owner/name).") from None
        known.need_hub("base", recipe.base)
        from huggingface_hub import hf_hub_download

        cfg = json.loads(Path(hf_hub_download(recipe.base, "config.json")).read_text())
        h = _sha(["hub", recipe.base])
        base = Node("base", "import", None, _output_name(recipe.name, "base", h), h,
                    depth=int(cfg["num_hidden_layers"]))
        known.shape["base"] = config_shape(recipe.base, cfg)
        base.spec = ImportSpec(target=recipe.base, name=base.output)
    known.add(base)
    return base


def _upscale_node(recipe: RecipeSpec, base: Node, known: _Known) -> Node:
    """The up-scaled model, its depth by the build's own rules (backend/upscale's layer_slots), so that m or slices
    the base cannot hold fail here, before any job is queued."""
    body = dict(recipe.upscale)
    second = None  # the slices' second source: its files are part of the hash, as any outside model's are
    if body.get("second"):
        try:
            second = registry.resolve(body["second"])[0]
        except registry.RegistryError as exc:
            raise RecipeError(f"upscale.second: {exc}") from None
    # without a second model the hash is as before: an up-scaled model built earlier is still reused
    h = _sha(["upscale", body, base.hash] + ([_sha(["model", folder_fingerprint(second)])] if second else []))
    spec = UpscaleSpec(base=base.output, name=_output_name(recipe.name, "upscaled", h), **body)
    from backend.upscale import layer_slots

    depths = [base.depth] + ([_num_layers(second)] if second else [])
    try:  # the build's own rules and words (a groups or slice the base cannot hold was left to the job)
        d = len(layer_slots(spec, depths))
    except ValueError as exc:
        raise RecipeError(f"upscale: {exc}") from None
    node = Node("upscaled", "upscale", spec, spec.name, h, ["base"], d, {"from": ["base"]})
    known.shape["upscaled"] = made_shape(known.shape["base"], "upscaled", d)  # depth up-scaling: the depth only
    known.add(node)
    return node


def _check_refs(recipe: RecipeSpec, stages: list[dict], kinds: dict[str, str]) -> None:
    """Every stage reference names one model this recipe makes (not a sweep of several), synthetic data of a
    synth-math stage, or a registered model or folder: all of them checked before any stage is hashed."""
    names = set(kinds)
    swept = {s["sweep_of"]["group"] for s in stages if "sweep_of" in s}
    for st in stages:
        for fld, ref in stage_refs(st):
            where = f"stage {st['name']}.{fld}"
            if ref in swept:
                raise RecipeError(f"{where}: {ref!r} is a sweep (several models); refer to one of its stages.")
            if ref == "upscaled" and recipe.upscale is None:
                raise RecipeError(f"{where}: 'upscaled' names the up-scaled model, but this recipe has no upscale.")
            if ref in names or ref in RESERVED:
                if fld.startswith(("data", "eval_data")) and kinds.get(ref) != "synth-math":
                    raise RecipeError(f"{where}: stage:{ref}/… refers to synthetic data; {ref!r} is not a "
                                      "synth-math stage.")
                continue
            if fld.startswith(("data", "eval_data")) or not (registry.get(ref) or Path(ref).expanduser().is_dir()):
                raise RecipeError(f"{where}: {ref!r} is not a stage of this recipe (stages: "
                                  f"{', '.join(sorted(names)) or 'none'}) nor a registered model or model folder.")


def _stage_node(recipe: RecipeSpec, st: dict, kinds: dict[str, str], known: _Known) -> Node:
    """One stage: its body under the recipe's budget, its data and task files checked and fingerprinted, its hash
    (spec, upstream hashes, fingerprints), its spec under its output name, and the depth of the model it makes."""
    names = set(kinds)  # the recipe's stages, by name
    name, kind = st["name"], st["kind"]
    depth, out, hashes = known.depth, known.out, known.hashes
    deps = sorted({ref for _, ref in stage_refs(st) if ref in names or ref in RESERVED})
    for ref in {ref for _, ref in stage_refs(st) if ref not in names and ref not in RESERVED}:
        folder, _ = registry.resolve(ref)  # an outside model: its files are part of the hash
        hashes[ref], out[ref], depth[ref] = _sha(["model", folder_fingerprint(folder)]), ref, _num_layers(folder)
        known.shape[ref] = folder_shape(ref, folder)
    body = _budgeted({k: v for k, v in st.items() if k not in ("label", "tables", "sweep_of")}, kind, recipe.budget)
    # data sources: fingerprints in the hash; a stage's synthetic data is its producer's hash
    made = {f"{out[d]}-{part}": (d, part) for d in deps if kinds.get(d) == "synth-math" for part in SYNTH_PARTS}
    produced = {n: hashes[d] for n, (d, _) in made.items()}
    fps = _data_fps(name, kind, body, made, produced, known)
    # an evaluation's task files and sets, read as its job will, then their contents in its hash (only where a
    # task reads one: an evaluation of the built-in sets keeps the hash it had)
    read: dict = {}
    if kind == "eval":
        spec = stage_spec(body, lambda ref: out[ref], f"stage {name}")
        _check_tasks(spec, f"stage {name}.tasks", known.checked)
        read = _task_fps(spec.tasks, f"stage {name}.tasks", produced)
    elif kind == "synth-math":
        read = _synth_fps(body, f"stage {name}")
    # the stage's name is in the hash: two stages with the same body are still two models
    h = _sha([kind, body, [hashes[d] for d in deps], fps,
              {r: hashes[r] for _, r in stage_refs(st) if r in hashes}] + ([read] if read else []))
    output = "" if kind == "eval" else _output_name(recipe.name, name, h)
    if kind != "eval":
        spec = stage_spec(body, lambda ref: out[ref], f"stage {name}")
        spec = spec.model_copy(update={"name": output})
    if shape := stage_shape(st, known.shape):  # a merge checked as the Merge page checks one, before any stage runs
        known.shape[name] = shape
    node = Node(name, kind, spec, output, h, deps, (shape.num_layers or None) if shape else None, _stage_info(st, fps))
    known.add(node)
    return node


def _budgeted(body: dict, kind: str, b: Budget) -> dict:
    """The stage's body under the recipe's budget (a quick try of a long recipe): steps scaled and capped, rows,
    evaluation limits and synthetic seeds capped. Returns body, changed in place."""
    if kind in TRAIN_KINDS:
        steps = max(1, round(body.get("max_steps", 30) * b.steps_scale))
        body["max_steps"] = min(steps, b.max_steps) if b.max_steps else steps
        if b.max_rows:
            body["max_rows"] = min(body.get("max_rows") or b.max_rows, b.max_rows)
    # a cap is written into the body (and so the hash) only where it lowers the value: an eval_limit above the
    # default limit of 40 wrote limit 40 into a body without one, and every evaluation ran again for nothing
    if kind == "eval" and b.eval_limit and body.get("limit", 40) > b.eval_limit:
        body["limit"] = b.eval_limit
    if kind == "synth-math" and b.max_rows and (body.get("num_seeds", 200) or b.max_rows + 1) > b.max_rows:
        body["num_seeds"] = b.max_rows  # its seeds are its rows: a budget's quick try made every seed the stage
        # asked for (the solar-10.7b preset's 20,000)
    method = body.get("method", "average") if kind == "merge" else None
    method = MERGE_ALIASES.get(method, method) if isinstance(method, str) else None
    if method in MERGE_DEFAULTS and MergeSpec.reads(method, "density") and "density" not in body:
        # density written (so in the hash): a ties / dare stage that left it out was made at 0.5 before the default
        # became mergekit's 1.0, and that model is not this stage's
        body["density"] = MergeSpec.model_fields["density"].default
    return body


def _data_fps(name: str, kind: str, body: dict, made: dict, produced: dict, known: _Known) -> dict[str, str]:
    """The fingerprint of every data source of the stage, by source; a training stage's sources are read as its job
    will read them (this recipe's synthetic data: of a layout the stage trains on), and a Hub id needs the Hub."""
    fps = {}
    for key in ("data", "eval_data"):
        items = body.get(key) or []
        for j, d in enumerate(items if isinstance(items, list) else [items]):
            src = d.get("source", "") if isinstance(d, dict) else ""
            where = f"stage {name}.{key}[{j}].source"
            hit = STAGE_REF.match(src)
            src = f"dataset:{known.out[hit[1]]}-{hit[2]}" if hit else src
            fps[src] = _source_fp(src, where, produced)
            own = made.get(src.removeprefix("dataset:")) if src.startswith("dataset:") else None
            if kind in TRAIN_KINDS and own:
                _check_part(*own, kind, where)
            elif kind in TRAIN_KINDS and not data.hub_id(src):
                _check_rows(src, kind, where, known.checked, d.get("weight", 1.0))
            if data.hub_id(src):  # the plan leaves its rows to the job (this machine may be offline)
                known.need_hub(where, src)
    return fps


def _stage_info(st: dict, fps: dict[str, str]) -> dict[str, Any]:
    """What the Recipe page and the tables show of a stage: its label, tables, data, what it was made from."""
    kind = st["kind"]
    info = {"label": st.get("label", ""), "tables": st.get("tables") or ([kind] if kind in ("sft", "dpo",
            "merge") else []), "data": fps,
            "sources": [d.get("source") for d in (st.get("data") or []) if isinstance(d, dict)],
            "from": [st[k] for k in ("model",) if k in st] + list(st.get("models") or []),
            "merge": {k: st[k] for k in ("method", "weights", "t") if k in st} if kind == "merge" else {}}
    if "sweep_of" in st:
        info["sweep_of"] = st["sweep_of"]
    return info


def _eval_nodes(recipe: RecipeSpec, nodes: list[Node], known: _Known) -> list[Node]:
    """The recipe's `eval`: one evaluation of every model (the base's included), with the same tasks and
    settings."""
    ev = dict(recipe.eval)
    b = recipe.budget
    if b.eval_limit and ev.get("limit", 40) > b.eval_limit:  # only a cap that lowers it (as the stages')
        ev["limit"] = b.eval_limit
    evals = []
    task_fps: dict | None = None  # the task files' and sets' contents (_task_fps), read once: every model's
    for n in [n for n in nodes if n.kind in ("base", *MODEL_KINDS)]:  # evaluation reads the same
        spec = EvalSpec(models=[n.output], **ev)
        _check_tasks(spec, "eval.tasks", known.checked)
        if task_fps is None:
            task_fps = _task_fps(spec.tasks, "eval.tasks", {})
        # only where a task reads a file or set: an evaluation of the built-in sets keeps the hash it had
        h = _sha(["eval", ev, n.hash, n.output] + ([task_fps] if task_fps else []))
        evals.append(Node(f"eval:{n.stage}", "eval", spec, "", h, [n.stage],
                          info={"of": n.stage, "model": spec.models[0]}))
    return evals


def _look_up(nodes: list[Node]) -> None:
    """Mark what is already made (reuse) or already queued (in-flight: wait for that job, do not queue twice)."""
    status = {}
    with db.session() as s:
        for n in nodes:
            if n.status == "given":
                status[n.stage] = n.status
                continue
            rows = s.exec(select(RecipeStage).where(RecipeStage.hash == n.hash).order_by(RecipeStage.id.desc())).all()
            jobs = [s.get(Job, r.job_id) for r in rows if r.job_id]
            # an evaluation job that left this node's model out (skip_missing: its stage had failed) did not score
            # it: not a reuse, or a resumed stage's model is never evaluated
            model = (n.info or {}).get("model") if n.kind == "eval" else None
            done = next((j for j in jobs if j and j.status == "succeeded"
                         and (model is None or model not in (j.result or {}).get("skipped", []))), None)
            upstream_runs = any(status.get(d) == "run" for d in n.deps)
            # a queued job behind one that ended without succeeding (a `recipe run` stopped by Ctrl-C, its up-scale
            # interrupted) is no job in flight: adopted, the rerun made the interrupted stage alone and its
            # dependants were cancelled; nor is an evaluation queued before, when its model is made anew (it
            # waits for the old job, not the new one, and left the model out)
            dead = {j.id for j in jobs if j and j.status == "queued"
                    and (runner.never_runs(j) or n.kind == "eval" and runner.scores_nothing(j))}
            # adopted only when it makes this stage's model: the same recipe under another name has the same hashes,
            # and its next stage reads the model under its own name, which the other run's job does not make
            live = next((j for j in jobs if j and j.status in ("queued", "running") and j.id not in dead
                         and not (n.kind == "eval" and upstream_runs)
                         and (n.kind == "eval" or runner.planned_name(j) == n.output)), None)
            n.replaces = sorted(dead)
            if n.kind == "synth-math":
                made = s.exec(select(DatasetRecord).where(DatasetRecord.name == f"{n.output}-instruct")).first()
            elif n.kind == "eval":
                made = done is not None
            else:
                rec = registry.get(n.output)
                made = rec is not None and Path(rec.path, "config.json").exists()
                if made and (missing := weights_missing(n.stage, n.output, rec.path)):
                    raise missing
            if made and not (n.kind == "eval" and upstream_runs):
                n.status, n.job_id = "reuse", done.id if done else None
            elif live is not None:
                n.status, n.job_id = "in-flight", live.id
            else:
                n.status = "run"
            status[n.stage] = n.status


def submit(p: Plan, text: str = "") -> int:
    """Queue the stages that must run, each needing the jobs of the stages it reads; record the run. Returns its
    id. A stage whose input's job fails is cancelled, with the reason, when a worker next looks for work (the
    runner's dependency check). Evaluations differ off a Ray cluster: the evaluation stages are one job that waits
    for its models' jobs however they end and leaves out a model whose job failed (skip_missing), so the others are
    still scored. On a Ray cluster each evaluation stage is a job of its own, cancelled like any other stage when its
    model's job fails."""
    from backend.cluster import ray_jobs

    addr = ray_jobs.address()
    # an earlier run's jobs that can no longer run, made anew here: cancelled first, or their names stay taken ("Job
    # 2 will register a model named ..."); queued again as they were if a check below refuses this run
    replaced = {j: runner.get(j).message for n in p.nodes if n.status == "run" for j in n.replaces}
    for job_id in replaced:
        runner.cancel(job_id, message="replaced: a rerun of its recipe makes this stage again")
    coming = {n.output for n in p.nodes if n.status == "run"}  # made by the stages queued here
    try:
        for n in p.nodes:  # an in-flight stage whose job ended since the plan (its stages would be refused by
            if n.status == "in-flight" and n.job_id is not None and (  # runner.submit halfway through this loop)
                    job := runner.get(n.job_id)) is not None and job.status in ("failed", "cancelled", "interrupted"):
                raise RecipeError(f"stage {n.stage}: its job {n.job_id} has {job.status} since the plan was made: "
                                  "plan the recipe again (Run) to make it anew.")
        for n in p.nodes:  # a stage runner.submit (or the cluster) would refuse is refused before any row is written,
            if n.status == "run" and n.spec is not None:  # not halfway through the recipe's jobs
                runner.check_before_queueing(n.spec, coming)
                if addr:
                    ray_jobs.check_submission(n.spec, addr)
    except Exception:
        for job_id, message in replaced.items():
            runner.requeue_cancelled(job_id, message)
        raise
    # the run and every stage's row first, each job written into its row as it is queued: rows written at the end
    # left a Run cut off halfway with hundreds of queued jobs and nothing `recipe cancel` or the page could find
    with db.session() as s:
        run = RecipeRun(name=p.recipe.name, text=text or p.recipe.to_yaml())
        s.add(run)
        s.commit()
        s.refresh(run)
        run_id = run.id
        rows = [RecipeStage(run_id=run_id, recipe=p.recipe.name, stage=n.stage, kind=n.kind, output=n.output,
                            hash=n.hash, job_id=n.job_id, reused=n.status in ("reuse", "given"),
                            info={**n.info, "deps": n.deps, "depth": n.depth, "status": n.status}) for n in p.nodes]
        s.add_all(rows)
        s.commit()
        row_of = {n.stage: r.id for n, r in zip(p.nodes, rows)}
    jobs: dict[str, int | None] = {}

    def needs_of(n: Node) -> list[int]:
        return [jobs[d] for d in n.deps if jobs.get(d) and p.node(d).status in ("run", "in-flight")]

    def queued(ns: list[Node], job_id: int) -> None:
        with db.session() as s:
            for n in ns:
                n.job_id = jobs[n.stage] = job_id
                s.get(RecipeStage, row_of[n.stage]).job_id = job_id
            s.commit()

    # One evaluation job for every model that needs one: each job pays a process start and imports (about 10 s
    # on a busy CPU), which dominates a small model's evaluation. Rows stay per model, so reuse stays per model.
    # It waits for its models' jobs to end however they end, and leaves out a model whose job failed (skip_missing):
    # with `needs`, one failed ablation cancelled every model's scores, and the run's tables came out empty.
    # On a Ray cluster they fan out instead, one job per model, across the nodes.
    evals = [] if addr else [n for n in p.nodes
                             if n.kind == "eval" and n.status == "run" and n.stage.startswith("eval:")]
    try:
        for n in p.nodes:
            jobs[n.stage] = n.job_id
            if n.status == "run" and n.spec is not None and n not in evals:
                queued([n], runner.submit(n.spec, needs=needs_of(n)).id)
        if evals:
            spec = evals[0].spec.model_copy(update={"models": [m for n in evals for m in n.spec.models],
                                                    "skip_missing": True})
            queued(evals, runner.submit(spec, waits=sorted({j for n in evals for j in needs_of(n)})).id)
    except Exception:  # refused halfway (another tab queued one of its names since the checks above): undone
        _withdraw_run(run_id, [jobs[n.stage] for n in p.nodes if n.status == "run" and jobs.get(n.stage)], replaced)
        raise
    return run_id


def _withdraw_run(run_id: int, queued: list[int], replaced: dict[int, str]) -> None:
    """Undo a submit refused halfway: the jobs it queued cancelled, its rows removed, the earlier run's jobs it
    replaced queued again. Left, they ran and took their names, and the replaced jobs stayed cancelled."""
    from sqlalchemy import delete

    for job_id in queued:
        runner.cancel(job_id, message=f"not run: recipe run {run_id} was refused halfway and withdrawn")
    with db.session() as s:
        s.exec(delete(RecipeStage).where(RecipeStage.run_id == run_id))
        s.exec(delete(RecipeRun).where(RecipeRun.id == run_id))
        s.commit()
    for job_id, message in replaced.items():
        runner.requeue_cancelled(job_id, message)


def plan_text(text: str) -> list[Plan]:
    from backend.recipe.spec import load_recipe

    return [plan(r) for r in expand_runs(load_recipe(text))]


def run_recipe(text: str, *, queue: bool = True, plans: list[Plan] | None = None) -> list[int]:
    """Plan every run of the recipe (all are checked before any is queued; `plans`: planned already), submit them;
    without `queue`, run here the runs' jobs and those they wait for (another run's stage in flight) until none is
    runnable: not every job queued in the workspace, another machine's included."""
    plans = plan_text(text) if plans is None else plans
    ids = [submit(p, text) for p in plans]
    if not queue:
        runner.worker(once=True, only=runner.with_dependencies(
            job.id for run_id in ids for _, job in stages(run_id) if job is not None))
    return ids
