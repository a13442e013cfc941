"""The n-gram overlap the synthetic-math job checks against a benchmark (pipeline.run_synth_math) and the evaluation
checks against a model's training data (backend/heldout.py): `canonical` text, its `words` and `ngrams`, and
`ContaminationIndex`, exact and fast at 160,000 reference texts (bench/contamination_index.py).
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections import defaultdict
from itertools import count

import numpy as np

_WORD = re.compile(r"\w+")


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
