"""Registered data sets: saving one (a synthetic run's pairs, a file, a weighted mix), reading them back, and
deleting one with the files only it uses, refused while jobs, mixes or models depend on it. A name a data set holds
is refused, never updated: models may have been trained on it (pairs.export updates its own export in place).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from backend.names import check_name
from backend.words import plural
from storage import db
from storage.models import DatasetRecord, SynthPair


class DatasetError(ValueError):
    pass


class PushFailed(DatasetError):
    """The push was tried and the Hub refused it or did not answer (the CLI's exit code 1; a refusal before any
    upload stays a DatasetError, 2)."""


# what a run writes before it registers anything (pairs.jsonl: a run stopped by an older version, which wrote it first)
RUN_FILES = ("rephrase_cache.jsonl", "pairs.jsonl")


# ---------------------------------------------------------------- registered data sets

# the data sets table as one datasets_once() read it, by name; None: read each lookup from the database
_ONCE: ContextVar[dict[str, DatasetRecord] | None] = ContextVar("datasets_once", default=None)


@contextmanager
def datasets_once():
    """Inside it, get_dataset answers from one read of the data sets table, not a SELECT each, as registry.read_once
    does for the models: a pass over many jobs (the Jobs page's table every 2 s, `jobs list`) asked the database once
    per queued training job that reads a `dataset:` source. For reads only: a data set registered or deleted inside
    it is not seen. Per context (a thread: each Streamlit session's own), never shared."""
    if _ONCE.get() is not None:  # nested: the outer read stands
        yield
        return
    with db.session() as s:
        rows = list(s.exec(select(DatasetRecord).order_by(DatasetRecord.id)))
    token = _ONCE.set({rec.name: rec for rec in rows})  # names are unique (the table's constraint)
    try:
        yield
    finally:
        _ONCE.reset(token)


def get_dataset(name: str) -> DatasetRecord | None:
    if (once := _ONCE.get()) is not None:
        return once.get(name)
    with db.session() as s:
        return s.exec(select(DatasetRecord).where(DatasetRecord.name == name)).first()


def list_datasets(kind: str | None = None) -> list[DatasetRecord]:
    with db.session() as s:
        q = select(DatasetRecord).order_by(DatasetRecord.created)
        return list(s.exec(q.where(DatasetRecord.kind == kind) if kind else q))


def _taken(rec: DatasetRecord) -> str:
    """What holds a name, for a refusal: the file and its rows, or a mix's sources."""
    sources = ", ".join(f"{x['source']}×{x['weight']:g}" + (f" by {x['sample_by']}" if x.get("sample_by") else "")
                        for x in rec.provenance.get("sources", []))
    where = (f"{plural(rec.rows, 'row')} at {rec.path}" if rec.path
             else f"a mix of {sources} for {rec.provenance.get('for')}")
    return f"A {rec.kind} data set is already named {rec.name!r} ({where})"


def _refuse_case_twin(name: str) -> None:
    """Refuse a name that differs from a registered data set's only in letter case (db.named_any_case), as models
    and synthetic-math runs refuse one: on a case-insensitive file system (macOS, Windows, an exFAT or SMB share)
    'Mix' and 'mix' are one folder, and `mix:Mix` beside `mix:mix` named two data sets in recipes and lineage."""
    if (rec := db.named_any_case(DatasetRecord, name)) is not None and rec.name != name:
        raise DatasetError(f"{_taken(rec)}: {name!r} differs from it only in case, and a case-insensitive file "
                           "system (macOS, Windows, an exFAT or SMB share) holds both in one folder. Nothing was "
                           "saved: choose another name.")


def save_dataset(name: str, kind: str, path: str, rows: int, provenance: dict,
                 pairs: tuple[SynthPair, ...] | list[SynthPair] = ()) -> DatasetRecord:
    """Register a new data set, with its synthetic `pairs` in the same transaction (a kill never leaves a data set
    whose row count names pairs not stored). A name a data set holds is refused, never updated: models may have
    been trained on that one (export() updates its own export in place, through _save_export)."""
    check_name(name, "data set name")
    _refuse_case_twin(name)
    check_not_orphaned_dataset(name)
    with db.session() as s:
        if (rec := s.exec(select(DatasetRecord).where(DatasetRecord.name == name)).first()) is not None:
            raise DatasetError(f"{_taken(rec)}. Nothing was saved: choose another name.")
        rec = DatasetRecord(name=name, kind=kind, path=path, rows=rows, provenance=provenance)
        s.add(rec)
        try:
            s.flush()
        except IntegrityError:  # registered meanwhile by a run of the same name: the refusal above, not SQL's words
            s.rollback()
            raise DatasetError(f"{_taken(get_dataset(name))}. Nothing was saved: choose another name.") from None
        for p in pairs:
            p.dataset_id = rec.id
        s.add_all(pairs)
        s.commit()
        s.refresh(rec)
        return rec


def save_mix(name: str, sources: list[tuple[str, float]] | list[tuple[str, float, str]],
             purpose: str) -> DatasetRecord:
    """A named weighted combination (the paper's SFT v1–v4, DPO v1–v3), usable as `mix:NAME` in training data. A
    taken name is refused before the sources are read; the same mix saved again (the page's button pressed twice)
    changes nothing. A source given with its sample_by keeps it where it reads a .txt (data.expand_rows: a book saved
    a paragraph a row is read so wherever the mix is used); one given without it reads as each use of the mix says."""
    saved, provenance = _checked_mix(name, sources, purpose)
    return saved or save_dataset(name, "mix", "", 0, provenance)


def _checked_mix(name: str, sources, purpose: str) -> tuple[DatasetRecord | None, dict]:
    """(the mix already saved as asked, or None; the provenance to save) for save_mix, every refusal raised first: a
    taken name, before the sources are read, then each weight and every member's rows (data.check_mix)."""
    check_name(name, "mix name")
    from backend import data

    provenance = {"for": purpose, "sources": [
        {"source": s, "weight": w, **({"sample_by": rest[0]} if rest and data.reads_text_file(s) else {})}
        for s, w, *rest in sources]}
    if (rec := get_dataset(name)) is not None:
        if rec.kind == "mix" and rec.provenance == provenance:
            return rec, provenance
        raise DatasetError(f"{_taken(rec)}. Nothing was saved: choose another name for the mix; the existing one "
                           "stays as it is.")
    _refuse_case_twin(name)  # before the sources are read
    if not sources:
        raise DatasetError("A mix needs at least one source.")
    check_not_orphaned_dataset(name)  # before the sources are read
    try:  # each weight (nan, inf and 1e308 too), then every member's rows as a job of `purpose` reads them, as the
        data.check_mix(sources, purpose)  # CLI's `datasets mix` did: the paper's mixes checked only layouts, so a
    except data.DataError as exc:  # mix of a bad row was saved, listed, and refused at every use
        raise DatasetError(str(exc)) from None
    return None, provenance


def paper_mixes(pairs_name: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """The paper's SFT v1–v4 and DPO v1–v2 data (Tables 3–4) as mixes, with the built-in Alpaca / OpenOrca /
    preference sets standing in for Alpaca-GPT4, OpenOrca and UltraFeedback Clean, and Synth. Math-Instruct /
    Math-Alignment the export of `pairs_name`: mix name -> (what it trains, [(source, weight)])."""
    prefix = pairs_name.removesuffix("-pairs")
    return {
        "sft-v1": ("sft", [("builtin:alpaca-mini", 1.0)]),
        "sft-v2": ("sft", [("builtin:alpaca-mini", 1.0), ("builtin:orca-mini", 1.0)]),
        "sft-v3": ("sft", [("builtin:alpaca-mini", 1.0), ("builtin:orca-mini", 1.0),
                           (f"dataset:{prefix}-instruct", 1.0)]),
        "sft-v4": ("sft", [("builtin:alpaca-mini", 1.0), (f"dataset:{prefix}-instruct", 1.0)]),
        "dpo-v1": ("dpo", [("builtin:prefs-mini", 1.0)]),
        "dpo-v2": ("dpo", [("builtin:prefs-mini", 1.0), (f"dataset:{prefix}-alignment", 1.0)]),
    }


def save_paper_mixes(pairs_name: str) -> list[DatasetRecord]:
    """Save every paper_mixes mix (the Synthetic math page's button, `datasets paper-mixes`), each as save_mix does
    (a second save of the same mixes changes nothing; a name taken by another mix is refused). All six are checked
    before any is saved: saved one by one, a bad row in the instruct pairs left sft-v1 and sft-v2 saved and the rest,
    the good DPO mixes too, not, with a message that named only the row."""
    from backend.data_reading import ReaderFailed

    mixes = paper_mixes(pairs_name)
    _refuse_taken_paper_names(pairs_name, mixes)
    checked = {}
    for name, (purpose, sources) in mixes.items():
        try:
            checked[name] = _checked_mix(name, sources, purpose)
        except (DatasetError, ReaderFailed) as exc:  # a read that failed, not the file (ReaderFailed): its mix named
            # too, as its own kind of error (the page keeps the files and says "try again")
            said = f"a{str(exc)[1:]}" if str(exc).startswith("A ") else str(exc)  # mid-sentence
            kind = ReaderFailed if isinstance(exc, ReaderFailed) else DatasetError
            raise kind(f"Mix {name}: {said} None of the paper's mixes ({', '.join(mixes)}) was saved.") from None
    return [saved or save_dataset(name, "mix", "", 0, provenance) for name, (saved, provenance) in checked.items()]


def _refuse_taken_paper_names(pairs_name: str, mixes: dict) -> None:
    """Refuse the paper's mixes when a name of theirs holds another data set, saying the way out: their names are
    fixed, so save_mix's "choose another name for the mix" could not be done. The usual case, the mixes saved before
    for another pairs set, names that set."""
    prefix = pairs_name.removesuffix("-pairs")
    taken = [rec for name in mixes if (rec := get_dataset(name)) is not None
             and not (rec.kind == "mix" and _mix_sources(rec) == [s for s, *_ in mixes[name][1]])]
    if not taken:
        return
    held = {src.removeprefix("dataset:").removesuffix(end) for rec in taken if rec.kind == "mix"
            for src in _mix_sources(rec) for end in ("-instruct", "-alignment")
            if src.startswith("dataset:") and src.endswith(end)} - {prefix}
    names = [rec.name for rec in taken]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    if held and all(rec.kind == "mix" for rec in taken):
        why = (f"The paper's {'mix' if len(names) == 1 else 'mixes'} {listed} "
               f"{'is' if len(names) == 1 else 'are'} already saved for the pairs set "
               f"{' and '.join(sorted(f'{h}-pairs' for h in held))} (mixing its Instruct / Alignment sets), and a "
               "name holds one data set")
    else:
        why = "; ".join(_taken(rec) if i == 0 else f"a{_taken(rec)[1:]}" for i, rec in enumerate(taken))
    rest = f" (then {', '.join(names[1:])} the same way)" if len(names) > 1 else ""
    raise DatasetError(f"{why}. Nothing was saved. To save the paper's mixes for {pairs_name}, delete "
                       f"{'it' if len(names) == 1 else 'them'} first: python -m backend datasets delete {names[0]}"
                       f"{rest}, or with the Synthetic math page's \"Delete a data set\".")


def _mix_sources(rec: DatasetRecord) -> list[str]:
    return [x.get("source") for x in rec.provenance.get("sources", [])]


# ---------------------------------------------------------------- deleting a data set

def _strings(obj) -> list[str]:
    """Every string inside a job's spec or a model's recipe (JSON), at any depth: wherever a data source is named."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    return [x for v in obj for x in _strings(v)] if isinstance(obj, list) else []


def _same_file(source: str, path: str) -> bool:
    """Whether `source` (a training source, or an evaluation task such as qa:FILE) is the file at `path`."""
    for candidate in {source, source.partition(":")[2]} - {""}:
        if Path(path).name in candidate:  # resolve only what may be that file
            try:
                if Path(candidate).expanduser().resolve() == Path(path).resolve():
                    return True
            except (OSError, ValueError):  # not a path at all
                pass
    return False


def _reads(source: str, name: str, path: str = "", seen: frozenset = frozenset()) -> bool:
    """Whether a data source reads the data set `name` (whose file is `path`): dataset:NAME or mix:NAME, a saved mix
    holding it (backend/data.py expand), or its file given by path."""
    if source in (f"dataset:{name}", f"mix:{name}"):
        return True
    if source.startswith("mix:") and source not in seen:
        mix = get_dataset(source.removeprefix("mix:"))
        return mix is not None and any(_reads(x["source"], name, path, seen | {source})
                                       for x in mix.provenance.get("sources", []))
    return bool(path) and _same_file(source, path)


def dataset_users(name: str, path: str = "") -> tuple[list, list, list[DatasetRecord]]:
    """(queued or running jobs, registered models, saved mixes) whose spec, training recipe or sources read the data
    set: what deleting it would break, or leave naming a data set that is gone."""
    from backend import runner

    jobs = [j for j in runner.active_jobs() if any(_reads(x, name, path) for x in _strings(j.spec))]
    mixes = [m for m in list_datasets("mix") if m.name != name
             and any(_reads(x["source"], name, path) for x in m.provenance.get("sources", []))]
    return jobs, _trained_on(name, path), mixes


def _trained_on(name: str, path: str = "") -> list:
    """Registered models whose recipe (a trained model's is its training spec) reads the data set."""
    from backend import registry

    return [m for m in registry.list_models() if any(_reads(x, name, path) for x in _strings(m.recipe or {}))]


def check_not_orphaned_dataset(name: str) -> None:
    """Refuse the name of a deleted data set that registered models were trained on (delete_dataset with force), as
    registry.check_not_orphaned_parent refuses a deleted parent's: their recipes name it, so the evaluation's overlap
    check (backend/heldout.py) would read the new data as theirs."""
    if get_dataset(name) is None and (models := _trained_on(name)):
        raise DatasetError(f"{name!r} was deleted, but {len(models)} model(s) were trained on it and still name it: "
                           f"{', '.join(m.name for m in models)}. A new data set under that name would pose as their "
                           "training data. Choose another name.")


def _files_of(rec: DatasetRecord) -> tuple[list[Path], list[str]]:
    """(files deleting `rec` removes, why others stay). Only files under workspace/datasets go, and none another
    registered data set still uses: an export into a shared folder can leave two sets at one path. Synthetic pairs
    take their run's rephrase cache with them; the exports' files stay for the exports."""
    if not rec.path:
        return [], []
    root = (db.workspace() / "datasets").resolve()
    own = Path(rec.path).resolve()
    if not own.is_relative_to(root):
        return [], [f"its file {own} is outside {root} (registered from there): it was kept, only the registration "
                    "was removed"]
    others = [d for d in list_datasets() if d.id != rec.id and d.path]
    sharing = [d.name for d in others if Path(d.path).resolve() == own]
    if sharing:
        return [], [f"its file {own} was kept: {', '.join(sharing)} use(s) it too"]
    files = [own]
    cache = own.parent / RUN_FILES[0]
    if rec.kind == "synth-pairs" and cache.exists() and not any(
            d.kind == "synth-pairs" and Path(d.path).resolve().parent == own.parent for d in others):
        files.append(cache)
    return files, []


def delete_dataset(name: str, *, force: bool = False) -> str:
    """Remove a registered data set (its synthetic pairs too) and the files only it uses under workspace/datasets;
    what was done, as a sentence. Refused while a queued or running job reads it, while a saved mix holds it, and,
    unless `force`, while registered models were trained on it (their lineage keeps naming it; the evaluation's
    overlap check then reports their training data as unknown). The row goes in one transaction before the files:
    a crash in between leaves a stray file, never a row pointing at a missing one."""
    from backend import data

    rec = get_dataset(name)
    if rec is None:
        if name.removeprefix("builtin:") in data.BUILTIN:
            raise DatasetError(f"{name.removeprefix('builtin:')} is a built-in data set (a file shipped with the "
                               "studio in data/): it cannot be deleted.")
        known = ", ".join(d.name for d in list_datasets()) or "none yet"
        raise DatasetError(f"No registered data set named {name!r} (registered: {known}).")
    jobs, models, mixes = dataset_users(rec.name, rec.path)
    if jobs:
        raise DatasetError(f"{name} is in use by queued or running job(s) {', '.join(str(j.id) for j in jobs)}: "
                           "nothing was deleted. Wait for them to finish or cancel them (Jobs page, or `python -m "
                           "backend jobs cancel ID`), then delete it.")
    if mixes:
        raise DatasetError(f"{name} is a source of the mix(es) {', '.join(m.name for m in mixes)}, which would fail "
                           "to load without it: nothing was deleted. Delete those mixes first.")
    if models and not force:
        raise DatasetError(f"{len(models)} model(s) were trained on {name}: {', '.join(m.name for m in models)}. "
                           "Nothing was deleted. Their lineage would keep naming it, and the evaluation's training-"
                           "overlap check could no longer read it (their scores would say 'unknown'). Delete anyway "
                           "with --force (the page asks you to confirm).")
    files, kept = _files_of(rec)
    with db.session() as s:
        s.exec(sa_delete(SynthPair).where(SynthPair.dataset_id == rec.id))  # one statement for 100k pairs
        s.exec(sa_delete(DatasetRecord).where(DatasetRecord.id == rec.id))
        s.commit()
    removed = []
    for f in files:
        try:
            f.unlink(missing_ok=True)
            removed.append(f)
        except OSError as exc:  # the row is gone already: a stray file to name, not a failed delete
            kept.append(f"could not remove {f} ({exc.strerror or exc}): remove it by hand")
    if removed and removed[0].parent != (db.workspace() / "datasets").resolve() and not any(
            removed[0].parent.iterdir()):
        removed[0].parent.rmdir()  # the run's own folder, once nothing is left in it
    done = [f"deleted the {rec.kind} data set {name}" + (f" ({plural(rec.rows, 'row')})" if rec.path else "")]
    done += [f"removed {', '.join(str(f) for f in removed)}"] if removed else []
    with db.session() as s:
        exports = [d.name for d in _export_of(s, name)] if rec.kind == "synth-pairs" else []
    done += [f"its exports {', '.join(exports)} stay (delete them too if they are not wanted)"] if exports else []
    done += [f"{', '.join(m.name for m in models)} still name it in their lineage"] if models else []
    return "; ".join(done + kept) + "."


def _export_of(s, pairs_name: str) -> list[DatasetRecord]:
    """The Instruct and Alignment sets export() registered from `pairs_name` (their provenance names it)."""
    prefix = pairs_name.removesuffix("-pairs")
    recs = s.exec(select(DatasetRecord).where(DatasetRecord.name.in_([f"{prefix}-instruct", f"{prefix}-alignment"]))
                  .order_by(DatasetRecord.id))
    return [r for r in recs if r.provenance.get("pairs") == pairs_name]
