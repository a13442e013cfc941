"""Training data through `datasets`: local JSONL / JSON / CSV / Parquet / TXT files, the built-in sets, Hub ids.

Recognised layouts, converted to what trl's trainers take:
  text                      {text}                                   -> cpt
  alpaca                    {instruction, input?, output}            -> sft (messages)
  openorca                  {system_prompt?, question, response}     -> sft (messages)
  sharegpt                  {conversations: [{from, value}]}         -> sft (messages)
  messages                  {messages: [{role, content}]}            -> sft
  prompt_completion         {prompt, completion}                     -> sft
  preference                {prompt?, chosen, rejected}              -> dpo (UltraFeedback style)
"""

from __future__ import annotations

import math
from pathlib import Path

# The layouts, each row's check and conversion (data_rows) and the reading of local files (data_files) live beside
# this module; every name the rest of the studio uses is imported from here.
from backend.data_files import (_csv_extra_fields, _csv_options, _first_bad_json_line,  # noqa: F401
                                _paragraphs, _quiet_loader, _unreadable, _unusable_text,
                                json_lines_copy, json_reason, text_keys, too_deep_json, utf8_copy)
from backend.data_reading import (GZ_SUFFIXES, LOADERS, PREVIEW_CHARS, ReaderFailed, _clipped,  # noqa: F401
                                  cut_said, datasets_ready, file_fault, loader_suffix, names_data_file,
                                  not_a_regular_file, reader_failed)
from backend.data_rows import (KIND_LAYOUTS, LAYOUTS, DataError, _checked_row, _json_typed_file,  # noqa: F401
                               _rows, _shown, check_rows, convert_row, detect_layout, file_rows_keys, file_rows_value,
                               rows_keys, to_prompt_completion, wrapper_problem)

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_DIR = ROOT / "data"
BUILTIN = {  # name -> (file, what it is)
    "facts-corpus": ("facts-corpus.txt", "plain text: template-generated facts and arithmetic (continued pretraining)"),
    "alpaca-mini": ("alpaca-mini.jsonl", "Alpaca layout: template-generated instructions (SFT)"),
    "orca-mini": ("orca-mini.jsonl", "OpenOrca layout: template-generated questions with a system prompt (SFT)"),
    "prefs-mini": ("prefs-mini.jsonl", "prompt/chosen/rejected: correct vs wrong answers (DPO)"),
}
MAX_REPEATS = 10_000  # the most times a weight may repeat a source's rows (the paper's mixes take each once or twice)
HUB_SAMPLE = 1000  # rows of a Hub set checked before queueing; its job checks every row as it converts them
MIN_HELD_OUT_ROWS = 10  # split_mix holds out no share of fewer rows in all (the plan and Recipe page say so)


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise DataError(f"No built-in data set {name!r}; choose one of: {', '.join(BUILTIN)}.")
    return BUILTIN_DIR / BUILTIN[name][0]


def _registered(name: str):
    from sqlmodel import select

    from storage import db
    from storage.models import DatasetRecord

    with db.session() as s:
        rec = s.exec(select(DatasetRecord).where(DatasetRecord.name == name)).first()
    if rec is None:
        raise DataError(f"No registered data set named {name!r} (see the Synthetic math page).")
    return rec


