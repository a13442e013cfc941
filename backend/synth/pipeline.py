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
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
import unicodedata
from array import array
from collections import defaultdict
from itertools import count
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import case as sa_case
from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from backend.names import check_name, inside
from backend.specs import SynthMathSpec
from backend.synth.answers import extract_answer, same_answer
from backend.synth.rephrase import RephraseError, cache_key, check_question, make_rephraser
from backend.synth.seeds import Seed, SeedError, load_seeds, read_records
from storage import db
from storage.models import DatasetRecord, SynthPair

Progress = Callable[[float, str], None]
_WORD = re.compile(r"\w+")


class DatasetError(ValueError):
    pass


class PushFailed(DatasetError):
    """The push was tried and the Hub refused it or did not answer (the CLI's exit code 1; a refusal before any
    upload stays a DatasetError, 2)."""


def canonical(text: str) -> str:
    """Text as the n-gram checks compare it, alike on both sides (the synthetic-math job's benchmark check here, the
    evaluation's training-overlap check in backend/heldout.py): NFKC (a PDF's "ﬁ" ligature is "fi", full-width digits
    are digits, a decomposed "é" is the composed one), format characters dropped (a soft hyphen or zero-width space
    inside a word split it in two), case folded ("Straße" = "STRASSE"). Words split on \\w, so without this the same
    sentence copied from another source shared no n-gram with itself. ASCII text is only lowered (words does)."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf").casefold()


def words(text: str) -> list[str]:
    return _WORD.findall(canonical(text).lower())


def _grams(w: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)} if len(w) >= n else ({tuple(w)} if w else set())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    return _grams(words(text), n)


class _WordWindows:
    """Every word position of the reference texts with the `width` words that follow it inside the same text, as
    word ids, sorted and deduplicated, one numpy column per word. A run of k <= width words is inside one text iff it
    is the start of some window, which a binary search per word finds (np.searchsorted narrowing the sorted range
    column by column): O(k log N) instead of a search through the whole corpus, and exact, with no hash to verify.
    Id 0 ends a text, and no item word matches it, so no match runs into the next text; a word the texts never use
    has no id and rejects the item at once. Memory: width int32 per distinct window, plus the vocabulary; for
    160,000 texts (bench/contamination_index.py) 0.2 MB kept when they are the built-in sets repeated, 43 MB when no
    copy shares a word, sorting peaking at 130 to 200 MB while the index is built."""

    def __init__(self, width: int):
        self.width = width
        self.vocab: dict[str, int] = defaultdict(count(1).__next__)  # a plain dict once sealed
        self._ids = array("i")  # every text's word ids, each text followed by a 0; dropped by seal()
        self.cols: list[np.ndarray] = []

    def add(self, w: list[str]) -> None:
        self._ids.extend(map(self.vocab.__getitem__, w))  # a new word gets the next id
        self._ids.append(0)

    def seal(self) -> None:
        """Sort and deduplicate the windows once every text is added; the ids of every word (4 bytes each) go."""
        self.vocab = dict(self.vocab)
        ids = np.concatenate([np.frombuffer(self._ids, dtype=np.int32), np.zeros(self.width, np.int32)])
        self._ids = array("i")
        cols = _windows(ids, self.width)
        keys = _packed(cols, max(len(self.vocab), 1).bit_length())
        order = np.lexsort(keys[::-1])
        new = np.zeros(len(order), bool)
        new[:1] = True
        for k in keys:
            k = k[order]
            new[1:] |= k[1:] != k[:-1]
        self.cols = [c[order[new]] for c in cols]

    def contains(self, w: list[str]) -> bool:
        """Whether the words (at most `width`) are inside one text, whole, in order and adjacent."""
        lo, hi = 0, len(self.cols[0])
        for col, word in zip(self.cols, w):
            i = self.vocab.get(word)
            if i is None:
                return False
            # the rows holding id i: from the first >= i to the first >= i + 1, in one call; int32 like the
            # column, which a Python int would make searchsorted copy
            start, end = col[lo:hi].searchsorted(np.array((i, i + 1), np.int32)).tolist()
            lo, hi = lo + start, lo + end
            if lo == hi:
                return False
        return True

    @property
    def nbytes(self) -> int:
        """Bytes of the sorted windows (the vocabulary's strings come on top)."""
        return sum(c.nbytes for c in self.cols)


def _windows(ids: np.ndarray, width: int) -> list[np.ndarray]:
    """Column j: the (j+1)-th word from each word position of `ids` (texts ended by 0, `width` zeros at the end).
    The 0 alone keeps a match inside one text; zeroing what follows it too lets the windows at the ends of two
    copies of a text, or of texts ending alike, deduplicate."""
    starts = np.flatnonzero(ids[:-width])
    cols, alive = [], np.ones(len(starts), bool)
    for j in range(width):
        col = ids[starts + j]
        alive &= col != 0
        cols.append(np.where(alive, col, np.int32(0)))
    return cols


def _packed(cols: list[np.ndarray], bits: int) -> list[np.ndarray]:
    """The columns as few uint64 sort keys with the same lexicographic order (64 // bits ids a key, the first the
    most significant): np.lexsort takes about as long per key, so the 7-word windows (n = 8) of a 255-word
    vocabulary sort as one key instead of seven."""
    per, keys = 64 // bits, []
    for g in range(0, len(cols), per):
        key = np.zeros(len(cols[0]), np.uint64)
        for c in cols[g:g + per]:
            key = (key << np.uint64(bits)) | c.astype(np.uint64)
        keys.append(key)
    return keys


class ContaminationIndex:
    """n-gram overlap against reference texts (a benchmark, a lineage's training data): the share of an item's
    n-grams that appear in any of them. An item shorter than n words has no n-gram, so it is checked whole: it counts
    as wholly contained (1.0) when its words appear, in order and adjacent, inside one reference text. With
    `whole_references` (the texts are whole problems: a benchmark) it counts too when a short reference's words
    appear so inside the item (a four-word MATH problem quoted in a seed); not for training data, where a line of a
    .txt corpus ("The United States") sits inside many questions. Under SHORT_MIN words only the same words match:
    "Yes." is inside nearly everything."""

    SHORT_MIN = 3

    def __init__(self, texts: list[str], n: int, *, whole_references: bool = False):
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.short: set[tuple[str, ...]] = set()  # with whole_references: those of SHORT_MIN to n - 1 words
        self._windows = _WordWindows(n - 1)  # an item of SHORT_MIN to n - 1 words: whole words, inside one text
        for t in texts:
            w = words(t)
            self.grams |= _grams(w, n)
            if whole_references and self.SHORT_MIN <= len(w) < n:
                self.short.add(tuple(w))
            self._windows.add(w)
        self._windows.seal()
        self._short_lens = sorted({len(x) for x in self.short})

    def overlap(self, text: str) -> float:
        w = words(text)
        if not w:
            return 0.0
        if any(tuple(w[i:i + k]) in self.short for k in self._short_lens for i in range(len(w) - k + 1)):
            return 1.0
        if len(w) < self.n:
            if len(w) < self.SHORT_MIN:
                return float(tuple(w) in self.grams)
            return float(self._windows.contains(w))
        g = _grams(w, self.n)
        return len(g & self.grams) / len(g)


def load_benchmark(path: str) -> list[str]:
    """Question texts of a benchmark file: JSONL records or a JSON array (read as seed files are) with question /
    problem / prompt / text, or plain lines."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"Benchmark file {p} does not exist.")
    if p.suffix not in (".jsonl", ".json"):
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


# ---------------------------------------------------------------- registered data sets

def get_dataset(name: str) -> DatasetRecord | None:
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
    where = f"{rec.rows} rows at {rec.path}" if rec.path else f"a mix of {sources} for {rec.provenance.get('for')}"
    return f"A {rec.kind} data set is already named {rec.name!r} ({where})"


def save_dataset(name: str, kind: str, path: str, rows: int, provenance: dict,
                 pairs: tuple[SynthPair, ...] | list[SynthPair] = ()) -> DatasetRecord:
    """Register a new data set, with its synthetic `pairs` in the same transaction (a kill never leaves a data set
    whose row count names pairs not stored). A name a data set holds is refused, never updated: models may have
    been trained on that one (export() updates its own export in place, through _save_export)."""
    check_name(name, "data set name")
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
    check_name(name, "mix name")
    from backend import data

    provenance = {"for": purpose, "sources": [
        {"source": s, "weight": w, **({"sample_by": rest[0]} if rest and data.reads_text_file(s) else {})}
        for s, w, *rest in sources]}
    if (rec := get_dataset(name)) is not None:
        if rec.kind == "mix" and rec.provenance == provenance:
            return rec
        raise DatasetError(f"{_taken(rec)}. Nothing was saved: choose another name for the mix; the existing one "
                           "stays as it is.")
    if not sources:
        raise DatasetError("A mix needs at least one source.")
    check_not_orphaned_dataset(name)  # before the sources are read
    for source, weight, *rest in sources:
        if weight <= 0:
            raise DatasetError(f"{source}: weight must be positive.")
        ds = data.load_source(source, sample_by=rest[0] if rest else "line")
        data.detect_layout(ds.column_names, purpose)
    return save_dataset(name, "mix", "", 0, provenance)


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
    """Save every paper_mixes mix (the Synthetic math page's button, `datasets paper-mixes`); each as save_mix does,
    so a second save of the same mixes changes nothing and a name taken by another mix is refused."""
    return [save_mix(name, sources, purpose) for name, (purpose, sources) in paper_mixes(pairs_name).items()]


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
    done = [f"deleted the {rec.kind} data set {name}" + (f" ({rec.rows} rows)" if rec.path else "")]
    done += [f"removed {', '.join(str(f) for f in removed)}"] if removed else []
    with db.session() as s:
        exports = [d.name for d in _export_of(s, name)] if rec.kind == "synth-pairs" else []
    done += [f"its exports {', '.join(exports)} stay (delete them too if they are not wanted)"] if exports else []
    done += [f"{', '.join(m.name for m in models)} still name it in their lineage"] if models else []
    return "; ".join(done + kept) + "."


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


def _export_of(s, pairs_name: str) -> list[DatasetRecord]:
    """The Instruct and Alignment sets export() registered from `pairs_name` (their provenance names it)."""
    prefix = pairs_name.removesuffix("-pairs")
    recs = s.exec(select(DatasetRecord).where(DatasetRecord.name.in_([f"{prefix}-instruct", f"{prefix}-alignment"]))
                  .order_by(DatasetRecord.id))
    return [r for r in recs if r.provenance.get("pairs") == pairs_name]


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


# ---------------------------------------------------------------- the job

# what a run writes before it registers anything (pairs.jsonl: a run stopped by an older version, which wrote it first)
RUN_FILES = ("rephrase_cache.jsonl", "pairs.jsonl")


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
    pushed = " and ".join(f"{f.name} ({f.rows} rows, {n})" for f, n in zip(files, names))
    return f"pushed {pushed}, exported from {pairs_name}, to {url}"
