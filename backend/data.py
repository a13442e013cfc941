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

import itertools
import logging
import math
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_DIR = ROOT / "data"
BUILTIN = {  # name -> (file, what it is)
    "facts-corpus": ("facts-corpus.txt", "plain text: template-generated facts and arithmetic (continued pretraining)"),
    "alpaca-mini": ("alpaca-mini.jsonl", "Alpaca layout: template-generated instructions (SFT)"),
    "orca-mini": ("orca-mini.jsonl", "OpenOrca layout: template-generated questions with a system prompt (SFT)"),
    "prefs-mini": ("prefs-mini.jsonl", "prompt/chosen/rejected: correct vs wrong answers (DPO)"),
}
LAYOUTS: dict[str, tuple[set[str], set[str]]] = {  # name -> (required columns, optional columns)
    "preference": ({"chosen", "rejected"}, {"prompt"}),
    "messages": ({"messages"}, set()),
    "sharegpt": ({"conversations"}, set()),
    "alpaca": ({"instruction", "output"}, {"input"}),
    "openorca": ({"question", "response"}, {"system_prompt"}),
    "prompt_completion": ({"prompt", "completion"}, set()),
    "text": ({"text"}, set()),
}
KIND_LAYOUTS = {
    "cpt": ("text", "messages", "sharegpt", "alpaca", "openorca", "prompt_completion"),
    "sft": ("messages", "sharegpt", "alpaca", "openorca", "prompt_completion", "preference"),
    "dpo": ("preference",),
}
LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
# The columns each layout turns into turn text (convert_row), checked on every row before the job is queued: a null
# there became {"content": None} and failed the job in trl's chat template after the model loaded (walk12).
_TEXT_COLUMNS = {"text": ("text",), "alpaca": ("instruction", "output"), "openorca": ("question", "response"),
                 "prompt_completion": ("prompt", "completion")}
_OPTIONAL_TEXT = {"alpaca": "input", "openorca": "system_prompt"}  # may be missing or null, else text
_TURN_COLUMNS = {"messages": ("messages", ("role", "content"), "{role, content}"),  # column, text fields, shape
                 "sharegpt": ("conversations", ("value",), "{from, value}")}
HUB_SAMPLE = 1000  # rows of a Hub set checked before queueing; its job checks every row as it converts them
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


class DataError(ValueError):
    pass


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
    before its members kept one (its members {"source", "weight"} only) reads every member as its use says."""
    out = []
    for source, weight, sample_by in sources:
        if source.startswith("mix:"):
            out += expand_rows([(x["source"], x["weight"] * weight, x.get("sample_by") or sample_by)
                                for x in mix_members(source)])
        else:
            out.append((source, weight, sample_by))
    return out


def mix_members(source: str) -> list[dict]:
    """A saved mix's members as its record holds them: {"source", "weight"} and, when saved with it, "sample_by"."""
    rec = _registered(source.removeprefix("mix:"))
    if rec.kind != "mix":
        raise DataError(f"{source}: {rec.name} is a {rec.kind} data set, not a mix; use dataset:{rec.name}.")
    members = rec.provenance["sources"]
    for x in members:
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
_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n)+")
_LEADING_BLANK_LINES = re.compile(r"^(?:[ \t\f\v]*\n)+")


def load_source(source: str, split: str = "train", sample_by: str = "line"):
    """A `datasets.Dataset` from 'builtin:NAME', 'dataset:NAME' (registered), a local file, or a Hub id.
    `sample_by` says what a row of a .txt file is (a mix's .txt members too; other files have rows of their own):
    a line, a paragraph (lines up to a blank one) or the whole file. Each row is one training example, ended by the
    end-of-text token in continued pretraining: a book read a line a row was taught to stop after every line."""
    import datasets

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
        if path.suffix not in LOADERS:
            raise DataError(f"{path.name}: unsupported file type; use .jsonl, .json, .csv, .parquet or .txt.")
        if problem := _unusable_text(path):
            raise DataError(problem)
        # a .txt saved with a byte-order mark (Windows Notepad) began its first row with U+FEFF, trained on as text
        extra = {"encoding": "utf-8-sig", "sample_by": _sample_by(sample_by)} if LOADERS[path.suffix] == "text" \
            else _csv_options(path) if LOADERS[path.suffix] == "csv" else {}
        try:
            with _quiet_loader(LOADERS[path.suffix]):
                ds = datasets.load_dataset(LOADERS[path.suffix], data_files=str(path), split="train", **extra)
        except Exception as exc:  # pyarrow / json errors: say which file and why
            raise DataError(_unreadable(path, LOADERS[path.suffix], exc)) from None
        if LOADERS[path.suffix] == "text" and sample_by == "paragraph":
            ds = ds.map(_paragraphs, batched=True)
        elif LOADERS[path.suffix] == "text":
            ds = ds.filter(lambda r: bool(r["text"].strip()))
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


