"""Seed problems: a built-in generator (the offline stand-in for the MATH data set), and importers for MATH- and
GSM8K-format files.

SOLAR took its seeds from MATH only, to stay clear of benchmarks such as GSM8K. The generator makes problems with a
worked solution and a final answer that it computed itself, deterministic by seed, across categories and levels
(1 = one step, small numbers; 3 = several steps, larger numbers).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.data import json_reason
from backend.data_reading import file_fault, not_a_regular_file, reader_failed
from backend.data_files import _first_non_utf8, non_utf8_said, not_throughout_said, unicode_encoding
from backend.lm_eval_tasks.loaders import json_lines
from backend.synth.answers import extract_answer, to_number
from backend.synth.problems import CATEGORIES, GENERATORS

REPEATS_TO_GIVE_UP = 1000  # generate(): repeats in a row after which a category and level counts as spent


class SeedError(ValueError):
    """A seed file the seed reader refuses. `says_fix`: the message ends in what to do (an encoding's "save it as
    UTF-8"), so the page adds the upload to it rather than a second instruction (upload_refused)."""

    def __init__(self, message: str, says_fix: bool = False):
        super().__init__(message)
        self.says_fix = says_fix


def upload_refused(exc: SeedError) -> str:
    """The Synthetic math page's words for an uploaded seed file refused for its own fault: why, then one thing to
    do. A binary file read "…or no text file at all. Save it as UTF-8. Fix the file and upload it again.": two
    instructions for one fix."""
    said = str(exc).rstrip(".")
    return f"{said}, then upload it again." if exc.says_fix else f"{said}. Fix the file and upload it again."


@dataclass(frozen=True)
class Seed:
    id: str
    category: str
    level: int
    question: str
    solution: str  # worked solution ending in the final answer
    answer: str  # canonical final answer
    source: str = "generator"

    def to_dict(self) -> dict:
        return asdict(self)


def generate(n: int, seed: int = 0, categories: list[str] | None = None, levels: list[int] | None = None) -> list[Seed]:
    """`n` distinct problems, the same for the same arguments (and the first k of them those of generate(k)); the
    categories and levels take turns, so each gets its share: an eighth each of the default mix."""
    cats = categories or list(CATEGORIES)
    lv = levels or [1, 2, 3]
    bad = [c for c in cats if c not in GENERATORS]
    if bad:
        raise SeedError(f"Unknown categories {bad}; choose from {', '.join(CATEGORIES)}.")
    if any(level not in (1, 2, 3) for level in lv):
        raise SeedError("levels are 1, 2 or 3.")
    out: list[Seed] = []
    seen: set[str] = set()
    # Each problem once: a repeat is drawn again in the same category and level, with the next draw of its own, so a
    # category's share stays its turn's (skipping to the next turn instead gave 5000 seeds 25% arithmetic and 0.9%
    # counting: the small spaces repeated more). A category and level that gives REPEATS_TO_GIVE_UP repeats in a
    # row is spent and its turns pass; a choice too narrow for n distinct problems is refused.
    spent: set[tuple[str, int]] = set()
    i = 0
    while len(out) < n:
        cat, level = cats[i % len(cats)], lv[(i // len(cats)) % len(lv)]
        if (cat, level) not in spent:
            for attempt in range(REPEATS_TO_GIVE_UP):
                rng = random.Random(f"{seed}-{i}" if attempt == 0 else f"{seed}-{i}-{attempt}")
                question, (solution, answer) = GENERATORS[cat](rng, level)
                if question not in seen:
                    seen.add(question)
                    out.append(Seed(f"gen-{seed}-{i}", cat, level, question, solution, answer))
                    break
            else:
                spent.add((cat, level))
                if len(spent) == len({(c, lvl) for c in cats for lvl in lv}):
                    raise SeedError(f"The chosen categories and levels give only {len(out)} distinct problems, not "
                                    f"{n}: add categories or levels, or ask for fewer seeds.")
        i += 1
    return out


def read_records(path: Path, label: str) -> list[tuple[int, dict]]:
    """(number, record) of a JSON Lines file (its line) or a .json array (its position): seed and benchmark files."""
    path = Path(path)
    if not path.exists():
        raise SeedError(f"Seed file {path} does not exist.")
    if problem := not_a_regular_file(path, "a .jsonl or .json file"):  # a named pipe hung; /dev/zero never ended
        raise SeedError(problem)
    # read as the Train page reads a data file (backend/data_files.py): UTF-8 with or without its mark, UTF-16 / UTF-32
    # with theirs, and any other bytes refused as "not UTF-8" there and here (errors="replace" turned a binary file
    # into "not valid JSON" here)
    # x.jsonl.gz and x.json.gz read through gzip, as a data file is (data_reading.GZ_SUFFIXES): its compressed bytes
    # were refused as "line 1, column 2: not UTF-8 (byte 0x8b)"
    gz = path.suffix.lower() == ".gz"
    try:
        encoding = unicode_encoding(path) or "utf-8-sig"
        if encoding == "utf-8-sig" and (bad := _first_non_utf8(path)):
            raise SeedError(non_utf8_said(label, bad), says_fix=True)
        with gzip.open(path, "rt", encoding=encoding) if gz else open(path, encoding=encoding) as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise SeedError(not_throughout_said(label, encoding, exc.reason), says_fix=True) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # not gzip, or cut short: a .gz only
        raise SeedError(f"{label} is not a whole gzip file ({exc or type(exc).__name__}): compress it again (gzip "
                        "FILE), or give the file uncompressed.", says_fix=True) from None
    if path.name.lower().removesuffix(".gz").endswith(".json") and text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as exc:
            raise SeedError(f"{label} is not valid JSON: {exc}")
        except RecursionError:  # Python's json on arrays ~1,000 deep: a bare RecursionError on the page
            raise SeedError(f"{label} is nested too deeply (arrays and objects about 1,000 inside each other): "
                            f"{LAYOUTS}.") from None

    def fault(n: int | None, said: str | None, error: Exception | None) -> SeedError:
        if n is None:
            return SeedError(f"{label} holds no records.")
        if said is None:
            return SeedError(f"{label}, line {n}, column {error.colno}: not valid JSON ({json_reason(error)}).")
        return SeedError(f"{label}, line {n}: {said.removesuffix('.')}: {LAYOUTS}.")  # nested too deeply

    # a record's fields are checked by the caller (_need), which names the layout the first record chose
    return json_lines(text, lambda n, row: None, fault)


# the two seed layouts, named in every error about a record's fields (the format is told by the first record)
LAYOUTS = "a seed record is MATH's {problem, solution} or GSM8K's {question, answer}"


def _need(label: str, n: int, row: dict, fields: tuple[str, ...], fmt: str) -> None:
    """`n`: the record's line in a JSONL file, its position in a JSON array."""
    if not isinstance(row, dict):
        raise SeedError(f"{label}, record {n}: expected an object with {', '.join(fields)} ({LAYOUTS}).")
    missing = [f for f in fields if f not in row]
    if missing:  # both layouts: the uploader says MATH / GSM8K, and a MATH file's typo read as a GSM8K record
        raise SeedError(f"{label}, record {n}: missing {', '.join(missing)} — {LAYOUTS}.")
    # a number or list where text belongs raised a TypeError, not an error naming the file and record
    wrong = [f for f in fields if not isinstance(row[f], str)]
    if wrong:
        raise SeedError(f"{label}, record {n}: {', '.join(wrong)} must be text — a {fmt} record's "
                        f"{', '.join(fields)} are strings.")


def _uid(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def import_math(path: Path, label: str | None = None) -> list[Seed]:
    """MATH-format records: problem, level ("Level 3"), type, solution with \\boxed{answer}. `label` names the
    file in errors (default its name; the page passes the uploaded file's name, not the stored one)."""
    label = label or Path(path).name
    seeds = []
    for n, row in read_records(path, label):
        _need(label, n, row, ("problem", "solution"), "MATH")
        answer = extract_answer(row["solution"]) if "\\boxed" in row["solution"] else None
        if not answer:
            raise SeedError(f"{label}, record {n}: the solution has no \\boxed{{…}} final answer.")
        level = (str(row.get("level", "Level 1")).split() or ["1"])[-1]  # "" or no level: level 1
        seeds.append(Seed(_uid("math", row["problem"]), str(row.get("type", "math")).lower().replace(" ", "_"),
                          int(level) if level.isdigit() else 1, row["problem"], row["solution"], answer, "MATH"))
    return seeds


def import_gsm8k(path: Path, label: str | None = None) -> list[Seed]:
    """GSM8K-format records: question, answer whose last line is '#### n'. `label`: as for import_math."""
    label = label or Path(path).name
    seeds = []
    for n, row in read_records(path, label):
        _need(label, n, row, ("question", "answer"), "GSM8K")
        if "####" not in row["answer"]:
            raise SeedError(f"{label}, record {n}: the answer does not end with '#### <number>'.")
        final = row["answer"].rsplit("####", 1)[1].strip()
        if to_number(final) is None:
            raise SeedError(f"{label}, record {n}: final answer {final!r} is not a number.")
        solution = row["answer"].rsplit("####", 1)[0].strip() + f" The answer is \\boxed{{{final}}}."
        seeds.append(Seed(_uid("gsm8k", row["question"]), "word_problem", 1, row["question"], solution, final,
                          "GSM8K"))
    return seeds


def load_seeds(source: str, n: int | None = None, seed: int = 0, categories=None, levels=None,
               label: str | None = None) -> list[Seed]:
    """'generator' (n problems), or a MATH / GSM8K file (the format is recognised from its fields). `label` names
    the file in errors: an upload is stored as '<content hash>-<name>', which the user never chose."""
    if source == "generator":
        return generate(n or 100, seed, categories, levels)
    label = label or Path(source).name
    rows = read_records(Path(source), label)
    first = rows[0][1] if rows else {}
    load = import_math if isinstance(first, dict) and "problem" in first else import_gsm8k
    # a problem the file holds twice (the same id: a hash of its text) is one seed, not two identical pairs
    unique: dict[str, Seed] = {}
    for s in load(Path(source), label):
        unique.setdefault(s.id, s)
    seeds = list(unique.values())
    if levels:
        seeds = [s for s in seeds if s.level in levels]
    return seeds[:n] if n else seeds


def count_seeds(path: str | Path, label: str) -> int:
    """How many seeds a seed file holds (load_seeds, the file named `label` in errors), for the page that takes an
    upload: a SeedError when the file is at fault (it does not parse, a record is neither MATH's nor GSM8K's), which
    may remove the upload; a data.ReaderFailed when the read failed for a reason that is not the file's (an OSError,
    memory: data_reading.file_fault), which keeps it, said as such (the page showed a traceback). A fault of the
    file's that the seed reader does not word itself (a ValueError of a library) is a SeedError naming the file: raised
    as it came, the page (which catches SeedError) showed its traceback."""
    try:
        return len(load_seeds(str(path), label=label))
    except SeedError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted by file_fault: the file's, or the reader's own
        if file_fault(exc):
            why = (str(exc).splitlines() or [""])[0][:300]
            raise SeedError(f"{label} could not be read as seeds ({type(exc).__name__}: {why}). Fix the file: "
                            f"{LAYOUTS}, a record a line (JSON Lines) or a .json array of them.", says_fix=True
                            ) from None
        raise reader_failed(Path(path), exc) from exc
