"""A synthetic run's pairs once registered: the inspector's queries and hand rejections, the length statistics of
what an export writes, the export to Synth. Math-Instruct and Synth. Math-Alignment (trl's standard formats, failed,
flagged and hand-rejected pairs left out), and the push of that export to the Hub.
"""

from __future__ import annotations

import errno
import json
from array import array
from pathlib import Path

from sqlalchemy import case as sa_case
from sqlmodel import func, select

from backend.synth.datasets import (DatasetError, PushFailed, _export_of, _trained_on, check_not_orphaned_dataset,
                                    get_dataset)
from backend.words import plural
from storage import db
from storage.models import DatasetRecord, SynthPair

def _not_export_of(rec: DatasetRecord | None, pairs_name: str) -> str | None:
    """Why export() of `pairs_name` may not take `rec`'s name (None when the name is free or holds its export)."""
    if rec is None or (rec.kind in ("sft", "dpo") and rec.provenance.get("pairs") == pairs_name):
        return None
    origin = f" exported from {rec.provenance['pairs']}" if "pairs" in rec.provenance else ""
    return (f"{rec.name!r} is a {rec.kind} data set{origin}, not an export of {pairs_name}. Nothing was exported: "
            "the export takes that name. Run the synthetic-math job again under another name, then export that.")


def _save_export(name: str, kind: str, path: str, rows: int, provenance: dict) -> DatasetRecord:
    """Register an export of provenance['pairs'], or update that export in place (a re-export after hand
    rejections); a name held by anything else is refused and left as it is."""
    with db.session() as s:
        rec = s.exec(select(DatasetRecord).where(DatasetRecord.name == name)).first()
        if why := _not_export_of(rec, provenance["pairs"]):
            raise DatasetError(why)
        rec = rec or DatasetRecord(name=name, kind=kind)
        rec.path, rec.rows, rec.provenance = path, rows, provenance
        s.add(rec)
        s.commit()
        s.refresh(rec)
        return rec


def _check_not_trained_on(rec: DatasetRecord | None, text: str) -> None:
    """Refuse a re-export that would change the rows of an export models were trained on (by its name, a mix or its
    file's path): their lineage reads that data set, so the evaluation's overlap check (backend/heldout.py) would
    read the new rows as their training data and miss the ones left out since. The same rows again pass."""
    if rec is None or not (models := _trained_on(rec.name, rec.path)):
        return
    old = Path(rec.path)
    if old.is_file() and old.read_text(encoding="utf-8") == text:
        return
    raise DatasetError(f"{len(models)} model(s) were trained on {rec.name} as it is: "
                       f"{', '.join(m.name for m in models)}. Nothing was exported: a re-export would change its "
                       "rows under them, and the evaluation's overlap check would read the new rows as their "
                       "training data. Run the synthetic-math job again under another name (--name, or Name on the "
                       "Synthetic math page) and export that, or delete those models first.")


def export(pairs_name: str, out_dir: Path | None = None, include_flagged: bool = False) -> dict:
    """Write Synth. Math-Instruct and Synth. Math-Alignment from the usable pairs and register both."""
    rec = get_dataset(pairs_name)
    if rec is None or rec.kind != "synth-pairs":
        raise DatasetError(f"No synthetic pairs named {pairs_name!r}.")
    prefix = pairs_name.removesuffix("-pairs")
    for name in (f"{prefix}-instruct", f"{prefix}-alignment"):  # before a file is written
        if why := _not_export_of(get_dataset(name), pairs_name):
            raise DatasetError(why)
        try:  # a deleted export's name, which models trained on it still name: export once re-registered it
            check_not_orphaned_dataset(name)
        except DatasetError as exc:
            raise DatasetError(f"{exc} Nothing was exported: the export of {pairs_name} is always named {name}. Run "
                               "the synthetic-math job again under another name (--name, or Name on the Synthetic "
                               "math page), then export that.") from None
    out_dir = Path(out_dir or Path(rec.path).parent)
    with db.session() as s:
        rows = list(s.exec(select(SynthPair).where(*_exported(rec.id, include_flagged)).order_by(SynthPair.id)))
    if not rows:  # an empty set registered here only failed later, in the training job that read it
        tally = counts(rec.id)
        raise DatasetError(f"{pairs_name} has no pair to export: {tally.get('verified', 0)} verified, "
                           f"{tally.get('flagged', 0)} flagged (included only when asked), {tally.get('failed', 0)} "
                           f"failed, {tally.get('rejected', 0)} rejected by hand. Nothing was written.")
    instruct, align = out_dir / "math_instruct.jsonl", out_dir / "math_alignment.jsonl"
    texts = {path: "".join(json.dumps(make(p), ensure_ascii=False) + "\n" for p in rows) for path, make in (
        (instruct, lambda p: {"messages": [{"role": "user", "content": p.new_question},
                                           {"role": "assistant", "content": p.new_solution}]}),
        (align, lambda p: {"prompt": p.new_question, "chosen": p.new_solution, "rejected": p.solution}))}
    for name, text in zip((f"{prefix}-instruct", f"{prefix}-alignment"), texts.values()):
        _check_not_trained_on(get_dataset(name), text)  # before a file is written
    _write_all(texts, out_dir)
    # the export's own choices last: the run's settings hold the run's include_flagged, which said "no flagged
    # pairs" of an export that holds them
    prov = {**rec.provenance.get("settings", {}), "pairs": pairs_name, "include_flagged": include_flagged}
    a = _save_export(f"{prefix}-instruct", "sft", str(instruct), len(rows), {**prov, "format": "messages"})
    b = _save_export(f"{prefix}-alignment", "dpo", str(align), len(rows), {**prov, "format": "prompt/chosen/rejected"})
    return {"instruct": a.name, "alignment": b.name, "rows": len(rows), "folder": str(out_dir)}


