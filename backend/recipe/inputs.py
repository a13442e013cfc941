"""What a recipe's plan reads besides its YAML (backend/recipe/plan.py plans with it): the fingerprints of model
folders, data files, data sets, mixes and task files that go into a stage's hash, and the checks that read a
stage's data and task files on this machine as its job will, so a bad input is refused before anything runs."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlmodel import select

from backend import data, registry
from backend.modelinfo import folder_stat
from backend.recipe.spec import RecipeError, stage_refs
from backend.specs import EvalSpec
from storage import db
from storage.models import DatasetRecord

def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Sizes and mtimes of the files that define a model (modelinfo.folder_stat), hashed."""
    return _sha(folder_stat(folder))


CONTENT_HASH_MAX = 256 << 20  # data files up to this size are hashed by content, larger ones by size and mtime


def _file_fp(path: Path) -> str:
    """A data file's fingerprint: its content's hash (a rewrite with the same rows, a checkout or a copy changes
    nothing), or for a very large file its size and mtime (hashing gigabytes at every plan would be slow)."""
    st = path.stat()
    if st.st_size > CONTENT_HASH_MAX:
        return _sha([str(path.resolve()), st.st_size, st.st_mtime_ns])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hub_online() -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _offline(what: str, ref: str) -> RecipeError:
    return RecipeError(f"{what}: {ref!r} is a Hub id and the Hugging Face Hub cannot be reached from this machine. "
                       "This recipe is meant for an online GPU machine; here, import or copy the files and give "
                       "their folder (or a registered name) instead.")


def _output_name(recipe: str, stage: str, h: str) -> str:
    return f"{f'{recipe}-{stage}'[:91]}-{h[:8]}"


def _num_layers(folder: Path) -> int:
    from backend.modelinfo import inspect_model

    return inspect_model(folder).num_layers


def _source_fp(src: str, where: str, produced: dict[str, str], seen: tuple[str, ...] = ()) -> str:
    """A data source's fingerprint, refusing a missing one (named by its field). A mix is the fingerprints of its
    sources (data.expand reads them, so their contents are what the stage trains on; its record holds only their
    names), each found as this function finds any source; `seen`: the mixes this one is inside (a mix that holds
    itself is refused, as the job's data.expand would recurse without end)."""
    if src.startswith("builtin:"):
        try:
            return _file_fp(data.builtin_path(src.removeprefix("builtin:")))
        except data.DataError as exc:
            raise RecipeError(f"{where}: {exc}") from None
    if src.startswith(("dataset:", "mix:")):
        name = src.split(":", 1)[1]
        if name in produced:  # made by a synth-math stage of this recipe
            return produced[name]
        with db.session() as s:
            rec = s.exec(select(DatasetRecord).where(DatasetRecord.name == name)).first()
        if rec is None:
            raise RecipeError(f"{where}: no registered data set named {name!r} (see `datasets list`; a recipe's own "
                              "synthetic data is `stage:STAGE/instruct` or `stage:STAGE/alignment`).")
        if src.startswith("mix:") and rec.kind == "mix":
            if src in seen:
                raise RecipeError(f"{where}: a cycle of mixes {' -> '.join([*seen[seen.index(src):], src])}; a mix "
                                  "cannot contain itself. Save it again from its sources.")
            members = (rec.provenance or {}).get("sources") or []
            return _sha(["mix", rec.provenance, [_source_fp(x["source"], f"{where}: {src}", produced, (*seen, src))
                                                 for x in members]])
        return _sha([rec.rows, rec.provenance, rec.path, Path(rec.path).stat().st_mtime_ns if rec.path and
                     Path(rec.path).exists() else 0])
    path = Path(src).expanduser()
    if path.exists():
        if problem := data.not_a_regular_file(path):  # hashing a named pipe waited forever, /dev/zero never ended
            raise RecipeError(f"{where}: {problem}")
        return _file_fp(path)
    if data.names_data_file(path) or src.startswith((".", "/", "~")):  # x.JSONL and x.jsonl.gz too, as data reads
        raise RecipeError(f"{where}: data file {src} does not exist.")
    if src.count("/") == 1:
        return _sha(["hub", src])  # a Hub data set id; checked online by plan() when used
    raise RecipeError(f"{where}: {src!r} is not builtin:NAME, dataset:NAME, mix:NAME, stage:STAGE/instruct, a file "
                      "or a Hub id.")


def _check_rows(src: str, kind: str, where: str, checked: set, weight: float = 1.0) -> None:
    """Read a stage's data on this machine (a built-in, a registered set, a local file, each source of a mix) as its
    training job will (training.check_inputs: the mix expanded, each file parses, its columns fit a layout of the
    stage's kind, the first rows convert): a malformed file or one of the wrong layout passed the plan, and failed
    its stage only after the stages before it had run, leaving the ones after it waiting. Hub ids are left to the
    job. `checked`: (source, kind) pairs already read in this plan (a sweep's stages share their data). `weight`:
    the stage's weight of `src`, which a mix's members' weights multiply (data.expand refuses a product past
    data.MAX_REPEATS; expanded at 1.0, a mix used at 10,000 passed the plan and failed its stage)."""
    try:
        items = data.expand([(src, weight)])
    except data.DataError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    if (src, kind) in checked:
        return
    try:
        for item, _ in items:
            if (item, kind) not in checked and not data.hub_id(item):
                data.check_source(item, kind)
                checked.add((item, kind))
    except data.DataError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    checked.add((src, kind))


