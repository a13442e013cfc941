"""Local data files as users write them, read through `datasets` (backend/data.py load_source): the CSV options that
keep every cell text, a .txt file cut into paragraphs, the loader's own error line kept quiet, and, for a file that
cannot be read, why, in the user's terms (the name it was sent under, the line an editor counts).
"""

from __future__ import annotations

import codecs
import logging
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path


_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n)+")
_LEADING_BLANK_LINES = re.compile(r"^(?:[ \t\f\v]*\n)+")


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
            "keep_default_na": False, "na_values": [""], "index_col": False}  # pandas took the text before a row's one
    # comma for an index when the header had no comma (every row one field more), and the text was lost


def _csv_extra_fields(path: Path, options: dict) -> str | None:
    """Why a CSV cannot be read as its header says, if a row has more fields than the header names columns: a
    one-column `text` file whose rows hold an unquoted comma ("hello, world") lost the text before it (pandas took it
    for the row's index), or after it with index_col=False. Read once with the csv module (quoting as pandas does)."""
    import csv

    from backend.uploads import shown_name

    if not options.get("features"):
        return None
    columns, sep = len(options["features"]), options.get("sep", ",")
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        for n, row in enumerate(csv.reader(f, delimiter=sep), start=1):
            if len(row) > columns and any(cell.strip() for cell in row[columns:]):
                return (f"{shown_name(path)}, line {n}: {len(row)} fields where the header names {columns} "
                        f"column{'s' if columns > 1 else ''}: a cell holding a {'comma' if sep == ',' else repr(sep)} "
                        'must be quoted ("hello, world"). Quote it, or save plain text as .txt or rows as JSONL.')
    return None


class _ThisThread(logging.Filter):
    """Drops the ERROR records logged in the thread that made it (other threads' loads keep theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or record.thread != self.thread


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
    if path.suffix.lower() == ".parquet":  # `datasets` read one of no rows as "BatchSize must be greater than 0, got 0"
        return f"Data file {shown_name(path)} has no rows." if _parquet_rows(path) == 0 else None
    if _only_blank(path):
        return f"Data file {shown_name(path)} holds only blank lines: it has no rows."
    if bad := _first_non_utf8(path):
        return (f"{shown_name(path)}, line {bad[0]}, column {bad[1]}: not UTF-8 (byte {bad[2]:#04x}): save the file "
                "as UTF-8.")
    return None


# Byte-order marks of the UTF-16 and UTF-32 files that Excel ("Unicode Text"), Windows Notepad ("Unicode") and
# PowerShell's `>` write; UTF-32's first, as UTF-32-LE's opens with UTF-16-LE's
_UNICODE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                 (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def unicode_encoding(path: Path) -> str | None:
    """'utf-16' or 'utf-32' for a text file that opens with that byte-order mark, else None (UTF-8, with its mark
    or without, and any file of another kind)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((name for bom, name in _UNICODE_BOMS if head.startswith(bom)), None)


@contextmanager
def utf8_copy(path: Path):
    """The file `datasets` should read for local text file `path`: itself, or for a UTF-16 / UTF-32 file (with its
    byte-order mark) a UTF-8 copy under the same shown name in a temporary folder, removed afterwards. `datasets`'
    loaders take an `encoding`, but its JSON reader decodes a chunk at a time after cutting it at a newline byte (a
    UTF-16 line ends in 0A 00: the next chunk began mid-character) and checks for a `[` before decoding; such files
    were refused as "not UTF-8 (byte 0xff)". The user's file is only read. Yields (file to read, temporary folder or
    None): a load of the copy caches there, not beside the cache of every other data set."""
    from backend.data_rows import DataError
    from backend.uploads import shown_name
    from storage import db

    encoding = None if path.suffix.lower() == ".parquet" else unicode_encoding(path)
    if encoding is None:
        yield path, None
        return
    tmp = db.new_tmp("utf8")
    try:
        copy = tmp / shown_name(path)
        try:
            with open(path, encoding=encoding, newline="") as src, open(copy, "w", encoding="utf-8",
                                                                         newline="") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except UnicodeDecodeError as exc:
            raise DataError(f"{shown_name(path)} opens as {encoding.upper()} (its byte-order mark) but is not "
                            f"{encoding.upper()} throughout ({exc.reason}): save it as UTF-8.") from None
        yield copy, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def json_lines_copy(path: Path, key: str):
    """(a JSON Lines copy of the rows that JSON file `path` wraps under `key` (data_rows.rows_keys), its temporary
    folder), both named and removed as utf8_copy's. `datasets`' own `field=KEY` reads the rows through pandas, which
    failed on a column of mixed types ("Expected bytes, got a 'int' object") that a JSON Lines file keeps as
    `datasets`' Json type, for the row checks to name the row (data_rows._json_records reads them from the file)."""
    import json

    from backend.uploads import shown_name
    from storage import db

    tmp = db.new_tmp("rows")
    try:
        copy = tmp / shown_name(path)
        with open(path, encoding="utf-8-sig") as f:
            records = json.load(f)[key]
        with open(copy, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        yield copy, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        shape = ("A .json file holds one JSON array of objects, or one object per line"
                 if path.suffix.lower() == ".json" else "Each line must be one JSON object")
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
        if path.suffix.lower() == ".json":
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
