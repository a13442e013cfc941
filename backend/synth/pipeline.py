"""The synthetic-math job: seeds -> rephrased pairs -> verification and contamination check -> registered data
sets, the way SOLAR built Synth. Math-Instruct and Synth. Math-Alignment (arXiv 2312.15166, section 3).

    python -m backend synth-math --seeds 200 --rephraser rules --out workspace/datasets/synth-math

Rephrasings are cached in the output folder (one JSON line each, keyed by the seed's text and the rephraser with
its settings: rephrase.cache_key), so a job resumed after a stop skips the seeds already done. Pairs are stored as
rows (fast paging and filtering); exports write JSONL files in trl's standard formats and leave out failed, flagged
and hand-rejected pairs. A run never replaces a data set: a name a data set holds, or an output folder holding
anything but a stopped run's own files, is refused before any work (as backend/outputs.py refuses a model's), since
models may have been trained on it and pairs rejected in it by hand. Re-exporting the pairs (after hand rejections)
updates their own export in place, unless models were trained on the rows it would change. `delete_dataset`
removes one (refused while jobs or models depend on it).

The job is here; what it builds on lives beside it: contamination.py (the n-gram overlap check), datasets.py
(registering, reading and deleting data sets), pairs.py (the stored pairs: queries, hand rejections, length
statistics, the export and its push to the Hub). Pages, the CLI and the runner reach all of it through this module.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Callable

from sqlmodel import func, select

from backend.data_reading import not_a_regular_file
from backend.names import inside
from backend.specs import SynthMathSpec
from backend.synth.answers import extract_answer, same_answer
from backend.synth.contamination import ContaminationIndex, _WordWindows, canonical, ngrams, words
from backend.synth.datasets import (RUN_FILES, DatasetError, PushFailed, _taken, check_not_orphaned_dataset,
                                    dataset_users, delete_dataset, get_dataset, list_datasets, paper_mixes,
                                    save_dataset, save_mix, save_paper_mixes)
from backend.synth.pairs import (HAND_REJECTED, LENGTH_BIN, _exported, _pushable_export, _write_partial, counts,
                                 export, exported_digest, holds_export, length_gap, length_histograms, pairs_revision,
                                 push_to_hub, query_pairs, reject_by_hand)
from backend.synth.rephrase import RephraseError, cache_key, check_question, make_rephraser
from backend.synth.seeds import Seed, SeedError, load_seeds, read_records
from storage import db
from storage.models import DatasetRecord, SynthPair

Progress = Callable[[float, str], None]

# the package face (pages, the CLI, the runner, bench/contamination_index.py); a test that patches a name the job
# calls patches it here (make_rephraser, save_dataset, check_synth_free), one the other modules call where it lives
__all__ = ["ContaminationIndex", "_WordWindows", "canonical", "ngrams", "words", "RUN_FILES", "DatasetError",
           "PushFailed", "check_not_orphaned_dataset", "dataset_users", "delete_dataset", "get_dataset",
           "list_datasets", "paper_mixes", "save_dataset", "save_mix", "save_paper_mixes", "HAND_REJECTED",
           "LENGTH_BIN", "_pushable_export", "counts", "export", "exported_digest", "holds_export", "length_gap",
           "length_histograms", "pairs_revision", "push_to_hub", "query_pairs", "reject_by_hand", "load_benchmark",
           "verify", "check_synth_free", "run_synth_math"]


def load_benchmark(path: str) -> list[str]:
    """Question texts of a benchmark file: JSONL records or a JSON array (read as seed files are) with question /
    problem / prompt / text, or plain lines."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"Benchmark file {p} does not exist.")
    if problem := not_a_regular_file(p, "a .jsonl, .json or text file"):  # read as seed files are, lines too
        raise DatasetError(problem)
    if p.suffix.lower() == ".gz":  # its compressed bytes were read as lines of text: no question, nothing flagged
        raise DatasetError(f"Benchmark file {p.name} is gzip-compressed: decompress it (gunzip {p.name}) and give the "
                           ".jsonl, .json or text file.")
    if p.suffix.lower() not in (".jsonl", ".json"):  # bench.JSONL: its raw lines were taken for questions
        return [line for line in p.read_text(errors="replace").splitlines() if line.strip()]
    try:  # a .json array was read line by line: "line 1: no question field" for a one-line array
        records = read_records(p, p.name)
    except SeedError as exc:
        raise DatasetError(str(exc)) from None
    texts = []
    for n, row in records:
        text = next((row[k] for k in ("question", "problem", "prompt", "text") if k in row), None) \
            if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DatasetError(f"{p.name}, record {n}: no question / problem / prompt / text field of text.")
        texts.append(text)
    return texts