def _write_partial(tmp: Path, text: str, out_dir: Path) -> None:
    """`text` into `tmp`, whole or not at all: a failed write removes it, and a full disk says so in words."""
    try:
        tmp.write_text(text)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"Disk full while writing to {out_dir}: nothing was changed (the files there "
                                        "and their data sets are as they were). Free some space and run it "
                                        "again.") from None
        raise


def _write_all(texts: dict[Path, str], out_dir: Path) -> None:
    """Both export files, or neither changed: each is written whole beside its name first (never a half-written file
    under a registered name), and only then renamed into place. Renamed one by one as they were written, a full disk
    at the second left a registered Instruct set of 4 lines under a row that said 5, and its .partial file behind."""
    partial = {path: path.with_suffix(".partial") for path in texts}
    try:
        for path, text in texts.items():
            _write_partial(partial[path], text, out_dir)
    except OSError:
        for tmp in partial.values():
            tmp.unlink(missing_ok=True)
        raise
    for path, tmp in partial.items():
        tmp.replace(path)


HAND_REJECTED = "rejected by hand"  # the reason older databases wrote over a pair's own when it was rejected by hand


def reject_by_hand(pair_id: int, undo: bool = False) -> None:
    """Reject a pair by hand, or undo that. Only `rejected_by_hand` changes: the pipeline's verdict and its reason (a
    contamination share, "answer changed: …") stay, so an undone rejection gives the pair back as it was (the reason
    used to be overwritten with "rejected by hand", and an undo kept that on a pair no longer rejected)."""
    with db.session() as s:
        pair = s.get(SynthPair, pair_id)
        if pair is None:
            raise DatasetError(f"No pair {pair_id}.")
        pair.rejected_by_hand = not undo
        s.add(pair)
        s.commit()


def query_pairs(dataset_id: int, *, categories=None, levels=None, states=None, search: str = "", page: int = 0,
                page_size: int = 20) -> tuple[int, list[SynthPair]]:
    """(total matching, one page). `states`: verified / failed / flagged / rejected (by hand)."""
    q = select(SynthPair).where(SynthPair.dataset_id == dataset_id)
    if categories:
        q = q.where(SynthPair.category.in_(categories))
    if levels:
        q = q.where(SynthPair.level.in_(levels))
    if states:
        conds = []
        if "rejected" in states:
            conds.append(SynthPair.rejected_by_hand == True)  # noqa: E712
        plain = [x for x in states if x != "rejected"]
        if plain:
            conds.append(SynthPair.status.in_(plain) & (SynthPair.rejected_by_hand == False))  # noqa: E712
        from sqlalchemy import or_

        q = q.where(or_(*conds))
    if search:
        # literally: a search for "50%" or "x_1" matched "50" followed by anything, and any character for "_"
        q = q.where(SynthPair.question.icontains(search, autoescape=True)
                    | SynthPair.new_question.icontains(search, autoescape=True))
    with db.session() as s:
        total = s.exec(select(func.count()).select_from(q.subquery())).one()
        rows = list(s.exec(q.order_by(SynthPair.id).offset(page * page_size).limit(page_size)))
    return total, rows


