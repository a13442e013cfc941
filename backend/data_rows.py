"""Layouts and rows: which layout a table's columns are (backend/data.py lists them), each row's check, and its
conversion to the form trl's trainers take (text, messages, prompt/chosen/rejected).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

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
# The columns each layout turns into turn text (convert_row), checked on every row before the job is queued: a null
# there became {"content": None} and failed the job in trl's chat template after the model loaded (walk12).
_TEXT_COLUMNS = {"text": ("text",), "alpaca": ("instruction", "output"), "openorca": ("question", "response"),
                 "prompt_completion": ("prompt", "completion")}  # or both lists of turns: _prompt_completion_problem
_OPTIONAL_TEXT = {"alpaca": "input", "openorca": "system_prompt"}  # may be missing or null, else text
_TURN_COLUMNS = {"messages": ("messages", ("role", "content"), "{role, content}"),  # column, text fields, shape
                 "sharegpt": ("conversations", ("value",), "{from, value}")}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


class DataError(ValueError):
    pass


# raised through backend/data.py, which its callers import it from: a trainer's failure line still reads
# "backend.data.DataError: …" (training.failure_line), as before this module was split off
DataError.__module__ = "backend.data"


def detect_layout(columns: list[str], kind: str | None = None) -> str:
    cols = set(columns)
    for name, (required, _) in LAYOUTS.items():
        if required <= cols and (kind is None or name in KIND_LAYOUTS[kind]):
            return name
    wanted = KIND_LAYOUTS[kind] if kind else tuple(LAYOUTS)
    options = "; ".join(f"{n}: {', '.join(sorted(LAYOUTS[n][0]))} (missing {', '.join(sorted(LAYOUTS[n][0] - cols))})"
                        for n in wanted)
    raise DataError(f"Columns {sorted(cols)} fit no layout usable for {kind or 'training'}. Expected one of — "
                    f"{options}." + _layout_hint(cols, kind))


def _layout_hint(cols: set[str], kind: str | None) -> str:
    """What to do with a known table that fits no layout of `kind`: plain text is continued pretraining's, and
    openbmb's raw UltraFeedback (instruction, completions with their ratings) is binarized into chosen/rejected pairs
    before SFT or DPO reads it."""
    if kind in ("sft", "dpo") and "text" in cols:
        return " Plain text is for continued pretraining: use train cpt (kind cpt) for it."
    if {"instruction", "completions"} <= cols:
        return (" This is openbmb's raw UltraFeedback (completions with ratings): use its binarized form, "
                "HuggingFaceH4/ultrafeedback_binarized (prompt, chosen, rejected): its train_prefs split for DPO, "
                "train_sft for SFT.")
    return ""


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
    if layout == "prompt_completion" and (isinstance(row.get("prompt"), list) or isinstance(row.get("completion"),
                                                                                          list)):
        return _prompt_completion_problem(row)
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
        if prompt is not None and not isinstance(prompt, str):  # a number was "TypeError: 'int' object is not
            return f"prompt must be text or a list of turns; got {type(prompt).__name__}"  # iterable"
    return None


def _prompt_completion_problem(row: dict) -> str | None:
    """trl's conversational prompt/completion row ({"prompt": [{role, content}, …], "completion": [{role, content},
    …]}, trl.data_utils.is_conversational), which trl's SFTTrainer takes as it is: both sides lists of turns (trl
    joins them, prompt + completion), or what is wrong. A text prompt beside turns made trl add a string to a list."""
    for column in ("prompt", "completion"):
        if not isinstance(value := row.get(column), list):
            return (f"{column} must be a list of {{role, content}} turns like the other side; got "
                    f"{type(value).__name__}: both prompt and completion text, or both lists of turns (trl's "
                    "conversational prompt/completion)")
        if problem := _turns_problem(column, value, ("role", "content"), "{role, content}"):
            return problem
    # the rows become a conversation whose loss, by trl's default for this form, covers its last assistant reply
    # (to_prompt_completion): a completion of several turns would have its earlier ones learned as prompt, where trl
    # learns the whole completion
    if [t.get("role") for t in row["completion"]] != ["assistant"]:
        return ("completion must be one assistant turn (trl's usual conversational prompt/completion); got the roles "
                f"{', '.join(str(t.get('role')) for t in row['completion'])}: move the earlier turns into the prompt, "
                "or give the rows as messages")
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
        if turn.get("tool_calls"):  # OpenAI's tool calling: content null (or empty) beside the calls, which the
            # conversion to {role, content} would drop, or fail on as "content must be text"
            return (f"{column}, turn {k}: a tool call (tool_calls, content {json.dumps(turn.get('content'))}): tool "
                    "calls are not supported for training here; remove the rows holding them, or write each call "
                    "and its result into the turns' content as text")
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
    from backend.data_reading import loader_suffix

    path = _local_file(source)  # x.jsonl.gz too (loader_suffix): its .gz suffix skipped it, so row 1 was blamed
    return path if path and loader_suffix(path) in (".json", ".jsonl") and any(
        map(_holds_json, ds.features.values())) else None


def _open_text(path: Path, errors: str | None = None):
    """A local data file opened as text in the encoding `datasets` read it in (data_files.unicode_encoding: a UTF-8
    mark left out, UTF-16 / UTF-32 decoded), a .gz one (data_reading.GZ_SUFFIXES) through gzip.open."""
    import gzip

    from backend.data_files import head_encoding

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        encoding = head_encoding(f.read(1024)) or "utf-8-sig"
    return opener(path, "rt", encoding=encoding, errors=errors)


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
    """The objects of a JSON Lines file, or of a .json file's array, or the array that a file of ONE object wraps
    (file_rows_key: the rule _read_file unwraps by, so a wrapped .jsonl is unwrapped here too; its wrapper was read as
    row 1, "prompt must be text; got NoneType"), in file order (the rows `datasets` made). Read as `datasets` read
    it: a UTF-8 mark left out, a UTF-16 or UTF-32 file decoded (data_files.utf8_copy); the mark was a raw
    JSONDecodeError here."""
    import json

    if (wrapped := file_rows_value(path)) is not None and len(keys := rows_keys(wrapped)) == 1:
        yield from wrapped[keys[0]]
        return
    from backend.data_reading import loader_suffix

    if loader_suffix(path) == ".json":
        try:
            with _open_text(path) as f:
                records = json.load(f)
        except json.JSONDecodeError:  # JSON Lines in a .json file
            records = None
        if isinstance(records, list):
            yield from records
            return
    with _open_text(path) as f:
        yield from (json.loads(line) for line in f if line.strip())


def rows_keys(obj: dict) -> list[str]:
    """The keys of a JSON object that hold the rows, when the object wraps them (`{"data": [{...}, ...]}`, or
    `{"meta": {...}, "rows": [...]}`, as many exports write a table): its keys that hold a list of objects, when the
    object's own keys fit no layout (`{"messages": [{role, content}, ...]}` is one row). `datasets`' json reader
    reads such a file with `field=KEY`; read as rows, it was one row of a `data` column, which fit no layout."""
    if any(required <= obj.keys() for required, _ in LAYOUTS.values()):
        return []
    return [k for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]


def file_rows_value(path: Path) -> dict | None:
    """The one JSON object a file holds (a .json or a .jsonl of one line), or None: an array (`[{"data": [...]}]` is
    a row, not a wrapper: json_lines_copy raised a raw TypeError on it), JSON Lines of several rows, no JSON. Decoded
    as `datasets` reads the file (a UTF-16 or UTF-32 mark, data_files.unicode_encoding). A file whose first line is an
    object and has more lines is JSON Lines: known without reading it whole."""
    import json

    with _open_text(path, errors="replace") as f:
        if f.read(4096).lstrip()[:1] != "{":
            return None
        f.seek(0)
        first = next((line for line in f if line.strip()), "")
        try:
            value = json.loads(first)
        except ValueError:  # an object over several lines (indented), or no JSON
            f.seek(0)
            try:
                value = json.load(f)
            except ValueError:  # the reader's own error says why
                return None
        else:
            if any(line.strip() for line in f):  # JSON Lines: a row a line
                return None
    return value if isinstance(value, dict) else None


def file_rows_keys(path: Path) -> list[str]:
    """rows_keys of the one JSON object a file holds (file_rows_value), else []: the keys load_source reads the rows
    from, in a file `datasets` read as one row or could not read at all (its pyarrow reader failed on a wrapped
    column of mixed types, "changed from string to number")."""
    value = file_rows_value(path)
    return rows_keys(value) if value is not None else []


def wrapper_problem(value: dict, name: str) -> str | None:
    """Why the one JSON object file `name` holds (file_rows_value), which fits no layout and wraps no list of rows
    (rows_keys), holds no rows where they were looked for: a key holding an empty list (`{"data": []}`), or rows one
    level deeper (`{"data": {"rows": [...]}}`), whose path is named. `datasets`' `field=KEY` reads only a list
    directly under a key, and so does load_source; both were "Columns ['data'] fit no layout", which said neither.
    None otherwise (an object of other columns is a row: detect_layout names its columns)."""
    if rows_keys(value) or any(required <= value.keys() for required, _ in LAYOUTS.values()) or not all(
            isinstance(v, (list, dict)) for v in value.values()):  # a row's text fields: a row ({"q": …, "tags": []})
        return None
    nested = [f"{k}.{k2}" for k, v in value.items() if isinstance(v, dict) for k2, v2 in v.items()
              if isinstance(v2, list) and v2 and all(isinstance(x, dict) for x in v2)]
    if nested:
        return (f"{name} holds one JSON object whose rows are nested under {', '.join(nested)}: rows are read from a "
                "list directly under a key (as `datasets`' field= reads them). Save that list alone as a .json array "
                "(or JSON Lines).")
    if empty := [k for k, v in value.items() if v == []]:
        said = "is an empty list" if len(empty) == 1 else "are empty lists"
        return f"{name} holds one JSON object whose {', '.join(empty)} {said}: it holds no rows. Add rows to it."
    return None


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
        if isinstance(row["prompt"], list):  # trl's conversational form: the turns as they are (prompt + completion)
            return row["prompt"] + row["completion"]
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
