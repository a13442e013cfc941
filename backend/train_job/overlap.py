"""A training job's word on its rows that the built-in evaluation sets hold (walk23b: rows copied from
data/eval-math.jsonl trained without a word, and the evaluation flagged the scores after the run). The measure is the
evaluation's held-out check (backend/heldout.py): each evaluation item's share of 8-word sequences found in the
training rows (ContaminationIndex), an item over EvalSpec.overlap_threshold counted as seen.

Indexing every training row (what the evaluation does with a lineage's data) took 35 s and 3.8 GB for 100k rows of
700 characters; here the rows are scanned once for the items' words instead, and only the rows that hold a run of n
of them are indexed.
"""

from __future__ import annotations

import numpy as np

from backend import heldout
from backend.synth.contamination import ContaminationIndex, ngrams, words

# the built-in evaluation sets, by the evaluation task that scores each (evaltasks.task_set gives the items' texts)
BUILTIN_TASKS = {"heldout-text": "perplexity", "eval-math": "synth-math", "qa-closed-book": "qa"}
CHUNK = 2000  # rows whose words are read at once


def eval_overlap(rows, n: int = heldout.NGRAM,
                 threshold: float | None = None) -> dict[str, tuple[int, int, int, str]]:
    """{built-in evaluation set: (its items over the threshold, its items, training rows sharing an n-gram with
    those items, the text of the first such row)} for the sets some training row overlaps. rows: the job's training
    rows (any layout: every string in a row is read, heldout.row_text)."""
    from backend.evaltasks import task_set
    from backend.specs import EvalSpec

    threshold = EvalSpec.model_fields["overlap_threshold"].default if threshold is None else threshold
    items = {name: task_set(task, 10**9).texts for name, task in BUILTIN_TASKS.items()}
    grams = {name: [ngrams(t, n) for t in texts] for name, texts in items.items()}
    every = set().union(*(g for gs in grams.values() for g in gs))
    vocab = {w for g in every for w in g}
    # the evaluation checks an item shorter than n words whole: the built-in items have n words or more
    if short := [t for texts in items.values() for t in texts if len(words(t)) < n]:
        raise ValueError(f"a built-in evaluation item has fewer than {n} words ({short[0][:60]!r}): the overlap "
                         "check assumes none does")
    hits: list[set] = []  # the n-grams of evaluation items each candidate row holds
    texts: list[str] = []
    for batch in _batches(rows):
        chunk = [heldout.row_text(_without_roles(r)) for r in batch]
        if not _has_run(words("\n".join(chunk)), vocab, n):  # a run across two rows only adds candidates
            continue
        for t in chunk:
            if shared := ngrams(t, n) & every:
                hits.append(shared)
                texts.append(t)
    if not texts:
        return {}
    index = ContaminationIndex(texts, n)  # the candidates alone: an item's overlap depends on no other row
    out = {}
    for name, texts_ in items.items():
        seen = [g for t, g in zip(texts_, grams[name]) if index.overlap(t) >= threshold]
        if seen:
            flagged = set().union(*seen)
            overlapping = [t for t, h in zip(texts, hits) if h & flagged]
            out[name] = (len(seen), len(texts_), len(overlapping), overlapping[0])
    return out


def note_eval_overlap(rows, say: bool = True) -> dict:
    """eval_overlap of the training rows, said in the job log (rank 0)."""
    from backend.specs import EvalSpec

    found = eval_overlap(rows)
    threshold = EvalSpec.model_fields["overlap_threshold"].default
    for name, (seen, total, nrows, first) in found.items() if say else ():
        example = " ".join(first.split())
        print(f"data: {nrows} of the rows trained on (after the held-out split, max_rows and weights) overlap the "
              f"built-in evaluation set {name} (one: {example[:80] + ('…' if len(example) > 80 else '')!r}): "
              f"{seen} of its {total} items share {threshold:.0%} or more of their {heldout.NGRAM}-word runs with "
              f"them, and the evaluation's held-out check (which reads each source file whole) will count at least "
              f"those items as seen. Leave those rows out to score the model on all of {name}.",
              flush=True)
    return found


def _batches(rows):
    """The rows of a `datasets` table (or any list of rows) as lists of dicts, CHUNK at a time."""
    if hasattr(rows, "iter"):
        for batch in rows.iter(batch_size=CHUNK):
            yield [dict(zip(batch, values)) for values in zip(*batch.values())]
    else:
        for i in range(0, len(rows), CHUNK):
            yield rows[i:i + CHUNK]


def _without_roles(value):
    """A row without its turns' roles: the words of the source row the evaluation reads (a job's rows are messages,
    whose "user" and "assistant" the file did not hold)."""
    if isinstance(value, dict):
        return {k: _without_roles(v) for k, v in value.items() if k != "role"}
    if isinstance(value, list):
        return [_without_roles(v) for v in value]
    return value


def _has_run(w: list[str], vocab: set[str], n: int) -> bool:
    """Whether n words in a row of `w` are all in `vocab`: a text sharing no such run shares no n-gram."""
    inside = np.fromiter(map(vocab.__contains__, w), bool, len(w))
    if len(inside) < n:
        return False
    run = np.convolve(inside.astype(np.int32), np.ones(n, np.int32), "valid")
    return bool((run == n).any())
