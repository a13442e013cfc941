"""Merging candidate models, streamed tensor by tensor (SOLAR's last step: Average(a, b) or SLERP of two
candidates gives the final model), with mergekit 0.1.5's definitions of linear, SLERP, task arithmetic, TIES and
DARE (backend/merge/methods.py).

    python -m backend merge --method slerp --models cand1 cand2 --t 0.5 --out workspace/models/merged
    python -m backend merge --method ties --models ft1 ft2 --base base --density 0.5 --out workspace/models/ties

Plan first (backend/merge/plan.py): the models must share architecture, vocabulary, tensor names, shapes and
dtypes (clear error otherwise). Then each output tensor is computed chunk by chunk while it is written
(backend/merge/executor.py): memory stays flat. The folder is built in the workspace's .tmp and renamed into place
before it is registered (backend/outputs.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from backend import registry
from backend.merge import executor
from backend.merge.executor import TORCH_DTYPES, MergeError, Reader, SlerpTally, producer
from backend.merge.methods import METHODS, slerp_coefficients
from backend.merge.plan import check_mergeable, check_vocab, schedule_value, tensor_t
from backend.modelinfo import inspect_model
from backend.outputs import building, copy_companions, output_dir, register_output
from backend.safetensors_stream import DTYPE_SIZES, OutTensor, write_checkpoint
from backend.specs import MergeSpec, parse_size

__all__ = ["run_merge", "MergeError", "METHODS", "check_mergeable", "check_vocab", "executor", "schedule_value",
           "slerp_coefficients", "slerp_note", "tensor_t"]
Progress = Callable[[float, str], None]
SLERP_LINE = "SLERP: "  # starts the model card's line saying how many tensors were interpolated linearly


def run_merge(spec: MergeSpec, out_dir: Path | None = None, progress: Progress | None = None) -> dict:
    import torch

    progress = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    refs = list(spec.models) + ([spec.base] if spec.base else [])
    folders, names = [], []
    for r in refs:
        folder, name = registry.resolve(r)
        folders.append(folder)
        names.append(name or str(folder))
    infos = [inspect_model(f) for f in folders]
    check_mergeable(infos, names)
    name = spec.name or spec.default_name()
    first = infos[0]
    out_st = {"auto": first.dtype, "float32": "F32", "bfloat16": "BF16", "float16": "F16"}[spec.dtype]
    bad = sorted({ref.dtype for ref in first.tensors.values()} - set(TORCH_DTYPES)) + \
        ([out_st] if out_st not in TORCH_DTYPES else [])
    if bad:
        raise MergeError(f"cannot merge {', '.join(bad)} weights; only float32, bfloat16 and float16 are merged.")
    out_dtype = TORCH_DTYPES[out_st]
    reader = Reader(infos)  # shared by the shard threads: os.pread needs no lock
    base = len(spec.models) if spec.base else None
    tally = SlerpTally()
    tensors = [OutTensor(tname, out_st, ref.shape, ref.nbytes // DTYPE_SIZES[ref.dtype] * DTYPE_SIZES[out_st], None,
                         make=producer(spec, tname, infos, reader, base, out_dtype,
                                       tensor_t(spec, tname, first) if spec.method == "slerp" else None, tally))
               for tname, ref in first.tensors.items()]
    out_dir = output_dir(out_dir, spec.out, name, needed=sum(t.nbytes for t in tensors))
    progress(0.0, f"{spec.method} of {', '.join(names[:len(spec.models)])}")
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
            cfg = {k: v for k, v in first.config.items() if k not in ("_name_or_path", "torch_dtype")}
            cfg["dtype"] = str(out_dtype).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            copy_companions(first.folder, tmp)
            slerp = tally.summary() if spec.method == "slerp" else None
            (tmp / "README.md").write_text(model_card(spec, name, names, slerp))
    finally:
        reader.close()
    rec = register_output(out_dir, name, "merged", parents=list(dict.fromkeys(names)), source=spec.method,
                          recipe=spec.model_dump(mode="json"))
    seconds = time.perf_counter() - t0
    progress(1.0, f"registered {name} in {seconds:.1f} s")
    return {"model": rec.name, "path": str(out_dir), "seconds": round(seconds, 2)} | ({"slerp": slerp} if slerp else {})


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