def verify(seed: Seed, new_solution: str) -> tuple[str, str, str]:
    """(status, reason, extracted answer): the rephrased solution's final answer must equal the seed's."""
    found = extract_answer(new_solution)
    if found is None:
        return "failed", "no final answer found in the rephrased solution", ""
    if not same_answer(found, seed.answer):
        return "failed", f"answer changed: {found} ≠ {seed.answer}", found
    return "verified", "", found


# ---------------------------------------------------------------- the job


def check_synth_free(spec: SynthMathSpec, out_dir: Path | None = None) -> Path:
    """The run's folder, resolved, once neither its data set names (NAME-pairs, -instruct, -alignment) nor the folder
    are taken: the folder may be new, empty, or hold only RUN_FILES of a run stopped before it registered anything
    (a resumed job goes on from its rephrase cache). Refused before any work, so nothing is written."""
    folder = Path(out_dir or spec.out or inside(db.workspace() / "datasets", spec.name)).expanduser().resolve()
    for name in (f"{spec.name}-pairs", f"{spec.name}-instruct", f"{spec.name}-alignment"):
        if (rec := get_dataset(name) or db.named_any_case(DatasetRecord, name)) is not None:
            hint = f" To export its pairs again: `python -m backend datasets export {name}`." \
                if rec.kind == "synth-pairs" else ""
            case = "" if rec.name == name else (f" ({name!r} differs only in case: a case-insensitive file system, "
                                                "macOS or Windows, holds both runs' files in one folder)")
            raise DatasetError(f"{_taken(rec)}{case}. Nothing was made: choose another name for this run (--name, or "
                               f"Name on the Synthetic math page); the existing data set stays as it is.{hint}")
        check_not_orphaned_dataset(name)
    if not folder.is_dir():
        return folder
    default = inside(db.workspace() / "datasets", spec.name)
    with db.session() as s:
        held = sorted(d.name for d in s.exec(select(DatasetRecord).where(DatasetRecord.path != ""))
                      if Path(d.path).parent.resolve() == folder)
    if held:
        raise DatasetError(f"{folder} holds the files of {', '.join(held)}: this run's pairs.jsonl and export would "
                           "replace them. Nothing was made: choose another output folder (--out), or leave it out "
                           f"to use {default}.")
    other = sorted(f.name for f in folder.iterdir() if f.name not in RUN_FILES and f.suffix != ".partial")
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise DatasetError(f"{folder} is not empty ({shown}): a synthetic-math run writes into a folder of its own. "
                           "Nothing was made: choose an empty or new output folder (--out), or leave it out to use "
                           f"{default}.")
    return folder


