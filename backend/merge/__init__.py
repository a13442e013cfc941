"""Merging candidate models, streamed tensor by tensor (SOLAR's last step: Average(a, b) or SLERP of two
candidates gives the final model).

    python -m backend merge --method slerp --models cand1 cand2 --t 0.5 --out workspace/models/merged

Plan first: the models must share architecture, tensor names, shapes and dtypes (clear error otherwise). Then each
output tensor is read out of the inputs in blocks (pread, not mmap), combined a cache-sized chunk at a time in
buffers each shard-writer thread reuses (SLERP first takes the tensor's angle in one pass over the same chunks), and
written straight into the shards: memory stays flat. The folder is built in the workspace's .tmp and renamed into
place before it is registered (backend/outputs.py).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from backend import registry
from backend.merge.methods import METHODS, slerp_coefficients
from backend.modelinfo import ModelInfo, inspect_model
from backend.outputs import building, copy_companions, output_dir, register_output
from backend.safetensors_stream import DTYPE_SIZES, OutTensor, write_checkpoint
from backend.specs import MergeSpec, parse_size
from backend.upscale import check_compatible

Progress = Callable[[float, str], None]
CHUNK_ELEMS = 1 << 20  # float32 elements combined at a time: 4 MiB per input, which stays in the cache
BLOCK_BYTES = 64 << 20  # raw bytes read per input at once (SLERP reads a tensor up to this size only once)
_TORCH_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}  # the float formats a merge reads and writes


class MergeError(ValueError):
    pass


def schedule_value(value: float | list[float], frac: float) -> float:
    """A parameter that is a number, or anchors spread evenly along the depth and linearly interpolated
    (mergekit's gradients): [0, 1] goes from 0 at the first layer to 1 at the last."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(np.interp(frac, np.linspace(0, 1, len(value)), value))


def tensor_t(spec: MergeSpec, name: str, info: ModelInfo) -> float:
    """t for one tensor: the first filter whose key occurs in its name, else the default; evaluated at the
    tensor's depth (layer i of n at i/(n-1); embeddings at 0; final norm and head at 1)."""
    m = re.match(rf"^{re.escape(info.layer_prefix)}\.(\d+)\.", name)
    if m:
        frac = int(m[1]) / max(info.num_layers - 1, 1)
    else:
        frac = 0.0 if "embed" in name or name.endswith(("wte.weight", "wpe.weight")) else 1.0
    value = next((v for key, v in spec.filters.items() if key in name), spec.t)
    return schedule_value(value, frac)


def check_mergeable(infos: list[ModelInfo], names: list[str]) -> None:
    for info, name in zip(infos[1:], names[1:]):
        try:
            check_compatible(infos[0], info)
        except ValueError as exc:
            raise MergeError(f"{names[0]} and {name} cannot be merged: {exc}") from None
        if info.num_layers != infos[0].num_layers or set(info.tensors) != set(infos[0].tensors):
            raise MergeError(f"{names[0]} and {name} cannot be merged: they have different layers or tensors "
                             f"({infos[0].num_layers} vs {info.num_layers} layers).")
        for tname, ref in infos[0].tensors.items():
            other = info.tensors[tname]
            if (other.shape, other.dtype) != (ref.shape, ref.dtype):
                raise MergeError(f"{names[0]} and {name} cannot be merged: {tname} is {ref.dtype}{list(ref.shape)} "
                                 f"vs {other.dtype}{list(other.shape)}.")


class _Reader:
    """Element ranges of one tensor from each model, read with pread into a buffer the caller owns. Not mmap: pages
    of a mapped file count as resident memory once touched, so a merge of two 2 GB models would show 4 GB of RSS."""

    def __init__(self, infos: list[ModelInfo]):
        self.infos = infos
        self.fds: dict[Path, int] = {}
        self.lock = threading.Lock()

    def read(self, model: int, name: str, start: int, stop: int, into):
        """Elements [start, stop) of the flattened tensor, read into the uint8 tensor `into`; returns them as a
        flat tensor of the file's dtype (a view of `into`)."""
        import torch

        ref = self.infos[model].tensors[name]
        elem = DTYPE_SIZES[ref.dtype]
        with self.lock:
            if ref.file not in self.fds:
                self.fds[ref.file] = os.open(ref.file, os.O_RDONLY)
        n = (stop - start) * elem
        view, got = memoryview(into.numpy())[:n], 0
        while got < n:  # pread may return less than asked
            chunk = os.preadv(self.fds[ref.file], [view[got:]], ref.offset + start * elem + got)
            if chunk == 0:
                raise MergeError(f"{ref.file} ended early reading {name}: the file is truncated.")
            got += chunk
        return into[:n].view(getattr(torch, _TORCH_DTYPES[ref.dtype]))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Scratch(threading.local):
    """Buffers of one shard-writer thread, reused for every tensor it writes. A fresh 32 MB buffer per chunk costs
    more in page faults than the arithmetic (the allocator maps and zeroes it each time); reused buffers of a
    chunk that fits in the cache make the conversions and products several times faster."""

    def __init__(self):
        self.buffers: dict[tuple, object] = {}

    def get(self, key: tuple, numel: int, dtype):
        import torch

        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = self.buffers[key] = torch.empty(numel, dtype=dtype)
        return buf[:numel]


_scratch = _Scratch()


def _producer(spec: MergeSpec, name: str, infos: list[ModelInfo], reader: _Reader, base: int | None,
              out_dtype) -> Callable[[], Iterator[memoryview]]:
    """The chunks of one merged tensor, computed on demand by a shard writer. Each input is read in blocks of
    BLOCK_BYTES (raw), converted and combined CHUNK_ELEMS float32 elements at a time in reused buffers, and
    converted into a reused output buffer; the writer writes a chunk before it asks for the next."""
    import torch

    fn = METHODS[spec.method]
    ref = infos[0].tensors[name]
    numel = ref.nbytes // DTYPE_SIZES[ref.dtype]
    inputs = list(range(len(spec.models))) + ([base] if base is not None else [])
    n_cand = len(spec.models)
    weights = spec.weights or [1.0] * n_cand
    t = tensor_t(spec, name, infos[0]) if spec.method == "slerp" else None
    kwargs = dict(weights=weights, normalize=spec.normalize, density=spec.density)
    sizes = [DTYPE_SIZES[infos[k].tensors[name].dtype] for k in inputs]
    block = max(1, BLOCK_BYTES // max(sizes))
    chunk = CHUNK_ELEMS
    if spec.method == "ties":  # TIES trims by magnitude over the whole tensor
        block = chunk = max(numel, 1)

    def blocks() -> Iterator[list]:
        for b0 in range(0, numel, block):
            b1 = min(numel, b0 + block)
            yield [reader.read(k, name, b0, b1, _scratch.get(("raw", j), (b1 - b0) * size, torch.uint8))
                   for j, (k, size) in enumerate(zip(inputs, sizes))]

    def floats(raws: list, c0: int, c1: int) -> list:
        """Elements [c0, c1) of each raw block as float32, converted straight into reused buffers."""
        return [_scratch.get(("f32", j), chunk, torch.float32)[:c1 - c0].copy_(r[c0:c1]) for j, r in enumerate(raws)]

    def make() -> Iterator[memoryview]:
        whole = list(blocks()) if numel <= block else None  # a tensor of one block is read once for both passes

        def spans() -> Iterator[tuple[list, int, int]]:
            for raws in whole if whole is not None else blocks():
                for c0 in range(0, len(raws[0]), chunk):
                    yield raws, c0, min(len(raws[0]), c0 + chunk)

        coeffs = None
        if spec.method == "slerp":
            # The angle belongs to the whole tensor: a first pass takes ⟨a,b⟩, |a|², |b|² chunk by chunk.
            dot = na = nb = 0.0
            for raws, c0, c1 in spans():
                a, b = floats(raws, c0, c1)
                dot += torch.dot(a, b).item()
                na += torch.dot(a, a).item()
                nb += torch.dot(b, b).item()
            coeffs = slerp_coefficients(dot, na, nb, t)
        for index, (raws, c0, c1) in enumerate(spans()):
            cands = floats(raws, c0, c1)
            if coeffs is not None:
                merged = cands[0].mul_(coeffs[0]).add_(cands[1], alpha=coeffs[1])
            else:
                # DARE's drop mask: seeded per tensor and chunk, so the same spec gives the same model
                seed = zlib.crc32(f"{spec.seed}:{name}:{index}".encode())
                merged = fn(cands[:n_cand], base=cands[n_cand] if base is not None else None, seed=seed,
                            **kwargs).reshape(-1)
            out = _scratch.get(("out",), chunk * out_dtype.itemsize, torch.uint8)[:(c1 - c0) * out_dtype.itemsize]
            out.view(out_dtype).copy_(merged)
            yield memoryview(out.numpy())

    return make


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
    bad = sorted({ref.dtype for ref in first.tensors.values()} - set(_TORCH_DTYPES)) + \
        ([out_st] if out_st not in _TORCH_DTYPES else [])
    if bad:
        raise MergeError(f"cannot merge {', '.join(bad)} weights; only float32, bfloat16 and float16 are merged.")
    out_dtype = getattr(torch, _TORCH_DTYPES[out_st])
    reader = _Reader(infos)  # shared by the shard threads: os.pread needs no lock
    base = len(spec.models) if spec.base else None
    tensors = [OutTensor(tname, out_st, ref.shape, ref.nbytes // DTYPE_SIZES[ref.dtype] * DTYPE_SIZES[out_st], None,
                         make=_producer(spec, tname, infos, reader, base, out_dtype))
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
            cfg["dtype"] = _TORCH_DTYPES[out_st]
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            copy_companions(first.folder, tmp)
            (tmp / "README.md").write_text(f"# {name}\n\n{spec.method} merge by DUS Studio of "
                                           f"{', '.join(f'`{n}`' for n in names[:len(spec.models)])}"
                                           + (f" relative to `{names[-1]}`" if spec.base else "")
                                           + f".\n\n## Spec\n```yaml\n{spec.to_yaml()}```\n")
    finally:
        reader.close()
    rec = register_output(out_dir, name, "merged", parents=list(dict.fromkeys(names)), source=spec.method,
                          recipe=spec.model_dump(mode="json"))
    seconds = time.perf_counter() - t0
    progress(1.0, f"registered {name} in {seconds:.1f} s")
    return {"model": rec.name, "path": str(out_dir), "seconds": round(seconds, 2)}