def _exported(dataset_id: int, include_flagged: bool) -> list:
    """The pairs export writes: verified (and flagged, when asked), not rejected by hand."""
    statuses = ["verified", "flagged"] if include_flagged else ["verified"]
    return [SynthPair.dataset_id == dataset_id, SynthPair.status.in_(statuses),
            SynthPair.rejected_by_hand == False]  # noqa: E712


def exported_digest(dataset_id: int, include_flagged: bool) -> str:
    """A digest of which pairs an export writes now: it changes with every rejection or undo by hand, so a page
    re-reads an exported file (holds_export) only then, not on every rerun."""
    import hashlib

    with db.session() as s:
        ids = s.exec(select(SynthPair.id).where(*_exported(dataset_id, include_flagged)).order_by(SynthPair.id)).all()
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=16).hexdigest()


def pairs_revision(dataset_id: int) -> str:
    """A key that changes whenever anything computed from these pairs can (exported_digest, length_gap,
    length_histograms, counts), cheap at 100k pairs: a data set's pairs are stored once, with it (save_dataset), and
    only their hand rejections change after (reject_by_hand), so the data set's id and creation time (an id SQLite
    gives again after a delete) and the ids rejected by hand (read through the index, few) say which pairs an export
    takes. A page caches those statistics by it: computing them on every rerun took 1–2 s at 100k pairs."""
    import hashlib

    with db.session() as s:
        rec = s.get(DatasetRecord, dataset_id)
        # `+ 0`: no index on the data set's id, so SQLite reads the few rejected pairs through their own index
        # (0.3 ms at 100k pairs) rather than every pair of the data set through its id's (90 ms)
        hand = s.exec(select(SynthPair.id).where(SynthPair.rejected_by_hand == True,  # noqa: E712
                                                 SynthPair.dataset_id + 0 == dataset_id).order_by(SynthPair.id)).all()
    made = rec.created.isoformat() if rec is not None and rec.created else ""
    return f"{dataset_id}:{made}:{len(hand)}:" + hashlib.blake2b(array("q", hand).tobytes(), digest_size=16).hexdigest()


LENGTH_BIN = 5  # words per bin of the Synthetic math page's length histograms


def length_histograms(dataset_id: int, bin_words: int = LENGTH_BIN, include_flagged: bool = False
                      ) -> dict[str, list[tuple[int, int]]]:
    """Word-length histograms of the pairs export writes (chosen vs rejected as DPO will see them: failed and
    hand-rejected pairs left out), computed in SQL (fast at 100k pairs): {column: [(bin start, count)]}."""
    out = {}
    with db.session() as s:
        for col in ("q_words", "new_q_words", "a_words", "new_a_words"):
            c = getattr(SynthPair, col)
            b = c - c % bin_words
            rows = s.exec(select(b, func.count()).where(*_exported(dataset_id, include_flagged)).group_by(b)
                          .order_by(b)).all()
            out[col] = [(int(x), int(n)) for x, n in rows]
    return out


def length_gap(dataset_id: int, include_flagged: bool = False) -> dict:
    """Chosen (rephrased) against rejected (original) answer length, pair by pair, over the pairs export writes:
    how often the chosen one is longer or shorter, by how many words on average, and a two-sided sign test of
    "as often longer as shorter" (ties left out, scipy's exact binomial test). DPO on pairs whose chosen answer is
    systematically longer can learn "longer is better" instead of "correct is better"."""
    from scipy.stats import binomtest

    diff = SynthPair.new_a_words - SynthPair.a_words
    with db.session() as s:
        n, longer, shorter, mean, chosen, rejected = s.exec(select(
            func.count(), func.sum(sa_case((diff > 0, 1), else_=0)), func.sum(sa_case((diff < 0, 1), else_=0)),
            func.avg(diff), func.avg(SynthPair.new_a_words), func.avg(SynthPair.a_words))
            .where(*_exported(dataset_id, include_flagged))).one()
    longer, shorter = int(longer or 0), int(shorter or 0)
    p = binomtest(longer, longer + shorter).pvalue if longer + shorter else None
    return {"pairs": int(n), "longer": longer, "shorter": shorter, "same": int(n) - longer - shorter,
            "mean_diff": float(mean) if n else None, "chosen_words": float(chosen) if n else None,
            "rejected_words": float(rejected) if n else None, "sign_test_p": p}


