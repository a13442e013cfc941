"""Local data files as users write them, read through `datasets` (backend/data.py load_source): the CSV options that
keep every cell text, a .txt file cut into paragraphs, the loader's own error line kept quiet, and, for a file that
cannot be read, why, in the user's terms (the name it was sent under, the line an editor counts).
"""

from __future__ import annotations

import codecs
import gzip
import logging
import re
import shutil
import threading
import zlib
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
        return non_utf8_said(shown_name(path), bad)
    if path.suffix.lower() in (".json", ".jsonl") and (deep := _deep_json_line(path)):
        return _too_deep(path, *deep)
    return None


# Arrow, where `datasets` keeps the rows, nests at most 64 levels, its table's own among them: a row nested 64 deep
# is refused ("Recursion level in ArrowSchema struct exceeded"), and pyarrow's JSON reader, which reads a line at a
# time, crashed the whole process (a segmentation fault, the app's server with it) on a line some 15,000 deep
MAX_ROW_DEPTH = 63
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting(text: bytes, depth: int = 0) -> tuple[int, int]:
    """(deepest, depth at its end) of JSON text `text` entered at `depth`: its arrays and objects inside each other,
    those written inside strings left out (no string spans two lines: JSON escapes a newline)."""
    import numpy as np

    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")  # an escaped backslash, then an escaped quote
    if b'"' in text:
        text = b"".join(text.split(b'"')[0::2])
    brackets = np.frombuffer(text.translate(None, _NOT_BRACKET), np.uint8)
    if not len(brackets):
        return depth, depth
    run = depth + np.cumsum(np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1))
    run -= np.minimum(np.minimum.accumulate(run), 0)  # a closer too many (not JSON) opens no level below 0
    return max(depth, int(run.max())), int(run[-1])


def _deep_json_line(path: Path) -> tuple[int, int] | None:
    """(line, depth) of the first line of a JSON file nested deeper than a row can be (a .json array's bracket
    besides), or None; the line pyarrow would crash on. A line opening no more arrays and objects than that (its
    brackets counted, strings and all) is not scanned: about 0.1 s for 100k rows. A .json array is left to
    its reader: `datasets` reads one through pandas' JSON parser, which stops at 1,024 levels (a ValueError that
    _unreadable words), then hands pyarrow a line per row."""
    with open(path, "rb") as f:
        if path.suffix.lower() == ".json" and f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"[":
            return None
        f.seek(0)
        for n, line in enumerate(f, 1):
            if line.count(b"[") + line.count(b"{") > MAX_ROW_DEPTH + 1 and \
                    (deepest := _nesting(line)[0]) > MAX_ROW_DEPTH + 1:
                return n, deepest
    return None


def _deepest_json(path: Path) -> tuple[int, int] | None:
    """(the line where it first goes deeper than a row can be, its deepest) of a JSON file whose lines, read as one
    document, nest so deep, else None: why a reader failed on it (_unreadable, load_source's RecursionError)."""
    depth, deepest, first = 0, 0, None
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            most, depth = _nesting(line, depth)
            deepest = max(deepest, most)
            first = first or (n if most > MAX_ROW_DEPTH else None)
    return (first, deepest) if first else None


def _too_deep(path: Path, line: int, depth: int) -> str:
    from backend.uploads import shown_name

    return (f"{shown_name(path)}, line {line}: JSON nested {depth:,} levels deep (arrays and objects inside each "
            f"other); a row can nest at most {MAX_ROW_DEPTH} (the limit of Arrow, where `datasets` keeps the rows). "
            "Flatten the rows, or save a deep value as JSON text (a string).")


def too_deep_json(path: Path) -> str | None:
    """_too_deep's words for a JSON file nested deeper than a row can be, or None."""
    return _too_deep(path, *deep) if (deep := _deepest_json(path)) else None


