"""Merging candidate models, streamed tensor by tensor (SOLAR's last step: Average(a, b) or SLERP of two
candidates gives the final model), with mergekit 0.1.5's definitions of linear, SLERP, task arithmetic, TIES and
DARE (backend/merge/methods.py).

    python -m backend merge --method slerp --models cand1 cand2 --t 0.5 --out workspace/models/merged
    python -m backend merge --method ties --models ft1 ft2 --base base --density 0.5 --out workspace/models/ties

Plan first (backend/merge/plan.py): the models must share architecture, vocabulary, tensor names and shapes
(clear error otherwise); their dtypes may differ, as in mergekit (each tensor merges in the inputs' promoted dtype,
or the spec's dtype). Then each output tensor is computed chunk by chunk while it is written
(backend/merge/executor.py): memory stays flat. The folder is built in the workspace's .tmp and renamed into place
before it is registered (backend/outputs.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from backend import registry
from backend.merge import executor
from backend.merge.executor import TORCH_DTYPES, MergeError, Reader, SlerpTally, producer
from backend.merge.methods import METHODS, slerp_coefficients
from backend.merge.plan import check_dtypes, check_mergeable, check_vocab, schedule_value, tensor_t
from backend.modelinfo import inspect_model
from backend.outputs import building, check_companions, copy_companions, output_dir, register_output
from backend.safetensors_stream import DTYPE_SIZES, OutTensor, write_checkpoint
from backend.spec_models import weights_sum_to_zero
from backend.specs import MergeSpec, parse_size

__all__ = ["run_merge", "MergeError", "METHODS", "check_mergeable", "check_vocab", "executor", "schedule_value",
           "slerp_coefficients", "slerp_note", "tensor_t"]
Progress = Callable[[float, str], None]
SLERP_LINE = "SLERP: "  # starts the model card's line saying how many tensors were interpolated linearly


def run_merge(spec: MergeSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    """Merge `spec.models` (with spec.base when it names one) by spec.method, tensor by tensor, into a new
    model folder: its safetensors shards, the donor's config.json (the base's, else the first model's) with the
    output dtype, the tokenizer files and chat template, and a model card (README.md) saying how it was made. The
    folder is built in a temporary one and renamed into place, then registered as "merged" with its models as
    parents. A resume keeps nothing: a stopped merge registered nothing and left only a temporary folder (removed
    at the next start), so it runs again from the start."""
    import torch

    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    name, recipe = spec.name or spec.default_name(), spec.model_dump(mode="json")
    spec = without_base(spec)
    refs = list(spec.models) + ([spec.base] if spec.base else [])
    folders, names = [], []
    for r in refs:
        folder, name_r = registry.resolve(r)
        folders.append(folder)
        names.append(name_r or str(folder))
    infos = [inspect_model(f) for f in folders]
    check_mergeable(infos, names)
    first = infos[0]
    # mergekit's donor (merge.py, _get_donor_model): config.json from the base when there is one, else the first
    # model; the tokenizer files, chat template and generation config from there too unless tokenizer_source says
    donor = infos[-1] if spec.base else first
    tok_donor = donor if spec.tokenizer_source in (None, "base") else \
        infos[[f.resolve() for f in folders].index(registry.resolve(spec.tokenizer_source)[0].resolve())]
    template = chat_template(spec.chat_template, folders) if spec.chat_template else None
    lost = None if template else template_lost(next(n for n, i in zip(names, infos) if i is tok_donor), tok_donor.folder,
                                               dict(zip(names[:len(spec.models)], folders[:len(spec.models)])))
    check_dtypes({ref.dtype for info in infos for ref in info.tensors.values()})
    chosen = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(spec.dtype)

    def dtype_of(tname: str) -> str:
        """A tensor's compute and output dtype, as mergekit's: the chosen one (its `dtype`, every input cast to it
        as it is read), else (auto) the inputs' promoted dtype (merge_methods/dtype.py, torch.promote_types): a
        model stored in float32 merged with its bfloat16 copy merges in float32, bfloat16 with float16 in float32,
        and a checkpoint that keeps its norms in float32 beside bfloat16 matrices keeps them so."""
        if chosen:
            return chosen
        dt = TORCH_DTYPES[infos[0].tensors[tname].dtype]
        for info in infos[1:]:
            dt = torch.promote_types(dt, TORCH_DTYPES[info.tensors[tname].dtype])
        return next(k for k, v in TORCH_DTYPES.items() if v == dt)

    reader = Reader(infos)  # shared by the shard threads: os.pread needs no lock
    base = len(spec.models) if spec.base else None
    tally = SlerpTally()
    tensors = []
    for tname, ref in first.tensors.items():
        dt = dtype_of(tname)
        tensors.append(OutTensor(tname, dt, ref.shape, ref.nbytes // DTYPE_SIZES[ref.dtype] * DTYPE_SIZES[dt], None,
                                 make=producer(spec, tname, infos, reader, base, TORCH_DTYPES[dt],
                                               tensor_t(spec, tname, first) if spec.method == "slerp" else None,
                                               tally)))
    # config.json's dtype: the chosen one, else the one most of the written tensors have (the donor's when the models
    # share their dtypes). mergekit keeps the donor's there; a float32 merge labelled bfloat16 would be loaded (dtype
    # "auto") in bfloat16, losing what the promotion kept.
    out_dtype = TORCH_DTYPES[chosen or Counter(t.dtype for t in tensors).most_common(1)[0][0]]
    check_companions(tok_donor.folder, config_src=donor.folder)  # no link out of them is copied (before the weights)
    out_dir = output_dir(out_dir, spec.out, name, needed=sum(t.nbytes for t in tensors))
    progress(0.0, f"{spec.method} of {', '.join(names[:len(spec.models)])}")
    if lost:
        progress(0.0, f"warning: {lost}")
    try:
        with building(out_dir, "merge") as tmp:
            # One torch thread per shard writer: shards then run side by side, so reading, arithmetic and writing
            # overlap instead of every writer fighting for the same cores inside each operation.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                write_checkpoint(tensors, tmp, parse_size(spec.shard_size), lambda f, m: progress(0.98 * f, m))
            finally:
                torch.set_num_threads(threads)
            cfg = {k: v for k, v in donor.config.items() if k not in ("_name_or_path", "torch_dtype")}
            cfg["dtype"] = str(out_dtype).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            copy_companions(tok_donor.folder, tmp, config_src=donor.folder)
            if template is not None:
                set_chat_template(tmp, template)
            slerp = tally.summary() if spec.method == "slerp" else None
            (tmp / "README.md").write_text(model_card(spec, name, names, slerp))
    finally:
        reader.close()
    rec = register_output(out_dir, name, "merged", parents=list(dict.fromkeys(names)), source=spec.method,
                          recipe=recipe)
    seconds = time.perf_counter() - t0
    progress(1.0, f"registered {name} in {seconds:.1f} s")
    return ({"model": rec.name, "path": str(out_dir), "seconds": round(seconds, 2)} | ({"slerp": slerp} if slerp else {})
            | ({"warning": lost} if lost else {}))


def chat_template(wanted: str, folders: list[Path]) -> str:
    """The template a merge writes: `wanted` itself, or for 'auto' the one most of the models (the base too) have,
    as mergekit's auto (merge.py, _set_chat_template: Counter(...).most_common(1), first seen wins a tie). mergekit
    then saves none, silently, when no model has one; here that is an error, before anything is written. Read from
    the files (read_chat_template), where mergekit loads each tokenizer: a remote-code tokenizer would have to run."""
    if wanted != "auto":
        return wanted
    found = []
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        try:
            t = read_chat_template(folder)
        except (OSError, ValueError) as exc:
            raise MergeError(f"chat_template auto: cannot read the chat template of {folder}: {exc}") from exc
        if t:
            found.append(t.strip())
    if not found:
        raise MergeError("chat_template auto: none of the models has a chat template; paste one, or leave "
                         "chat_template out.")
    return Counter(found).most_common(1)[0][0]


def read_chat_template(folder: str | Path) -> str | None:
    """A folder's default chat template as its tokenizer would hold it, read from the files as transformers reads
    them (tokenization_utils_base, _from_pretrained): chat_template.jinja first, else tokenizer_config.json's
    chat_template, a text or named templates ([{name, template}], whose "default" counts). No tokenizer is loaded,
    so none of a remote-code tokenizer's code runs. A tokenizer_config.json that is no JSON raises ValueError."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():  # (chat_template.json is a processor's: the tokenizer ignores it)
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if not (folder / "tokenizer_config.json").is_file():
        return None
    t = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    if isinstance(t, list):
        t = {e.get("name"): e.get("template") for e in t if isinstance(e, dict)}
    t = t.get("default") if isinstance(t, dict) else t
    return t if isinstance(t, str) and t else None