def expand(sources: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Replace every `mix:NAME` by its weighted sources (weights multiply)."""
    return [(source, weight) for source, weight, _ in expand_rows([(s, w, "line") for s, w in sources])]


def expand_rows(sources: list[tuple[str, float, str | None]]) -> list[tuple[str, float, str | None]]:
    """expand() with what a row of each source's .txt files is: a mix member's own sample_by, saved with the mix
    (a book a paragraph a row stays so wherever the mix is used), else the one its mix was given. A mix saved
    before its members kept one (its members {"source", "weight"} only) reads every member as its use says.
    Weights multiply through mixes, and their product is checked here, in the weights the user gave: a member's 2
    in a mix used at 10,000 passed every check before queueing and failed the job with "weight 20000"."""
    return [item for source, weight, sample_by in sources for item in _expanded(source, weight, sample_by, ())]


def _expanded(source: str, weight: float, sample_by: str | None, factors: tuple[str, ...], top: str = "") -> list:
    """expand_rows of one source; `factors`: the weights its `weight` is the product of, in words (innermost
    first), and `top` the mix they were given through; none for a source as given."""
    if not source.startswith("mix:"):
        if factors and not weight <= MAX_REPEATS:  # inf too (a use's 1e308 × 2)
            raise DataError(f"{top}: {source}: weights multiply through mixes: {' × '.join(factors)} = "
                            f"{_shown_weight(weight)}, which would repeat its rows over {MAX_REPEATS:,} times; lower "
                            f"them so that their product is at most {MAX_REPEATS:,}.")
        return [(source, weight, sample_by)]
    if not factors:
        check_weight(source, weight)  # the use's own weight first: a product with it would hide which was wrong
    outer = factors or (f"{_shown_weight(weight)} (where {source} is used)",)
    return [item for x in mix_members(source)
            for item in _expanded(x["source"], float(x["weight"]) * weight, x.get("sample_by") or sample_by,
                                  (f"{_shown_weight(x['weight'])} ({x['source']} in {source})", *outer),
                                  top or source)]


def mix_members(source: str) -> list[dict]:
    """A saved mix's members as its record holds them: {"source", "weight"} and, when saved with it, "sample_by"."""
    rec = _registered(source.removeprefix("mix:"))
    if rec.kind != "mix":
        raise DataError(f"{source}: {rec.name} is a {rec.kind} data set, not a mix; use dataset:{rec.name}.")
    members = rec.provenance["sources"]
    for x in members:  # a mix saved with a weight of 1e308, inf or nan (or edited by hand): refused before queueing
        check_weight(f"{source}: {x['source']}", x["weight"])
        if x.get("sample_by") is not None:
            _sample_by(x["sample_by"])  # a record edited by hand: named here, not deep in `datasets`
    return members


# Suffixes of files, never of a Hub id: a missing `x.tsv` is a missing file, not a Hub failure.
FILE_SUFFIXES = {*LOADERS, ".tsv", ".xlsx", ".xls", ".ndjson", ".arrow", ".gz", ".bz2", ".xz", ".zst", ".zip",
                 ".tar", ".yaml", ".yml", ".md"}


def looks_local(source: str) -> bool:
    """Whether a data source names a local file even when it does not exist: an absolute or home path, ./ or ../,
    more folders than a Hub id's owner/name, a file suffix, or a folder that is there. Such a source that is missing
    is "does not exist", never a Hub failure ("Could not load 'nofolder/x.tsv' from the Hugging Face Hub … Offline?"
    sent the user to the network for a typo in a path)."""
    if source.startswith(("builtin:", "dataset:", "mix:")):
        return False
    path = Path(source).expanduser()
    return (path.is_absolute() or source.startswith(("~", "./", "../")) or source.count("/") > 1
            or path.suffix.lower() in FILE_SUFFIXES or ("/" in source and path.parent.is_dir()))


SAMPLE_BY = ("line", "paragraph", "document")  # how a .txt file splits into rows (`datasets`' text sample_by)


def load_source(source: str, split: str = "train", sample_by: str = "line"):
    """A `datasets.Dataset` from 'builtin:NAME', 'dataset:NAME' (registered), a local file, or a Hub id.
    `sample_by` says what a row of a .txt file is (a mix's .txt members too; other files have rows of their own):
    a line, a paragraph (lines up to a blank one) or the whole file. Each row is one training example, ended by the
    end-of-text token in continued pretraining: a book read a line a row was taught to stop after every line."""
    import datasets

    datasets_ready()  # before `datasets` fingerprints anything (data_files.datasets_ready)
    datasets.disable_progress_bars()
    if source.startswith("builtin:"):
        source = str(builtin_path(source.removeprefix("builtin:")))
    elif source.startswith("dataset:"):
        rec = _registered(source.removeprefix("dataset:"))
        if not rec.path:
            raise DataError(f"{source} is a mix: use mix:{rec.name}.")
        source = rec.path
    elif source.startswith("mix:"):  # each member read as its mix saved it (expand_rows), else as `sample_by`
        parts = [load_source(src, sample_by=by) for src, _, by in expand_rows([(source, 1.0, sample_by)])]
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    path = Path(source).expanduser()
    if looks_local(source) or path.exists():
        if not path.exists():
            raise DataError(f"Data file {path} does not exist.")
        if path.is_dir():  # a folder named like a file (Spark writes x.parquet/ folders) was an IsADirectoryError
            raise DataError(f"{path} is a folder, not a data file: give one .jsonl / .json / .csv / .parquet / .txt "
                            "file in it.")
        if problem := not_a_regular_file(path):  # a named pipe hung here; /dev/zero read as "empty"
            raise DataError(problem)
        if (loader := LOADERS.get(loader_suffix(path))) is None:  # `x.JSONL` too: Windows and Excel write such
            raise DataError(f"{path.name}: unsupported file type; use .jsonl, .json, .csv, .parquet or .txt (or "
                            f"{', '.join(GZ_SUFFIXES)}).")
        with utf8_copy(path) as (readable, tmp):  # a UTF-16 file (Excel's "Unicode Text") read from a UTF-8 copy
            try:
                ds = _read_file(readable, loader, sample_by, tmp)
            except RecursionError:  # Python's json on a document nested ~1,000 deep over many lines (file_rows_value)
                raise DataError(too_deep_json(readable) or f"{_shown(source)}: nested too deeply to read.") from None
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:
            from datasets.exceptions import DatasetNotFoundError
            from huggingface_hub import constants

            if isinstance(exc, DatasetNotFoundError) and not constants.HF_HUB_OFFLINE:  # the Hub answered: no such
                raise DataError(f"{source!r} is not a data set on the Hugging Face Hub (or it is gated or private: "
                                "set HF_TOKEN). Check the id, or point at a local file.") from None
            raise DataError(f"Could not load {source!r} from the Hugging Face Hub ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}). Offline? Download it elsewhere and point at "
                            "the file instead.") from None
    if len(ds) == 0:
        raise DataError(f"{source} has no rows.")
    return ds


def _read_file(path: Path, loader: str, sample_by: str, tmp: Path | None):
    """load_source's read of one local file through `datasets`' `loader` (json, csv, parquet, text). `tmp`: the
    temporary folder of a UTF-8 copy (utf8_copy), where its load caches (_load_file). A JSON object that wraps the
    rows under one key (`{"data": [...]}`, data_rows.rows_keys) is read as its rows, as `datasets`' `field=` reads it
    (json_lines_copy); one that wraps several lists is asked which."""
    from backend.uploads import shown_name

    if problem := _unusable_text(path):
        raise DataError(problem)
    # a .txt saved with a byte-order mark (Windows Notepad) began its first row with U+FEFF, trained on as text
    extra = {"encoding": "utf-8-sig", "sample_by": _sample_by(sample_by)} if loader == "text" \
        else _csv_options(path) if loader == "csv" else {}
    if loader == "csv" and (problem := _csv_extra_fields(path, extra)):
        raise DataError(problem)
    wrapper = None  # the one JSON object the file holds, when `datasets` read it as one row or could not read it
    try:
        with _quiet_loader(loader):
            ds = _load_file(path, loader, extra, tmp)
        wrapper = file_rows_value(path) if loader == "json" and len(ds) == 1 else None
    except Exception as exc:  # pyarrow / json errors: say which file and why
        if not _file_fault(path, loader, exc):  # a half-imported library, memory, disk: never "not JSON"
            raise reader_failed(path, exc) from exc
        if loader != "json" or (wrapper := file_rows_value(path)) is None or not (
                rows_keys(wrapper) or wrapper_problem(wrapper, shown_name(path))):
            raise DataError(_unreadable(path, loader, exc)) from None
    # one rule, which data_rows._json_records reads the rows again by: a file of ONE object wrapping a list of rows
    # (an array around such an object is one row of a `data` column: json_lines_copy raised a TypeError on it)
    keys = rows_keys(wrapper) if wrapper is not None else []
    if wrapper is not None and (problem := wrapper_problem(wrapper, shown_name(path))):
        raise DataError(problem)
    texts = text_keys(wrapper) if wrapper is not None and not keys else []  # {"data": ["text", …]}: a text column
    if len(keys) > 1 or len(texts) > 1:  # {"data": [rows]} is read as its rows; which of several lists is the user's
        raise DataError(f"{shown_name(path)} holds one JSON object whose keys {', '.join(keys or texts)} each hold a "
                        f"list of {'objects' if keys else 'texts'}: save the list of rows alone as a .json array (or "
                        "JSON Lines).")
    keys = keys or texts
    if keys:
        with json_lines_copy(path, keys[0]) as (rows_file, rows_tmp):
            try:
                with _quiet_loader(loader):
                    ds = _load_file(rows_file, loader, extra, rows_tmp)
            except Exception as exc:  # noqa: BLE001 - as above, named as the user's file
                if not _file_fault(path, loader, exc):
                    raise reader_failed(path, exc) from exc
                raise DataError(_unreadable(path, loader, exc)) from None
    if loader == "text" and sample_by == "paragraph":
        ds = ds.map(_paragraphs, batched=True)
    elif loader == "text":
        ds = ds.filter(lambda r: bool(r["text"].strip()))
    return ds


def _file_fault(path: Path, loader: str, exc: Exception) -> bool:
    """Whether a failed read is the file's fault (data_files.file_fault), or a JSON file's line that does not parse
    says it is whatever the reader raised."""
    return file_fault(exc) or (loader == "json" and _first_bad_json_line(path) is not None)


def _load_file(path: Path, loader: str, extra: dict, tmp: Path | None):
    """`datasets`' `loader` on one file; a copy in temporary folder `tmp` caches there and is held in memory, so
    nothing of it outlives the folder (and no copy's cache piles up beside every other data set's)."""
    import datasets

    if tmp is not None:
        extra = extra | {"cache_dir": str(tmp / "cache"), "keep_in_memory": True}
    return datasets.load_dataset(loader, data_files=str(path), split="train", **extra)


def reads_text_file(source: str) -> bool:
    """Whether `source` reads a .txt file (itself, a built-in or registered set, or a member of a mix): where
    sample_by has anything to split. The pages said "a row per paragraph" of a .jsonl, on which it does nothing."""
    if source.startswith("mix:"):
        try:
            return any(reads_text_file(src) for src, _ in expand([(source, 1.0)]))
        except DataError:
            return False
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        return name in BUILTIN and BUILTIN[name][0].endswith(".txt")
    if source.startswith("dataset:"):
        try:
            source = _registered(source.removeprefix("dataset:")).path
        except DataError:
            return False
    return loader_suffix(source) == ".txt"


def _sample_by(value: str) -> str:
    if value not in SAMPLE_BY:
        raise DataError(f"sample_by {value!r}: a .txt file's rows are one of {', '.join(SAMPLE_BY)}.")
    return value


def _rows_to_check(source: str) -> int | None:
    """All rows of a local, built-in or registered set (100k Alpaca rows take about a second); a sample of a Hub
    set, which can be millions of rows: its job checks every row as it converts them (_load_converted). A mix is
    never checked whole: the checks expand it and check each member under its own name (preview, check_inputs)."""
    return HUB_SAMPLE if hub_id(source) else None


def hub_id(source: str) -> bool:
    """Whether a data source is a Hub data set id (owner/name), not a built-in, registered set, mix or file: the
    sources whose rows are only sampled before queueing, and that a recipe's plan leaves to the job."""
    path = Path(source).expanduser()
    return (source.count("/") == 1 and not source.startswith(("builtin:", "dataset:", "mix:", ".", "/", "~"))
            and not path.exists() and not names_data_file(path))


def check_source(source: str, kind: str) -> None:
    """Read a training source as its job will (the file parses, its columns fit a layout of `kind`, its rows
    convert: every row, a sample of a Hub set), raising DataError: the training job's own check, and the ones
    before it is queued or its recipe planned (backend/runner/queue.py, backend/recipe/plan.py)."""
    ds = load_source(source)
    try:
        layout = detect_layout(ds.column_names, kind)
    except DataError as exc:  # its columns alone did not say which source (a mix names several)
        raise DataError(f"{source}: {exc}") from None
    check_rows(ds, source, layout, kind, n=_rows_to_check(source))


def check_mix(sources: list[tuple[str, float]] | list[tuple[str, float, str]], kind: str) -> None:
    """Check each source of a mix about to be saved as a training job of `kind` will read it (check_source: the
    file parses, its columns fit a layout, every row converts; a Hub set sampled), a saved mix's own members
    under their names, each .txt read as the mix will keep it (expand_rows); a DataError names the member and the
    row. A mix with a bad member's rows was saved, listed with 0 rows, and refused at every use."""
    for source, weight, *_ in sources:  # a weight no mix can take, before any file is read
        check_weight(source, weight)
    for source, weight, by in _expand_with_rows(sources):
        ds = load_source(source, sample_by=by)
        try:
            layout = detect_layout(ds.column_names, kind)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
        check_rows(ds, source, layout, kind, n=_rows_to_check(source))


def _load_converted(source: str, kind: str, max_rows: int | None, sample_by: str = "line"):
    ds = load_source(source, sample_by=sample_by)
    layout = detect_layout(ds.column_names, kind)
    # every row checked as it converts: a Hub set's bad row beyond the sample checked before queueing is named
    # here (file, row, column), not by a Jinja error in trl's chat template
    name = _shown(source)
    if _json_typed_file(ds, source):  # the map below would see `datasets`' decoded values, not the file's rows
        check_rows(ds, source, layout, kind)
    ds = ds.map(lambda r, i: _checked_row(r, i + 1, name, layout, kind), with_indices=True,
                remove_columns=ds.column_names)
    if max_rows:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds, layout


def check_weight(source: str, weight) -> None:
    """Refuse a weight no mix can take, in words: not a positive finite number, or one that repeats a source over
    MAX_REPEATS times (1e308 × 200 rows is inf: an OverflowError in the rows' count, and 1e12 copies of a set a
    MemoryError). An int is compared, never passed to math.isfinite (10**400 raised OverflowError there), and the
    weight is said as given (10000.0000001 was "weight 10000 would repeat … at most 10,000")."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or (
            isinstance(weight, float) and not math.isfinite(weight)):
        raise DataError(f"{source}: weight must be a positive finite number; got {_shown_weight(weight)}.")
    if weight > MAX_REPEATS:
        raise DataError(f"{source}: weight {_shown_weight(weight)} would repeat its rows over {MAX_REPEATS:,} times; "
                        f"give a weight of at most {MAX_REPEATS:,} (1 = the whole set once, 2 = twice).")


def _shown_weight(weight) -> str:
    """A weight in a message: short (1e+308), yet never rounded into another number (10000.0000001 is not 10000);
    an int too long for a float or a line (10**400) in powers of ten."""
    if isinstance(weight, float):
        short = f"{weight:g}"
        return short if float(short) == weight else repr(weight)
    if isinstance(weight, int) and not isinstance(weight, bool) and abs(weight) >= 10**16:
        from decimal import Decimal

        return format(Decimal(weight), ".3e")
    return repr(weight)


def _weighted(ds, source: str, weight: float, seed: int):
    import datasets

    check_weight(source, weight)
    # the rows taken, counted once: a weight a float product leaves just over a whole number (a mix member's 0.07
    # used at weight 100 is 7.000000000000001) took the whole set 7 times and one random row more
    whole, rest = divmod(max(1, math.floor(weight * len(ds) + 0.5)), len(ds))  # half up: round() halves to even
    parts = [ds] * whole
    if rest:
        parts.append(ds.shuffle(seed=seed).select(range(rest)))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def prepare(source: str, kind: str, *, weight: float = 1.0, max_rows: int | None = None, seed: int = 0,
            sample_by: str = "line"):
    """Load, check the layout against the job kind, and convert to trl's format. `weight` scales the rows taken:
    0.5 takes a random half, 2.0 repeats the set twice (the paper's SFT v1–v4 mixes are such combinations)."""
    ds, layout = _load_converted(source, kind, max_rows, sample_by)
    return _weighted(ds, source, weight, seed), layout


def mix(sources: list[tuple[str, float]], kind: str, seed: int = 0, max_rows: int | None = None):
    """Concatenate weighted sources and shuffle. Returns (dataset, [(source, layout, rows)])."""
    train, _, report = split_mix(sources, kind, seed, max_rows, eval_fraction=0.0)
    return train, report


def split_mix(sources: list[tuple[str, float]] | list[tuple[str, float, str]], kind: str, seed: int = 0,
              max_rows: int | None = None, eval_fraction: float = 0.0):
    """(train, eval or None, report). The evaluation rows are split off each source BEFORE its weight repeats it:
    splitting after would put copies of training rows in the evaluation split (weight 3 = three copies). A row
    that occurs more than once (in a source, or in two sources) is held out with all its copies or not at all: the
    built-in sets repeat rows (facts-corpus: 200 lines, 168 distinct), and 8 of facts-corpus's 20 held-out rows
    were training rows too. Each source picks `eval_fraction` of its distinct rows; a row one source picks is held
    out of every source (picked per source and then dropped where another trained on it, two files of the same rows
    in another order held out nothing), and the held-out set holds each row once. Fewer than MIN_HELD_OUT_ROWS rows in
    all: no evaluation split. A source may come with its `sample_by` (source, weight, sample_by): how its .txt files split
    into rows."""
    import datasets

    loaded = [(source, weight, *_load_converted(source, kind, max_rows, sample_by))
              for source, weight, sample_by in _expand_with_rows(sources)]
    keyed = [(*item, [_row_key(row) for row in _rows(item[2], "")]) for item in loaded]
    test: set[bytes] = set()
    if eval_fraction and sum(len(ds) for _, _, ds, _ in loaded) >= MIN_HELD_OUT_ROWS:  # fewer: no split
        for *_, keys in keyed:
            test |= _pick_distinct(keys, eval_fraction, seed, test)
        everything = list(dict.fromkeys(k for *_, keys in keyed for k in keys))
        if len(everything) > 1 and test >= set(everything):  # sources of the same few rows: one left to train on
            test.discard(everything[0])
    trains, evals, report, seen = [], [], [], set()
    for source, weight, ds, layout, keys in keyed:
        if test:
            held = [i for i, k in enumerate(keys) if k in test and not (k in seen or seen.add(k))]
            evals += [ds.select(held)] if held else []
            ds = ds.select([i for i, k in enumerate(keys) if k not in test])
        ds = _weighted(ds, source, weight, seed) if len(ds) else ds
        trains.append(ds)
        report.append((source, layout, len(ds)))
    train = datasets.concatenate_datasets(trains) if len(trains) > 1 else trains[0]
    if not len(train):
        raise DataError(f"every row of {', '.join(s[0] for s in sources)} was held out: lower the held-out share "
                        f"({eval_fraction:g}) or give more rows.")
    held_out = (datasets.concatenate_datasets(evals) if len(evals) > 1 else evals[0]) if evals else None
    return train.shuffle(seed=seed), held_out, report


def _expand_with_rows(sources) -> list[tuple[str, float, str]]:
    """expand_rows() of sources given with or without their sample_by (then a line a row)."""
    return expand_rows([(source, weight, *(rest or ["line"])) for source, weight, *rest in sources])


def _row_key(row: dict) -> bytes:
    """A row's identity for split_mix: a 16-byte digest of it (the JSON text itself held ~1.6 KB a row in memory)."""
    import hashlib
    import json

    return hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=16).digest()


def _pick_distinct(keys: list[bytes], fraction: float, seed: int, held: set[bytes]) -> set[bytes]:
    """`fraction` of the distinct rows among `keys` (at least one, and one left to train on; none of a source of one
    distinct row), chosen with `seed`, counting those another source holds out already (`held`): a set and a
    shuffled copy of it held out twice the share."""
    import numpy as np

    distinct = list(dict.fromkeys(keys))
    if len(distinct) < 2:
        return set()
    n = min(max(1, math.ceil(fraction * len(distinct))), len(distinct) - 1)
    free = [k for k in distinct if k not in held]
    need = max(0, min(n - (len(distinct) - len(free)), len(free) - 1))
    return {free[i] for i in np.random.default_rng(seed).permutation(len(free))[:need]}


def preview(source: str, kind: str, n: int = 5, sample_by: str = "line") -> dict:
    """What the pages show before launch: layout, columns, row count, first converted rows. Its rows are checked
    as check_source checks them: the preview said "alpaca layout, 6 rows" for a file Launch then refused."""
    if source.startswith("mix:"):
        return _preview_mix(source, kind, n, sample_by)
    ds = load_source(source, sample_by=sample_by)
    layout = detect_layout(ds.column_names, kind)
    check_rows(ds, source, layout, kind, n=_rows_to_check(source))
    rows, cut = _clipped([convert_row(ds[i], layout, kind) for i in range(min(n, len(ds)))])
    return {"layout": layout, "columns": ds.column_names, "rows": len(ds), "examples": rows, "cut": cut,
            "text_file": reads_text_file(source), "text_rows": text_rows(source, sample_by)}


def _preview_mix(source: str, kind: str, n: int, sample_by: str) -> dict:
    """preview() of a mix, each member as its job reads it (split_mix): checked under its own name (a Hub member
    sampled), read with its own rows (expand_rows) and converted in its own layout. Read whole, a mix of a .txt and
    an Alpaca file was converted in one layout, and its .txt rows (no instruction) raised a TypeError on the page."""
    parts = []
    for member, _, by in expand_rows([(source, 1.0, sample_by)]):
        check_source(member, kind)
        ds = load_source(member, sample_by=by)
        parts.append((ds, detect_layout(ds.column_names, kind)))
    rows, cut = _clipped([convert_row(ds[i], layout, kind) for ds, layout in parts
                          for i in range(min(n, len(ds)))][:n])
    return {"layout": " + ".join(dict.fromkeys(layout for _, layout in parts)),
            "columns": list(dict.fromkeys(c for ds, _ in parts for c in ds.column_names)),
            "rows": sum(len(ds) for ds, _ in parts), "examples": rows, "cut": cut,
            "text_file": reads_text_file(source), "text_rows": text_rows(source, sample_by)}


def rows_said(sample_by: str, pv: dict, choice: str | None = None) -> str:
    """What a row of the .txt files a source reads is, for its preview (the Train page; `datasets preview`, whose
    `choice` names its option): the use's choice, and each member of a mix saved with its own (expand_rows: kept
    whatever the use says, so the choice alone misled)."""
    if not pv.get("text_rows"):
        return "" if sample_by == "line" else f" ({choice or sample_by}: no .txt here, its rows are its own)"
    follow = sample_by != "line" and any(not saved for *_, saved in pv["text_rows"])
    said = [f"a row per {sample_by} of a .txt"] * follow + [
        f"{src}: a row per {by}, as its mix saved it" for src, by, saved in pv["text_rows"] if saved]
    return f" ({'; '.join(said)})" if said else ""


def text_rows(source: str, sample_by: str = "line") -> list[tuple[str, str, bool]]:
    """(file or set, what a row of it is, whether its mix saved that) for each source inside `source` (itself, or a
    mix's members) that reads a .txt: what a preview says of a mix whose members keep their own (expand_rows)."""
    return [(src, by or sample_by, by is not None) for src, _, by in expand_rows([(source, 1.0, None)])
            if reads_text_file(src)]