# Byte-order marks of the UTF-16 and UTF-32 files that Excel ("Unicode Text"), Windows Notepad ("Unicode") and
# PowerShell's `>` write; UTF-32's first, as UTF-32-LE's opens with UTF-16-LE's
_UNICODE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                 (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def unicode_encoding(path: Path) -> str | None:
    """'utf-16' or 'utf-32' for a text file that opens with that byte-order mark, 'utf-16-le' or 'utf-16-be' for one
    without a mark whose first KiB reads as UTF-16 (_unmarked_utf16), else None (UTF-8, with its mark or without,
    and any file of another kind). A .gz file (data_reading.GZ_SUFFIXES) is read through gzip: its compressed
    bytes said nothing of the text's encoding."""
    with _open_bytes(path) as f:
        return head_encoding(f.read(1024))


def _open_bytes(path: Path):
    """`path` opened for reading bytes, a .gz file decompressed (gzip's errors are the caller's to word)."""
    return gzip.open(path, "rb") if Path(path).suffix.lower() == ".gz" else open(path, "rb")


def head_encoding(head: bytes) -> str | None:
    """unicode_encoding of a file whose first KiB is `head` (data_rows reads a .gz file's through gzip)."""
    return next((name for bom, name in _UNICODE_BOMS if head.startswith(bom)), None) or _unmarked_utf16(head)


def _unmarked_utf16(head: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when the first bytes of a file are UTF-16 without a byte-order mark (some Windows
    tools write it so), else None. Its Latin letters, digits, spaces and newlines are a byte and a NUL: a quarter of
    the high bytes NUL and no low byte NUL says UTF-16, as no UTF-8 text holds a NUL (a binary file holds them at
    both places), and the bytes must then decode. Read as UTF-8 it was text with a NUL after every letter, trained
    on as it was, or "not valid JSON" on its first line."""
    pairs = len(head) // 2
    for name, low, high in (("utf-16-le", head[0:2 * pairs:2], head[1:2 * pairs:2]),
                            ("utf-16-be", head[1:2 * pairs:2], head[0:2 * pairs:2])):
        if pairs >= 2 and not low.count(0) and high.count(0) * 4 >= pairs:
            try:
                codecs.getincrementaldecoder(name)().decode(head[:2 * pairs])  # a pair cut at 1 KiB is no fault
            except UnicodeDecodeError:
                return None
            return name
    return None


@contextmanager
def utf8_copy(path: Path):
    """The file `datasets` should read for local text file `path`: itself, or for a UTF-16 / UTF-32 file (with its
    byte-order mark, or UTF-16 without one: unicode_encoding) a UTF-8 copy under the same shown name in a temporary
    folder, removed afterwards. `datasets`' loaders take an `encoding`, but its JSON reader decodes a chunk at a time
    after cutting it at a newline byte (a UTF-16 line ends in 0A 00: the next chunk began mid-character) and checks
    for a `[` before decoding; such files were refused as "not UTF-8 (byte 0xff)". The user's file is only read.
    Yields (file to read, temporary folder or None): a load of the copy caches there, not beside the cache of every
    other data set."""
    from backend.data_rows import DataError
    from backend.uploads import shown_name
    from storage import db

    if path.suffix.lower() == ".gz":  # data.GZ_SUFFIXES: a decompressed copy, itself read as any text file
        with _gunzipped(path) as plain, utf8_copy(plain) as (readable, tmp):
            yield readable, tmp or plain.parent
        return
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
            raise DataError(not_throughout_said(shown_name(path), encoding, exc.reason)) from None
        yield copy, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _gunzipped(path: Path):
    """A decompressed copy of gzip file `path` (x.jsonl.gz -> x.jsonl, under the name it was sent as) in a temporary
    folder, removed afterwards; one that is not gzip, or cut short, refused in words."""
    from backend.data_rows import DataError
    from backend.uploads import shown_name
    from storage import db

    tmp = db.new_tmp("gunzip")
    try:
        copy = tmp / shown_name(path)[:-3]  # loader_suffix took the name: it ends in .gz, any case
        try:
            with gzip.open(path, "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut file an EOFError
            raise DataError(f"{shown_name(path)} is not a whole gzip file ({exc or type(exc).__name__}): compress "
                            "it again (gzip FILE), or give the file uncompressed.") from None
        yield copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def json_lines_copy(path: Path, key: str):
    """(a JSON Lines copy of the rows that JSON file `path` wraps under `key` (data_rows.rows_keys), its temporary
    folder), both named and removed as utf8_copy's. `datasets`' own `field=KEY` reads the rows through pandas, which
    failed on a column of mixed types ("Expected bytes, got a 'int' object") that a JSON Lines file keeps as
    `datasets`' Json type, for the row checks to name the row (data_rows._json_records reads them from the file).
    An item that is a text (text_keys) is a row of a `text` column, as `field=` reads it."""
    import json

    from backend.uploads import shown_name
    from storage import db

    tmp = db.new_tmp("rows")
    try:
        copy = tmp / shown_name(path)
        with open(path, encoding=unicode_encoding(path) or "utf-8-sig") as f:
            records = json.load(f)[key]
        with open(copy, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r if isinstance(r, dict) else {"text": r}, ensure_ascii=False) + "\n"
                         for r in records)
        yield copy, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def text_keys(obj: dict) -> list[str]:
    """The keys of a JSON object that wraps a list of texts (`{"data": ["text one", "text two"]}`), read as rows of a
    `text` column as `datasets` reads both a .json array of texts and such a list under `field=KEY`: the object's
    keys that hold a non-empty list of strings, when each of its values is a list or an object (a row has a text
    field: `{"question": "q", "tags": ["a"]}` is one row) and its keys fit no layout (`{"messages": ["hi"]}` is a row
    whose turns are wrong). It was one row of a `data` column ("Columns ['data'] fit no layout").
    data_rows.rows_keys finds the lists of objects, looked for first."""
    from backend.data_rows import LAYOUTS

    if not obj or not all(isinstance(v, (list, dict)) for v in obj.values()) or any(
            required <= obj.keys() for required, _ in LAYOUTS.values()):
        return []
    return [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, str) for x in v)]


def _parquet_rows(path: Path) -> int | None:
    """The rows a Parquet file's footer counts, or None when it is no Parquet file (its reader then says why)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - not Parquet, or damaged: load_dataset names it (_unreadable)
        return None


# Bytes that end a line for str.splitlines (what `datasets` cuts a .txt at) besides \n, or for a JSON reader a
# lone \r: a file holding one is left uncounted (counted_rows), never counted short into a false "fewer rows".
_OTHER_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def counted_rows(path: Path, sample_by: str = "line", stop: int | None = None) -> int | None:
    """The rows `datasets` reads of local file `path`, where they can be counted without parsing it, else None: a
    Parquet file's footer, a JSON Lines or .txt file's non-blank lines (a .txt a document a row: 1), read a MiB at a
    time and no further than `stop` rows (the recipe plan asks only whether a source has data.MIN_HELD_OUT_ROWS).
    None for other files, a paragraph a row, UTF-16 / UTF-32, a line break other than \n, and a JSON Lines file of
    one line (one object may wrap its rows, data_rows.rows_keys)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        n = _parquet_rows(path)
        return n if n is None or stop is None else min(n, stop)
    if suffix not in (".jsonl", ".txt") or (suffix == ".txt" and sample_by == "paragraph") or unicode_encoding(path):
        return None
    if suffix == ".txt" and sample_by == "document":
        return int(not _only_blank(path))
    n, open_line = 0, False  # open_line: the line the last chunk ended inside holds text
    with open(path, "rb") as f:
        while stop is None or n < stop:
            chunk = f.read(1 << 20)
            if not chunk:
                n += open_line
                break
            if any(b in chunk.replace(b"\r\n", b"\n") for b in _OTHER_BREAKS):
                return None
            *ended, last = chunk.split(b"\n")
            for i, line in enumerate(ended):
                n += bool(line.strip()) or (i == 0 and open_line)
            open_line = bool(last.strip()) or (open_line and not ended)
    n = n if stop is None else min(n, stop)
    return None if suffix == ".jsonl" and n == 1 else n


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
    if loader == "json" and _nested_too_deep(exc) and (deep := too_deep_json(path)):
        return deep  # json.load below would recurse as deep
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


def _nested_too_deep(exc: BaseException) -> bool:
    """Whether a reader failed for nesting: Arrow's "Recursion level in ArrowSchema struct exceeded", pandas' JSON
    reader's "Reached object decoding depth limit", Python's RecursionError. (A column of mixed types is kept as JSON
    text, nested as deep as it likes: depth alone is no fault.)"""
    while exc is not None:
        if isinstance(exc, RecursionError) or any(w in str(exc) for w in ("Recursion level", "depth limit")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def non_utf8_said(name: str, bad: tuple[int, int, int]) -> str:
    """What _first_non_utf8's find means, in the words of every reader of text files (data, seeds)."""
    line, column, byte = bad
    if byte == 0:  # UTF-8 allows it, but no text holds it: a UTF-16 file without its mark trained on as text
        return (f"{name}, line {line}, column {column}: a NUL byte (0x00), which no text holds: a UTF-16 or UTF-32 "
                "file without its byte-order mark, or no text file at all. Save it as UTF-8.")
    return f"{name}, line {line}, column {column}: not UTF-8 (byte {byte:#04x}): save the file as UTF-8."


def not_throughout_said(name: str, encoding: str, reason: str) -> str:
    """A file read as unicode_encoding found it that fails to decode further on."""
    how = "its byte-order mark" if encoding in ("utf-16", "utf-32") else "no byte-order mark; its first KiB"
    return (f"{name} opens as {encoding.upper()} ({how}) but is not {encoding.upper()} throughout ({reason}): save "
            "it as UTF-8.")


def _first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, byte column, byte) of the first byte that is not UTF-8 (a Latin-1 or Windows-1252 file), or of a NUL
    byte (byte 0), which UTF-8 allows but no text holds (UTF-16 without its mark, _unmarked_utf16, or a binary
    file), or None. Read line by line in binary: about 0.1 s for 100k rows; a .gz file decompressed."""
    with _open_bytes(path) as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                nul = line.find(0, 0, exc.start)
                return (n, nul + 1, 0) if nul >= 0 else (n, exc.start + 1, line[exc.start])
            if 0 in line:
                return n, line.index(0) + 1, 0
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