def has_chat_template(folder: str | Path) -> bool:
    """Whether a model folder carries a chat template, read from its files without loading the tokenizer: for the
    page's warning before a merge takes a base's tokenizer."""
    try:
        return read_chat_template(folder) is not None
    except (OSError, ValueError, AttributeError):
        return False


def template_lost(source: str, folder: str | Path, candidates: dict[str, str | Path]) -> str | None:
    """The warning when the merged model will have no chat template though a candidate has one (a TIES of two chat
    models relative to a pretrained base takes the base's tokenizer, as mergekit does): said alike by the page, the
    job's log and the command line. `source`, `folder`: the tokenizer's model; `candidates`: name -> folder."""
    if has_chat_template(folder):
        return None
    with_one = [n for n, f in candidates.items() if has_chat_template(f)]
    return None if not with_one else (
        f"the tokenizer comes from {source}, which has no chat template, so the merged model will have none (nor "
        f"the end-of-turn token of {', '.join(with_one)} in its generation config): take the tokenizer from a "
        "candidate (tokenizer_source, --tokenizer-source) or the most common template (chat_template: auto).")


def set_chat_template(folder: Path, template: str) -> None:
    """Give the tokenizer in `folder` `template`, written as transformers' save_pretrained writes one template
    (save_chat_templates: chat_template.jinja, and none left in tokenizer_config.json). mergekit loads the tokenizer
    and saves it again; a remote-code tokenizer (an auto_map in tokenizer_config.json) cannot be loaded without
    running its code, which this project never does, and the merge failed there, after the weights were written.
    Written from the files, it works for every tokenizer and cannot fail that late."""
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "chat_template" in data:
            del data["chat_template"]
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def without_base(spec: MergeSpec) -> MergeSpec:
    """The spec without the models that are its base (and their weights): mergekit takes the base's task vector to
    be none and leaves it out (a TensorGroup's non_base entries), so its weight counts in no normalization — listed
    with normalize on, it halved the merge's step away from the base. Models that are all the base are refused."""
    if not spec.base:
        return spec
    base = registry.resolve(spec.base)[0].resolve()
    keep = [i for i, m in enumerate(spec.models) if registry.resolve(m)[0].resolve() != base]
    if not keep:
        raise MergeError(f"every model to merge is the base {spec.base}: there is no task vector to add.")
    if len(keep) == len(spec.models):
        return spec
    weights = [spec.weights[i] for i in keep] if spec.weights else None
    if weights and spec.resolved_normalize and weights_sum_to_zero(weights):  # as MergeSpec refuses them
        raise MergeError(f"weights: without the base {spec.base}, listed among the models (it has no task vector), "
                         "the others' weights sum to zero, so they cannot be normalized by their sum; change a "
                         "weight, or untick \"Normalize by the weights' sum\" (normalize: false in a spec, "
                         "--no-normalize on the command line).")
    return spec.model_copy(update={"models": [spec.models[i] for i in keep], "weights": weights})


def model_card(spec: MergeSpec, name: str, names: list[str], slerp: str | None) -> str:
    """The merged folder's README.md: what was merged, how (a SLERP: how many tensors fell back to linear
    interpolation, SlerpTally), and the spec that rebuilds it."""
    return (f"# {name}\n\n{spec.method} merge by DUS Studio of "
            f"{', '.join(f'`{n}`' for n in names[:len(spec.models)])}"
            + (f" relative to `{names[-1]}`" if spec.base else "")
            + ".\n\n" + (f"{SLERP_LINE}{slerp}.\n\n" if slerp else "")
            + f"## Spec\n```yaml\n{spec.to_yaml()}```\n")


def slerp_note(folder: str | Path) -> str | None:
    """A SLERP's line of its model card ("SLERP: 290 of 290 tensors nearly parallel …"), for a page that shows the
    merge (the Compare page's merge view): the registry keeps only the spec. None for other merges and SLERPs made
    before the count existed."""
    card = Path(folder) / "README.md"
    lines = card.read_text().splitlines() if card.is_file() else []
    return next((line for line in lines if line.startswith(SLERP_LINE)), None)