# The columns of the two sets a synth-math stage writes (backend/synth/pipeline.py, export): Synth. Math-Instruct
# as chat turns, Synth. Math-Alignment as preference pairs (SOLAR, arXiv 2312.15166, section 3).
SYNTH_PARTS = {"instruct": ("Synth. Math-Instruct", ("messages",)),
               "alignment": ("Synth. Math-Alignment", ("prompt", "chosen", "rejected"))}


def _misfit(part: str, kind: str) -> str | None:
    """Why a synthetic part's rows fit no layout a stage of `kind` trains on (data.detect_layout's reason, the
    job's own check), or None when they fit."""
    try:
        data.detect_layout(list(SYNTH_PARTS[part][1]), kind)
        return None
    except data.DataError as exc:
        return str(exc)


def _check_part(stage: str, part: str, kind: str, where: str) -> None:
    """A recipe's own synthetic data, checked from its part's known columns: the file does not exist until its
    synth-math stage has run, and a dpo stage reading Math-Instruct planned, then failed only after the up-scale
    and every stage before it had run, leaving the stages after it waiting."""
    if (why := _misfit(part, kind)) is None:
        return
    label, cols = SYNTH_PARTS[part]
    other = next((p for p in SYNTH_PARTS if _misfit(p, kind) is None), None)
    instead = f"stage:{stage}/{other} ({SYNTH_PARTS[other][0]})" if other else "a data set of a layout it fits"
    raise RecipeError(f"{where}: stage:{stage}/{part} is {label} ({', '.join(cols)} rows), which a {kind} stage "
                      f"cannot train on — {why} Use {instead} instead.")


def _check_tasks(spec: EvalSpec, where: str, checked: set) -> None:
    """An evaluation's task files, read as its job will (evaluate.check_task), each once per plan: the recipe's
    evaluation is one spec per model, all with the same tasks."""
    from backend.evaluate import check_task

    for task in spec.tasks:
        if (task, "eval") not in checked:
            try:
                check_task(task, spec.limit)
            except ValueError as exc:
                raise RecipeError(f"{where}: {exc}") from None
            checked.add((task, "eval"))


def _task_fps(tasks: list[str], where: str, produced: dict[str, str]) -> dict[str, str]:
    """The fingerprints of the sources an evaluation's tasks read (evaluate.FILE_TASKS: perplexity:, qa:, mc:,
    gsm8k: a local file, or for perplexity a built-in, registered set or mix), by task: a task file edited after
    its evaluation ran left the hash, and so the stored scores the tables show, as they were. Tasks that read no
    named source (the built-in held-out sets, lm-eval) add nothing, nor a source this machine cannot read (a Hub
    set, or a file check_task refuses with its own words)."""
    from backend.evaluate import FILE_TASKS

    out = {}
    for j, task in enumerate(tasks):
        kind, _, arg = task.partition(":")
        if kind not in FILE_TASKS or not arg:
            continue
        if arg.startswith(("builtin:", "dataset:", "mix:")):
            out[task] = _source_fp(arg, f"{where}[{j}]", produced)
        elif (path := Path(arg).expanduser()).is_file():
            out[task] = _file_fp(path)
    return out


def _synth_fps(body: dict, where: str) -> dict[str, str]:
    """The fingerprints of what a synth-math stage reads besides its settings: a seeds file, a benchmark file (the
    contamination check) and a model:NAME rephraser's files. Without them an edited seeds file planned the same hash,
    and the stage, with every stage trained on its data, was reused from the old file's problems. A stage of the
    generator, the rules rephraser and no benchmark adds nothing (the hash it had)."""
    out = {}
    for key in ("seeds", "benchmark"):
        value = body.get(key)
        if value and value != "generator":
            path = Path(value).expanduser()
            if not path.is_file():  # the job reads it only after every stage before it has run
                said = data.not_a_regular_file(path) or f"file {value} does not exist."  # or: a pipe
                raise RecipeError(f"{where}.{key}: {said}")
            out[key] = _file_fp(path)
    rephraser = body.get("rephraser") or ""
    if rephraser.startswith("model:"):
        try:
            out["rephraser"] = _sha(["model", folder_fingerprint(registry.resolve(rephraser[6:])[0])])
        except registry.RegistryError as exc:
            raise RecipeError(f"{where}.rephraser: {exc}") from None
    return out


def _order(stages: list[dict]) -> list[dict]:
    """Stages in dependency order; a cycle is refused with its path."""
    by_name = {s["name"]: s for s in stages}
    state: dict[str, int] = {}
    out: list[dict] = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cyc = path[path.index(name):] + [name]
            raise RecipeError(f"stages: a cycle {' -> '.join(cyc)}; a stage cannot depend on its own output.")
        state[name] = 1
        for _, ref in stage_refs(by_name[name]):
            if ref in by_name:
                visit(ref, path + [name])
        state[name] = 2
        out.append(by_name[name])

    for s in stages:
        visit(s["name"], [])
    return out