def counts(dataset_id: int) -> dict[str, int]:
    with db.session() as s:
        rows = s.exec(select(SynthPair.status, func.count()).where(SynthPair.dataset_id == dataset_id)
                      .group_by(SynthPair.status)).all()
        hand = s.exec(select(func.count()).where(SynthPair.dataset_id == dataset_id,
                                                 SynthPair.rejected_by_hand == True)).one()  # noqa: E712
    return {**{k: int(v) for k, v in rows}, "rejected": int(hand)}


def _pushable_export(pairs_name: str) -> list[DatasetRecord]:
    """The Instruct and Alignment sets exported from `pairs_name`, checked before anything reaches the Hub. Chosen by
    the link export() records (provenance 'pairs'), not by name alone: a mix saved by hand as NAME-instruct is no
    export. And checked to hold that export still: runs exported into one folder share its file names, so a later
    run's export overwrites an earlier one's files, and a pair rejected by hand since is still in the file."""
    pairs = get_dataset(pairs_name)
    if pairs is None or pairs.kind != "synth-pairs":
        raise DatasetError(f"No synthetic pairs named {pairs_name!r}. Nothing was pushed.")
    with db.session() as s:
        mine = {d.kind: d for d in _export_of(s, pairs_name)}
    prefix = pairs_name.removesuffix("-pairs")
    for kind, name in (("sft", f"{prefix}-instruct"), ("dpo", f"{prefix}-alignment")):
        other = get_dataset(name)
        if kind not in mine and other is not None:
            origin = f"exported from {other.provenance['pairs']}" if "pairs" in other.provenance else "saved by hand"
            raise DatasetError(f"{name!r} is a {other.kind} data set {origin}, not an export of {pairs_name}. Nothing "
                               "was pushed. The export takes that name: run the synthetic-math job again under "
                               "another name, then export and push that.")
    if len(mine) < 2:
        raise DatasetError(f"{pairs_name} has no export to push: make Synth. Math-Instruct and Synth. Math-Alignment "
                           f"first (the Export tab, or `python -m backend datasets export {pairs_name}`). Nothing was "
                           "pushed.")
    files = [mine["sft"], mine["dpo"]]
    for d in files:
        if not Path(d.path).is_file():
            raise DatasetError(f"The file of {d.name}, {d.path}, is gone. Nothing was pushed: export {pairs_name} "
                               "again, then push.")
        if not holds_export(d, pairs.id):
            raise DatasetError(f"{d.path} no longer holds {d.name} as exported from {pairs_name} (another export "
                               "into the same folder overwrote it, or pairs were rejected by hand since). Nothing was "
                               f"pushed: export {pairs_name} again, then push.")
    return files


def holds_export(d: DatasetRecord, pairs_id: int) -> bool:
    """Whether `d`'s file has one line per pair export() takes from these pairs now, each with that pair's rephrased
    question (the user turn of Instruct, the prompt of Alignment, JSON-encoded as export() writes it). The file is
    read a line at a time: an export of 100k pairs is large."""
    from itertools import zip_longest

    with db.session() as s:
        questions = s.exec(select(SynthPair.new_question).where(
            *_exported(pairs_id, d.provenance.get("include_flagged", False))).order_by(SynthPair.id)).all()
    with open(d.path, encoding="utf-8") as f:
        return all(q is not None and line is not None and json.dumps(q, ensure_ascii=False) in line
                   for q, line in zip_longest(questions, f))


def push_to_hub(pairs_name: str, repo_id: str) -> str:
    """Upload the Instruct and Alignment files exported from `pairs_name` (_pushable_export) to a Hub data set repo
    in one commit, so the repo never holds one without the other (needs internet and a token with write access)."""
    from backend import hubpush

    files = _pushable_export(pairs_name)
    names = [Path(f.path).name for f in files]
    url = hubpush.commit(repo_id, "dataset", {n: Path(f.path) for n, f in zip(names, files)},
                         f"Add {' and '.join(names)}", refused=DatasetError, failed=PushFailed)
    pushed = " and ".join(f"{f.name} ({plural(f.rows, 'row')}, {n})" for f, n in zip(files, names))
    return f"pushed {pushed}, exported from {pairs_name}, to {url}"