def run_synth_math(spec: SynthMathSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    out_dir = check_synth_free(spec, out_dir)
    _remove_dead_partials(out_dir)
    seeds = load_seeds(spec.seeds, spec.num_seeds, spec.seed, spec.categories or None, spec.levels or None)
    bench = (ContaminationIndex(load_benchmark(spec.benchmark), spec.ngram, whole_references=True)
             if spec.benchmark else None)
    rephraser = make_rephraser(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / "rephrase_cache.jsonl"
    cache: dict[str, dict] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that seed is simply redone
                continue
            if "key" in row:  # a row of an older cache, keyed by seed id only: that seed is redone
                cache[row["key"]] = row
    keys = {s.id: cache_key(s, rephraser) for s in seeds}
    todo = [s for s in seeds if keys[s.id] not in cache]
    progress(0.0, f"{len(seeds)} seeds, {len(seeds) - len(todo)} already rephrased (cache), {rephraser.name}")
    with open(cache_path, "a") as f:
        for i in range(0, len(todo), spec.batch_size):
            batch = todo[i:i + spec.batch_size]
            for seed, res in zip(batch, rephraser.rephrase(batch)):
                row = {"key": keys[seed.id], "seed_id": seed.id, "rephraser": rephraser.name}
                row.update({"error": str(res)} if isinstance(res, Exception) else {"question": res[0],
                                                                                    "solution": res[1]})
                cache[row["key"]] = row
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done = min(i + spec.batch_size, len(todo))
            progress(0.9 * done / max(len(todo), 1), f"rephrased {done}/{len(todo)}")
    pairs = []
    for seed in seeds:
        row = cache[keys[seed.id]]
        new_q, new_s = row.get("question", ""), row.get("solution", "")
        if "error" in row:
            status, reason, found = "failed", f"rephraser error: {row['error']}", ""
        else:
            try:  # a cached rephrasing too (a cache written before the rephrasers checked their questions)
                check_question(seed, new_q)
                status, reason, found = verify(seed, new_s)
            except RephraseError as exc:
                status, reason, found = "failed", f"rephraser error: {exc}", ""
        overlap = max(bench.overlap(seed.question), bench.overlap(new_q)) if bench else 0.0
        if status == "verified" and bench and overlap >= spec.overlap_threshold:
            status, reason = "flagged", f"{overlap:.0%} of its {spec.ngram}-grams appear in the benchmark"
        pairs.append(SynthPair(dataset_id=0, seed_id=seed.id, category=seed.category, level=seed.level, status=status,
                               reason=reason, question=seed.question, solution=seed.solution, answer=seed.answer,
                               new_question=new_q, new_solution=new_s, new_answer=found,
                               q_words=len(words(seed.question)), a_words=len(words(seed.solution)),
                               new_q_words=len(words(new_q)), new_a_words=len(words(new_s)), overlap=overlap))
    tally = {k: sum(p.status == k for p in pairs) for k in ("verified", "failed", "flagged")}
    settings = spec.model_dump(mode="json")
    pairs_file = out_dir / "pairs.jsonl"
    text = "".join(json.dumps(p.model_dump(exclude={"id", "dataset_id"}), ensure_ascii=False) + "\n" for p in pairs)
    # written whole beside its name, registered, and only then put in place: of two runs of one name at once (two
    # foreground commands) the one refused here had written its pairs.jsonl over the file the other registered,
    # and registered before the write, a full disk left a data set without its file
    partial = out_dir / f"pairs.{os.getpid()}-{secrets.token_hex(4)}.partial"  # this run's own: a second run of
    try:  # the name, refused below, removed the one the first was about to put in place
        _write_partial(partial, text, out_dir)
        rec = save_dataset(f"{spec.name}-pairs", "synth-pairs", str(pairs_file), len(pairs),
                           {"settings": settings, "rephraser": rephraser.name, "counts": tally}, pairs)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(pairs_file)
    with db.session() as s:
        usable = s.exec(select(func.count()).where(*_exported(rec.id, spec.include_flagged))).one()
    if usable:
        exported = export(rec.name, out_dir, spec.include_flagged)
    else:  # the pairs stay to be inspected (their reasons say why); an empty training set is not registered
        exported = {"rows": 0, "instruct": None, "alignment": None,
                    "note": "no pair passed verification: nothing exported; see the pairs' reasons"}
    seconds = time.perf_counter() - t0
    progress(1.0, f"{tally['verified']} verified, {tally['failed']} failed, {tally['flagged']} flagged")
    return {"pairs": rec.name, **exported, **tally, "seconds": round(seconds, 2)}


def _remove_dead_partials(out_dir: Path) -> None:
    """The pairs.PID-TAG.partial files of runs whose process is gone (killed between writing and registering); a
    live one's (a foreground run of the same name at this moment) is left to it."""
    for f in out_dir.glob("pairs.*.partial") if out_dir.is_dir() else ():
        try:
            os.kill(int(f.name.split(".")[1].split("-")[0]), 0)
        except (ValueError, ProcessLookupError):  # no pid in the name (an older run's), or no such process
            f.unlink(missing_ok=True)
        except PermissionError:  # another user's live process
            pass