def _csv_options(path: Path) -> dict:
    """How `datasets`' CSV reader reads a data file: every column as text, a cell empty only when it is empty, and a
    file separated by ';', tab or '|' (a spreadsheet saved where the decimal mark is a comma) split so. A CSV cell has
    no type, but pandas guessed one per 10,000-row chunk: a file of numeric answers ("4") was refused ("output must
    be text; got int"), one whose answers turned from numbers to words after row 10,000 failed ("Failed to parse
    string: 'answer 4' as a scalar of type int64"), and an answer "NA", "None" or "null" became a missing one. A
    header `datasets` cannot read is left to its reader, which says why (_unreadable)."""
    import datasets
    import pandas as pd

    try:
        sep, columns = ",", list(pd.read_csv(path, nrows=0).columns)
        if len(columns) == 1 and (other := next((c for c in ";\t|" if c in str(columns[0])), None)):
            sep, columns = other, list(pd.read_csv(path, nrows=0, sep=other).columns)
    except Exception:  # noqa: BLE001 - the read itself names the fault
        return {}
    return {"sep": sep, "features": datasets.Features({c: datasets.Value("string") for c in columns}),
            "keep_default_na": False, "na_values": [""]}


class _ThisThread(logging.Filter):
    """Drops the ERROR records logged in the thread that made it (other threads' loads keep theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or record.thread != self.thread


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
    return Path(source).suffix == ".txt"


def _sample_by(value: str) -> str:
    if value not in SAMPLE_BY:
        raise DataError(f"sample_by {value!r}: a .txt file's rows are one of {', '.join(SAMPLE_BY)}.")
    return value


def _paragraphs(batch: dict) -> dict:
    """`datasets`' paragraphs cut at "\\n\\n" only: a line of spaces between two paragraphs joined them, and a third
    newline began the next one with a blank line. Cut at every run of blank (or whitespace-only) lines instead, and
    keep no blank paragraph."""
    parts = (_LEADING_BLANK_LINES.sub("", p).rstrip() for text in batch["text"] for p in _BLANK_LINES.split(text))
    return {"text": [p for p in parts if p.strip()]}


@contextmanager
def _quiet_loader(loader: str):
    """Silence the `datasets` file loader's own error line while load_source runs it: the json, csv and parquet
    builders (datasets/packaged_modules/*/*.py) log "Failed to load JSON from file … ArrowInvalid …" (or "Failed to
    read file …") just before they raise, and that raw line reached stderr ahead of the one-line DataError that
    _unreadable makes of the same failure. Only this call's records go: the filter sits on that loader's logger for
    the call's duration and keeps other threads' records."""
    logger = logging.getLogger(f"datasets.packaged_modules.{loader}.{loader}")
    quiet = _ThisThread()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _unusable_text(path: Path) -> str | None:
    """Why a file cannot be read, said before `datasets` reads it: an empty file (named as the user sent it, not by
    its stored path), one of blank lines only (the reader said 'Instruction "train" corresponds to no data!') and
    one that is not UTF-8 (the JSON reader took a Latin-1 file, then reading its rows raised a bare
    "'utf-8' codec can't decode byte 0xe9 in position 3")."""
    from backend.uploads import shown_name

    if path.stat().st_size == 0:
        return f"Data file {shown_name(path)} is empty: it has no rows."
    if path.suffix == ".parquet":  # `datasets` read one of no rows as "BatchSize must be greater than 0, got 0"
        return f"Data file {shown_name(path)} has no rows." if _parquet_rows(path) == 0 else None
    if _only_blank(path):
        return f"Data file {shown_name(path)} holds only blank lines: it has no rows."
    if bad := _first_non_utf8(path):
        return (f"{shown_name(path)}, line {bad[0]}, column {bad[1]}: not UTF-8 (byte {bad[2]:#04x}): save the file "
                "as UTF-8.")
    return None


def _parquet_rows(path: Path) -> int | None:
    """The rows a Parquet file's footer counts, or None when it is no Parquet file (its reader then says why)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - not Parquet, or damaged: load_dataset names it (_unreadable)
        return None


def _only_blank(path: Path) -> bool:
    """Whether a text file holds nothing but whitespace, read a MiB at a time (it stops at the first text)."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if chunk.strip():
                return False
    return True


def _unreadable(path: Path, loader: str, exc: Exception) -> str:
    """Why a local file could not be read, naming it as the user knows it (an upload by the name it was sent
    under, not the stored hash-prefixed one) and the first bad line counted from 1 as an editor counts: JSON that
    does not parse (pyarrow names a 0-based row, "in row 0"), or a line of JSON that is not an object (pyarrow:
    "Column() changed from object to number")."""
    from backend.uploads import shown_name

    name = shown_name(path)
    if "corresponds to no data" in str(exc):  # `datasets`' words ('Instruction "train" corresponds to no data!')
        what = {"csv": "a header line but no rows", "json": "no rows: an empty array, or only empty objects {}"}
        return f"Data file {name} holds {what.get(loader, 'no rows')}. Add rows to it, or choose another file."
    if loader == "json" and (bad := _first_bad_json_line(path)):
        line, column, what = bad
        shape = ("A .json file holds one JSON array of objects, or one object per line" if path.suffix == ".json"
                 else "Each line must be one JSON object")
        where = (f", line {line}" if line else "") + (f", column {column}" if column else "")
        return f"{name}{where}: {what}. {shape}."
    while exc.__cause__ is not None:  # datasets wraps the parser's error ("JSON parse error… in row 1")
        exc = exc.__cause__
    why = (str(exc).splitlines() or [type(exc).__name__])[0][:300]  # some errors have no text
    return f"Could not read {name} as {loader.upper()}: {why}"


def _first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, byte column, byte) of the first byte that is not UTF-8 (a Latin-1 or Windows-1252 file), or None.
    Read line by line in binary: about 0.1 s for 100k rows."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return n, exc.start + 1, line[exc.start]
    return None


def json_reason(exc) -> str:
    """json's reason without its dangling " at" ("Unterminated string starting at" cut the sentence short: the
    position is said beside it, as a line and column)."""
    return exc.msg.removesuffix(" at") + (" there" if exc.msg.endswith(" at") else "")


def _first_bad_json_line(path: Path) -> tuple[int | None, int | None, str] | None:
    """(line or None, column or None, what is wrong) for the first line of a JSON Lines file that does not parse or
    holds no object (`1`, `"x"`, `[..]`), for the place a .json array stops parsing, or for the first item of a .json
    array that is no object (no line: json does not say where it was); None when every line or item is an object
    (the reader failed on something else: its reason is shown)."""
    import json

    with open(path, encoding="utf-8", errors="replace") as f:
        if path.suffix == ".json":
            try:
                value = json.load(f)
                if not isinstance(value, (list, dict)):
                    return None, None, f"it holds {json.dumps(value)[:40]}, not an array of objects"
                return next(((None, None, f"item {k} of its array, {json.dumps(v)[:40]}, is not a JSON object")
                             for k, v in enumerate(value if isinstance(value, list) else [], 1)
                             if not isinstance(v, dict)), None)
            except json.JSONDecodeError as exc:
                f.seek(0)
                if f.read(4096).lstrip().startswith("["):
                    return exc.lineno, exc.colno, f"not valid JSON ({json_reason(exc)})"
            f.seek(0)
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                return n, exc.colno, f"not valid JSON ({json_reason(exc)})"
            if not isinstance(value, dict):
                return n, None, f"{line.strip()[:40]} is not a JSON object"
    return None


def detect_layout(columns: list[str], kind: str | None = None) -> str:
    cols = set(columns)
    for name, (required, _) in LAYOUTS.items():
        if required <= cols and (kind is None or name in KIND_LAYOUTS[kind]):
            return name
    wanted = KIND_LAYOUTS[kind] if kind else tuple(LAYOUTS)
    options = "; ".join(f"{n}: {', '.join(sorted(LAYOUTS[n][0]))} (missing {', '.join(sorted(LAYOUTS[n][0] - cols))})"
                        for n in wanted)
    raise DataError(f"Columns {sorted(cols)} fit no layout usable for {kind or 'training'}. Expected one of — "
                    f"{options}.")


def check_rows(ds, source: str, layout: str, kind: str, n: int | None = None) -> None:
    """Convert the rows (the first `n`; all by default) and check their types, so a column of the right name but the
    wrong type (a string where a list of turns belongs, a null answer) is named here, with its row, not by the
    trainer's 'no columns match' or a Jinja error in the chat template after the model loaded (walk12: a null
    `output` at row 25 passed a 20-row check)."""
    name = _shown(source)
    for i, row in enumerate(itertools.islice(_rows(ds, source), n)):
        _checked_row(row, i + 1, name, layout, kind)


def _checked_row(row: dict, number: int, name: str, layout: str, kind: str) -> dict[str, Any]:
    """convert_row for row `number` (from 1) of the source the user knows as `name`, raising DataError that names
    the row and the layout's own column (`output`, not the `messages` it becomes) when it is not text."""
    if problem := _row_problem(row, layout):
        raise DataError(f"{name}, row {number}: {problem}. Fix or remove that row.")
    try:
        out = convert_row(row, layout, kind)
    except DataError as exc:  # its own refusal (a plain-text preference row without a prompt): which file and row
        raise DataError(f"{name}, row {number}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{name}, row {number}: does not fit the {layout} layout ({type(exc).__name__}: "
                        f"{exc}).") from None
    if kind == "sft" and (problem := _turns_problem("messages", out["messages"], ("role", "content"),
                                                    "{role, content}")):
        raise DataError(f"{name}, row {number}: {problem} (made from the {layout} layout). Fix or remove that row.")
    if kind == "sft" and not any(m["role"] == "assistant" for m in out["messages"][1:]):
        # SFT learns the assistant's replies: a conversation without one (or opening with it) trained the model to
        # write the user's side, and a completion-only loss had nothing to learn from it
        raise DataError(f"{name}, row {number}: no assistant reply after the first turn (roles: "
                        f"{', '.join(m['role'] for m in out['messages'])}): SFT learns the assistant's replies. "
                        "Fix or remove that row.")
    if kind == "cpt" and not isinstance(out.get("text"), str):
        raise DataError(f"{name}, row {number}: text must be a string; got {type(out.get('text')).__name__}.")
    return out


def _not_text(column: str, value) -> str:
    return f"{column} must be text; got {type(value).__name__}" + (" (null or missing)" if value is None else "")


def _row_problem(row: dict, layout: str) -> str | None:
    """The first column of `row` that `layout` reads as text but that holds something else, in the file's terms."""
    for column in _TEXT_COLUMNS.get(layout, ()):
        if not isinstance(row.get(column), str):
            return _not_text(column, row.get(column))
    optional = _OPTIONAL_TEXT.get(layout)
    if optional and row.get(optional) is not None and not isinstance(row[optional], str):
        return _not_text(optional, row[optional])
    if layout in _TURN_COLUMNS:
        column, fields, shape = _TURN_COLUMNS[layout]
        if problem := _turns_problem(column, row.get(column), fields, shape):
            return problem
        # a speaker outside _SHAREGPT_ROLES was read as the user: a file's "model" replies made the row "user, user"
        # (refused as having no reply, in roles the file does not use), a "function_call" turn became the user's
        # words. FastChat's reader fails on one (a KeyError); say which.
        return next((f"{column}, turn {k}: from {turn.get('from')!r} is no speaker this reads (one of "
                     f"{', '.join(_SHAREGPT_ROLES)}): rename it, or use the messages layout with its roles"
                     for k, turn in enumerate(row[column], 1) if turn.get("from") not in _SHAREGPT_ROLES), None) \
            if layout == "sharegpt" else None
    if layout == "preference":
        for column in ("chosen", "rejected"):
            if not isinstance(value := row.get(column), (str, list)):
                return f"{column} must be text or a list of turns; got {type(value).__name__}"
            if isinstance(value, list) and (problem := _turns_problem(column, value, ("role", "content"),
                                                                       "{role, content}")):
                return problem  # a null turn text passed here and failed in trl (walk12's null answer, for DPO)
        if isinstance(prompt := row.get("prompt"), list):
            return _turns_problem("prompt", prompt, ("role", "content"), "{role, content}")
    return None


def _turns_problem(column: str, turns, fields: tuple[str, ...], shape: str) -> str | None:
    """What is wrong with a list of `shape` turns whose `fields` must be text, or None."""
    if not isinstance(turns, list):
        return f"{column} must be a list of {shape} turns; got {type(turns).__name__}"
    if not turns:
        return f"{column} is an empty list: it needs {shape} turns"
    for k, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            return f"{column}, turn {k}: must be a {shape} object; got {type(turn).__name__}"
        for field in fields:
            if not isinstance(turn.get(field), str):
                return f"{column}, turn {k}: " + _not_text(field, turn.get(field))
    return None


def _local_file(source: str) -> Path | None:
    """The file a source names directly (not a built-in, registered set or mix), or None."""
    path = Path(source).expanduser()
    return path if not source.startswith(("builtin:", "dataset:", "mix:")) and path.is_file() else None


def _shown(source: str) -> str:
    """A source as the user knows it: an upload by the name it was sent under (backend/uploads.py shown_name)."""
    from backend.uploads import shown_name

    path = _local_file(source)
    return shown_name(path) if path else source


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
            and not path.exists() and path.suffix not in LOADERS)


def _rows(ds, source: str):
    """The rows of `ds` as dicts, read in batches (ds[i] one at a time took seconds per 100k rows). A local JSON
    file whose column mixes types (a string column with one number in it) is read again with Python's json: for
    such a column `datasets` keeps JSON text, and decodes a string "0" in it as the number 0, so the bad row it
    showed was row 1 (walk12, int25.jsonl)."""
    if path := _json_typed_file(ds, source):
        yield from _json_records(path)
        return
    for batch in ds.iter(batch_size=1000):
        yield from (dict(zip(batch, values)) for values in zip(*batch.values()))


def _json_typed_file(ds, source: str) -> Path | None:
    """The local JSON file behind `ds` when `datasets` made one of its columns the Json type (mixed types), whose
    rows are then read again from the file itself to be checked."""
    path = _local_file(source)
    return path if path and path.suffix in (".json", ".jsonl") and any(map(_holds_json, ds.features.values())) \
        else None


def _holds_json(feature) -> bool:
    """Whether a `datasets` feature is, or contains, the Json type it gives a column of mixed types."""
    import datasets

    if isinstance(feature, datasets.Json):
        return True
    if isinstance(feature, dict):
        return any(map(_holds_json, feature.values()))
    inner = getattr(feature, "feature", None)  # List, LargeList, Sequence
    return inner is not None and _holds_json(inner)


def _json_records(path: Path):
    """The objects of a JSON Lines file, or of a .json file's array, in file order (the rows `datasets` made)."""
    import json

    if path.suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                records = json.load(f)
        except json.JSONDecodeError:  # JSON Lines in a .json file
            records = None
        if isinstance(records, list):
            yield from records
            return
    with open(path, encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def check_source(source: str, kind: str) -> None:
    """Read a training source as its job will (the file parses, its columns fit a layout of `kind`, its rows
    convert: every row, a sample of a Hub set), raising DataError: the training job's own check, and the ones
    before it is queued or its recipe planned (backend/runner.py, backend/recipe/plan.py)."""
    ds = load_source(source)
    try:
        layout = detect_layout(ds.column_names, kind)
    except DataError as exc:  # its columns alone did not say which source (a mix names several)
        raise DataError(f"{source}: {exc}") from None
    check_rows(ds, source, layout, kind, n=_rows_to_check(source))


def _messages(row: dict, layout: str) -> list[dict]:
    if layout == "messages":
        return row["messages"]
    if layout == "sharegpt":
        return [{"role": _SHAREGPT_ROLES.get(t.get("from", ""), "user"), "content": t.get("value", "")}
                for t in row["conversations"]]
    if layout == "alpaca":
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    if layout == "openorca":
        msgs = [{"role": "system", "content": row["system_prompt"]}] if row.get("system_prompt") else []
        return msgs + [{"role": "user", "content": row["question"]},
                       {"role": "assistant", "content": row["response"]}]
    if layout == "prompt_completion":
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    if layout == "preference":
        prompt, chosen = row.get("prompt"), row["chosen"]
        if isinstance(chosen, list):
            turns, chosen, _ = _preference_turns(row)
            return turns + chosen
        return [{"role": "user", "content": prompt or ""}, {"role": "assistant", "content": chosen}]
    raise DataError(f"layout {layout} has no conversation form")


def _preference_turns(row: dict) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) of a preference row as conversations, the form trl's DPO applies the chat template
    to: plain text is one user turn and one reply each (trl scored plain text bare, "What is 2 plus 4?2 plus 4 = 6.",
    while the SFT of the same rows and the chat used the template). A text prompt beside conversations is the user's
    turn; without a prompt, the turns chosen and rejected open with alike are it (trl's extract_prompt); chosen and
    rejected that repeat the prompt's turns (HuggingFaceH4's UltraFeedback) have them removed: the prompt was said
    twice to SFT (user, user, assistant), and trl's DPO failed on a text prompt beside conversations ("'list' object
    has no attribute 'endswith'")."""
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if isinstance(chosen, str):
        return ([{"role": "user", "content": prompt}], [{"role": "assistant", "content": chosen}],
                [{"role": "assistant", "content": rejected}])

    def said(turns: list) -> list:
        return [(t["role"], t["content"]) for t in turns]

    if prompt is None:
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and said(chosen[n:n + 1]) == said(rejected[n:n + 1]):
            n += 1
        prompt = chosen[:n]
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if turns and all(said(side[:len(turns)]) == said(turns) for side in (chosen, rejected)):
        chosen, rejected = chosen[len(turns):], rejected[len(turns):]
        if not chosen or not rejected:
            raise DataError("chosen or rejected holds the prompt alone, no reply")
    return turns, chosen, rejected


def to_prompt_completion(ds):
    """SFT rows ({messages}) in trl's conversational prompt-completion form: the conversation up to its last
    assistant reply is the prompt, that reply the completion, and trl's loss covers the completion only
    (SftSpec.completion_only_loss). Turns after the last reply (a user's question left unanswered) teach nothing and
    are dropped; every row has a reply (_checked_row)."""
    def split(row: dict) -> dict:
        msgs = row["messages"]
        k = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        return {"prompt": msgs[:k], "completion": [msgs[k]]}

    return ds.map(split, remove_columns=ds.column_names)


def convert_row(row: dict, layout: str, kind: str) -> dict[str, Any]:
    if kind == "cpt":
        if layout == "text":
            return {"text": row["text"]}
        return {"text": "\n\n".join(m["content"] for m in _messages(row, layout))}
    if kind == "sft":
        return {"messages": _messages(row, layout)}
    prompt = row.get("prompt")
    if isinstance(row["chosen"], str) and not isinstance(prompt, str):
        raise DataError("preference rows with plain-text chosen/rejected need a plain-text prompt column.")
    prompt, chosen, rejected = _preference_turns(row)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


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


def _weighted(ds, source: str, weight: float, seed: int):
    import datasets

    if not weight > 0 or not math.isfinite(weight):  # nested mixes multiply weights: 1e200 × 1e200 is inf
        raise DataError(f"{source}: weight must be a positive finite number; got {weight:g}.")
    # the rows taken, counted once: a weight a float product leaves just over a whole number (a mix member's 0.07
    # used at weight 100 is 7.000000000000001) took the whole set 7 times and one random row more
    whole, rest = divmod(max(1, round(weight * len(ds))), len(ds))
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
    in another order held out nothing), and the held-out set holds each row once. Fewer than 10 rows in all: no
    evaluation split. A source may come with its `sample_by` (source, weight, sample_by): how its .txt files split
    into rows."""
    import datasets

    loaded = [(source, weight, *_load_converted(source, kind, max_rows, sample_by))
              for source, weight, sample_by in _expand_with_rows(sources)]
    keyed = [(*item, [_row_key(row) for row in _rows(item[2], "")]) for item in loaded]
    test: set[bytes] = set()
    if eval_fraction and sum(len(ds) for _, _, ds, _ in loaded) >= 10:  # too few rows: no split, as before
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
    rows = [convert_row(ds[i], layout, kind) for i in range(min(n, len(ds)))]
    return {"layout": layout, "columns": ds.column_names, "rows": len(ds), "examples": rows,
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
    rows = [convert_row(ds[i], layout, kind) for ds, layout in parts for i in range(min(n, len(ds)))][:n]
    return {"layout": " + ".join(dict.fromkeys(layout for _, layout in parts)),
            "columns": list(dict.fromkeys(c for ds, _ in parts for c in ds.column_names)),
            "rows": sum(len(ds) for ds, _ in parts), "examples": rows,
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
