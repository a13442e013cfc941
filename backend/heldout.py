"""Held-out evaluation you can check: where every evaluation set comes from, its fingerprint, and how much of it a
model's training data already contains.

An evaluation job walks the evaluated model's lineage (ModelRecord.parents; a trained model's recipe is its
training spec with `data` sources; the model named, or given as "builtin" or its registered folder's path), loads
every training source through backend/data.py, and measures the n-gram overlap of each evaluation item with them —
the same measure the synthetic-math job uses against a benchmark (backend/synth/contamination.py, ContaminationIndex),
on both sides in one Unicode form (contamination.canonical, which its words() apply). The built-in evaluation sets are
disjoint from the built-in training sets by construction (data/make_builtin.py says how; tests/test_heldout.py
checks it) as text; TEACHES names the one that asks what a training set teaches in other words.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from backend.synth.contamination import ContaminationIndex

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EVAL_BUILTIN = {  # name -> file under data/, made by data/make_builtin.py
    "heldout-text": "heldout-text.txt",  # perplexity default: facts about elements and planets
    "eval-math": "eval-math.jsonl",  # synth-math default: word problems outside the training generator's space
    "qa-closed-book": "qa-closed-book.jsonl",  # qa default: answerable, unanswerable and math questions
}
NGRAM = 8  # words, as in the synthetic-math contamination check
# Built-in evaluation sets that ask, in other words, what a built-in training set teaches: disjoint as text (no
# 8-gram in common), not as knowledge. The closed-book probe's answerable items ask the capitals the facts corpus
# states (by design: learned facts against invented ones), so a model trained on it answers what it was taught, and
# the table says so (scoretable.overlap_note) where the n-gram check sees nothing.
TEACHES = {"builtin-eval:qa-closed-book": ("builtin:facts-corpus", "its answerable items ask the capitals it states")}


def eval_path(name: str) -> Path:
    return DATA_DIR / EVAL_BUILTIN[name]


def fingerprint(items: list) -> str:
    """sha256 of the items actually scored (after the limit), so two scores on the same set say so."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------- training data of a model's lineage

def lineage_sources(model: str) -> tuple[list[str], list[str]]:
    """(training sources of the model and all its ancestors, notes). A base model's own pretraining data is not
    known here; the notes say so."""
    data, notes = lineage_data(model)
    return list(dict.fromkeys(src for src, _ in data)), notes


def lineage_data(model: str) -> tuple[list[tuple[str, str]], list[str]]:
    """lineage_sources with each source's sample_by (what a row of its .txt files was): a text trained on a
    paragraph a row is read so here too, its n-grams across line ends included."""
    from backend import registry

    sources: list[tuple[str, str]] = []
    notes: list[str] = []
    seen: set[str] = set()
    todo = [model]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        rec = registry.record(name)  # a registered folder's path or "builtin" is the registered model and its data
        if rec is None:
            notes.append(f"{name}: not registered, its training data is unknown")
            continue
        for d in (rec.recipe or {}).get("data") or []:
            src = d.get("source") if isinstance(d, dict) else None
            if src and (src, d.get("sample_by") or "line") not in sources:
                sources.append((src, d.get("sample_by") or "line"))
        if rec.kind == "base":
            notes.append(f"{name}: base model, its pretraining data is not known here")
        todo += list(rec.parents or [])
    return sources, notes


def row_text(row) -> str:
    """Every string and number in a row (columns, chat turns), joined: what a model trained on the row has read.
    Numbers too: a numeric answer column (GSM8K-style {"question", "answer": 72}) is text to the model, and left
    out, an evaluation item copied from the row overlapped it by 0.8, not 1.0."""
    if isinstance(row, str):
        return row
    if isinstance(row, (int, float)) and not isinstance(row, bool):
        return str(row)
    if isinstance(row, dict):
        return "\n".join(row_text(v) for v in row.values() if v is not None)
    if isinstance(row, (list, tuple)):
        return "\n".join(row_text(v) for v in row)
    return ""


def source_texts(source: str, sample_by: str = "line") -> list[str]:
    """Texts of one training source: builtin:, dataset:, mix:, a file or a Hub id, through backend/data.py."""
    from backend import data

    ds = data.load_source(source, sample_by=sample_by)
    return [row_text(r) for r in ds]


@dataclass
class TrainingIndex:
    """n-gram index of a lineage's training texts, with the sources checked and those that could not be read."""
    sources: list[str]
    n: int = NGRAM
    unchecked: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    index: ContaminationIndex | None = None

    def overlap(self, text: str) -> float:
        return self.index.overlap(text) if self.index is not None else 0.0


def training_index(model: str, n: int = NGRAM, cache: dict | None = None) -> TrainingIndex:
    """`cache` (one per evaluation job) keeps models of the same lineage from reading the same data twice."""
    from backend.data import DataError

    pairs, notes = lineage_data(model)
    sources = list(dict.fromkeys(src for src, _ in pairs))
    key = (tuple(pairs), n)
    _CACHE = cache if cache is not None else {}
    if key not in _CACHE:
        texts, unchecked = [], {}
        for src, sample_by in pairs:
            try:
                texts += source_texts(src, sample_by)
            except (DataError, OSError, ValueError) as exc:  # a gone file or an offline Hub id: say so, go on
                unchecked[src] = str(exc)[:200]
        _CACHE[key] = TrainingIndex(sources, n, unchecked, [], ContaminationIndex(texts, n) if texts else None)
    idx = _CACHE[key]
    return TrainingIndex(idx.sources, n, idx.unchecked, notes, idx.index)


def overlap_summary(overlaps: list[float], threshold: float, idx: TrainingIndex) -> dict:
    """What a score row stores: how much of the set the lineage's training data contains."""
    flagged = sum(o >= threshold for o in overlaps)
    return {"ngram": idx.n, "threshold": threshold, "max": max(overlaps, default=0.0),
            "mean": sum(overlaps) / len(overlaps) if overlaps else 0.0, "items_over": flagged,
            "share_over": flagged / len(overlaps) if overlaps else 0.0, "against": idx.sources,
            "unchecked": idx.unchecked, "notes": idx.notes}
