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
    out = []
    for source, weight in sources:
        if source.startswith("mix:"):
            rec = _registered(source.removeprefix("mix:"))
            if rec.kind != "mix":
                raise DataError(f"{source}: {rec.name} is a {rec.kind} data set, not a mix; use dataset:{rec.name}.")
            out += expand([(x["source"], x["weight"] * weight) for x in rec.provenance["sources"]])
        else:
            out.append((source, weight))
    return out


def load_source(source: str, split: str = "train"):
    """A `datasets.Dataset` from 'builtin:NAME', 'dataset:NAME' (registered), a local file, or a Hub id."""
    import datasets

    datasets.disable_progress_bars()
    if source.startswith("builtin:"):
        source = str(builtin_path(source.removeprefix("builtin:")))
    elif source.startswith("dataset:"):
        rec = _registered(source.removeprefix("dataset:"))
        if not rec.path:
            raise DataError(f"{source} is a mix: use mix:{rec.name}.")
        source = rec.path
    elif source.startswith("mix:"):
        parts = [load_source(src) for src, _ in expand([(source, 1.0)])]
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    path = Path(source).expanduser()
    loaders = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
    if path.suffix in loaders or path.exists():
        if not path.exists():
            raise DataError(f"Data file {path} does not exist.")
        if path.suffix not in loaders:
            raise DataError(f"{path.name}: unsupported file type; use .jsonl, .json, .csv, .parquet or .txt.")
        try:
            ds = datasets.load_dataset(loaders[path.suffix], data_files=str(path), split="train")
        except Exception as exc:  # pyarrow / json errors: say which file and why
            raise DataError(f"Could not read {path.name} as {loaders[path.suffix].upper()}: "
                            f"{str(exc).splitlines()[0][:300]}") from None
        if loaders[path.suffix] == "text":
            ds = ds.filter(lambda r: bool(r["text"].strip()))
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:
            raise DataError(f"Could not load {source!r} from the Hugging Face Hub ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}). Offline? Download it elsewhere and point at "
                            "the file instead.") from None
    if len(ds) == 0:
        raise DataError(f"{source} has no rows.")
    return ds


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
            return ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt or [])) + chosen
        return [{"role": "user", "content": prompt or ""}, {"role": "assistant", "content": chosen}]
    raise DataError(f"layout {layout} has no conversation form")


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
    out = {"chosen": row["chosen"], "rejected": row["rejected"]}
    if prompt is not None:
        out["prompt"] = prompt
    return out


def prepare(source: str, kind: str, *, weight: float = 1.0, max_rows: int | None = None, seed: int = 0):
    """Load, check the layout against the job kind, and convert to trl's format. `weight` scales the rows taken:
    0.5 takes a random half, 2.0 repeats the set twice (the paper's SFT v1–v4 mixes are such combinations)."""
    import datasets

    ds = load_source(source)
    layout = detect_layout(ds.column_names, kind)
    ds = ds.map(lambda r: convert_row(r, layout, kind), remove_columns=ds.column_names)
    if max_rows:
        ds = ds.select(range(min(max_rows, len(ds))))
    if weight <= 0:
        raise DataError(f"{source}: weight must be positive.")
    whole, frac = int(weight), weight - int(weight)
    parts = [ds] * whole
    if frac:
        parts.append(ds.shuffle(seed=seed).select(range(max(1, round(frac * len(ds))))))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0], layout


def mix(sources: list[tuple[str, float]], kind: str, seed: int = 0, max_rows: int | None = None):
    """Concatenate weighted sources and shuffle. Returns (dataset, [(source, layout, rows)])."""
    import datasets

    parts, report = [], []
    for source, weight in expand(sources):
        ds, layout = prepare(source, kind, weight=weight, max_rows=max_rows, seed=seed)
        parts.append(ds)
        report.append((source, layout, len(ds)))
    ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return ds.shuffle(seed=seed), report


def preview(source: str, kind: str, n: int = 5) -> dict:
    """What the pages show before launch: layout, columns, row count, first converted rows."""
    ds = load_source(source)
    layout = detect_layout(ds.column_names, kind)
    rows = [convert_row(ds[i], layout, kind) for i in range(min(n, len(ds)))]
    return {"layout": layout, "columns": ds.column_names, "rows": len(ds), "examples": rows}
