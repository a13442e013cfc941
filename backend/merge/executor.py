"""The streaming executor: each output tensor is computed a chunk at a time while a shard writer writes it.

Each input is read in blocks of BLOCK_BYTES (pread, not mmap), combined CHUNK_ELEMS elements at a time in buffers
each shard-writer thread reuses, and written straight into the shard: memory stays flat whatever the model size.
Methods that need a statistic of the whole tensor first take it in passes over the same chunks, keeping only
scalars or histograms: SLERP the angle (⟨a,b⟩, |a|², |b|²), TIES each task vector's top-k threshold (a histogram of
the magnitudes' bit patterns), rescaling the L1 norms of each task vector before and after dropping. A tensor that
fits in one block is read once for all passes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import torch

from backend.merge.methods import (DOT_THRESHOLD, METHODS, TaskArithmetic, TopK, combine, linear, magnitude_bits,
                                   nearly_parallel, random_keep, rescale_factor, slerp_cos, slerp_weights, top_k_cuts)
from backend.modelinfo import ModelInfo
from backend.safetensors_stream import DTYPE_SIZES, open_source
from backend.specs import MergeSpec

CHUNK_ELEMS = 1 << 20  # elements combined at a time: 4 MiB of float32 per input, which stays in the cache
BLOCK_BYTES = 64 << 20  # raw bytes read per input at once (a tensor up to this size is read only once)
TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}  # what a merge reads and writes


class MergeError(ValueError):
    pass


class Reader:
    """Element ranges of one tensor from each model, read with pread into a buffer the caller owns. Not mmap: pages
    of a mapped file count as resident memory once touched, so a merge of two 2 GB models would show 4 GB of RSS."""

    def __init__(self, infos: list[ModelInfo]):
        self.infos = infos
        self.fds: dict[Path, int] = {}
        self.lock = threading.Lock()

    def read(self, model: int, name: str, start: int, stop: int, into: torch.Tensor) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor, read into the uint8 tensor `into`; returns them as a
        flat tensor of the file's dtype (a view of `into`)."""
        ref = self.infos[model].tensors[name]
        elem = DTYPE_SIZES[ref.dtype]
        with self.lock:
            if ref.file not in self.fds:
                self.fds[ref.file] = open_source(ref.file)  # one deleted mid-merge: named, not a bare errno
        n = (stop - start) * elem
        view, got = memoryview(into.numpy())[:n], 0
        while got < n:  # pread may return less than asked
            chunk = os.preadv(self.fds[ref.file], [view[got:]], ref.offset + start * elem + got)
            if chunk == 0:
                raise MergeError(f"{ref.file} ended early reading {name}: the file is truncated (cut or rewritten "
                                 "while this merge read it?). Nothing was registered: restore or re-download that "
                                 "model, then run the merge again.")
            got += chunk
        return into[:n].view(TORCH_DTYPES[ref.dtype])

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Scratch(threading.local):
    """Buffers of one shard-writer thread, reused for every tensor it writes. A fresh 32 MB buffer per chunk costs
    more in page faults than the arithmetic (the allocator maps and zeroes it each time); reused buffers of a
    chunk that fits in the cache make the conversions and products several times faster."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self.buffers[key] = torch.empty(numel, dtype=dtype)
        return buf[:numel]


_scratch = _Scratch()


class SlerpTally:
    """How many tensors (and parameters) a SLERP interpolated linearly because the two were nearly parallel
    (|cos| > DOT_THRESHOLD: mergekit 0.1.5's mergekit/merge_methods/slerp.py). Candidates a few training steps
    apart are parallel in every tensor, so their SLERP is bit for bit a weighted average; without this count the
    user reads "SLERP = Average" as a finding or suspects a bug. mergekit returns a tensor unchanged only when one
    model lacks it, which check_mergeable (plan.py) refuses, so linear and spherical are the only two cases.
    Shard-writer threads add to it at once, hence the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tensors = self.params = self.linear = self.linear_params = 0
        self.ts: set[float] = set()  # the t of each tensor (a schedule or filters give several)

    def add(self, numel: int, t: float, parallel: bool) -> None:
        """One tensor of `numel` elements merged at `t`, interpolated linearly when `parallel`."""
        with self.lock:
            self.tensors += 1
            self.params += numel
            self.linear += parallel
            self.linear_params += numel if parallel else 0
            self.ts.add(t)

    def summary(self) -> str:
        """One line for the job's result and the model card."""
        said = f"{self.linear} of {self.tensors} tensors"
        if self.linear and self.linear < self.tensors:
            said += f" ({_share(self.linear_params / self.params)} of the parameters)"
        said += f" nearly parallel (|cos| > {DOT_THRESHOLD})"
        if not self.linear:
            return said + " — every tensor interpolated spherically"
        said += ", interpolated linearly as mergekit does"
        if self.linear == self.tensors:
            t = next(iter(self.ts)) if len(self.ts) == 1 else None
            return said + (f" — the same as a weighted average [{1 - t:g}, {t:g}]" if t is not None else
                           " — the same as a weighted average [1 − t, t] with each tensor's t")
        return said + f"; the other {self.tensors - self.linear} spherically"


def _share(frac: float) -> str:
    """A share of a model as a percentage that is never 0.0 % or 100.0 % unless it is: the norms of a 1B model are
    under 0.1 % of it, and "0.0 % of the parameters" next to a nonzero count reads as a bug."""
    said = f"{frac:.1%}"
    return {"0.0%": "under 0.1%", "100.0%": "over 99.9%"}.get(said, said) if 0 < frac < 1 else said


def producer(spec: MergeSpec, name: str, infos: list[ModelInfo], reader: Reader, base: int | None,
             out_dtype: torch.dtype, t: float | None, tally: SlerpTally) -> Callable[[], Iterator[memoryview]]:
    """The chunks of one merged tensor, computed on demand by a shard writer; each chunk is written before the next
    is asked for, so every chunk may live in the same reused buffer. A SLERP adds to `tally` whether this tensor
    was interpolated linearly."""
    ref = infos[0].tensors[name]
    numel = ref.nbytes // DTYPE_SIZES[ref.dtype]
    n = len(spec.models)
    inputs = list(range(n)) + ([base] if base is not None else [])
    sizes = [DTYPE_SIZES[infos[k].tensors[name].dtype] for k in inputs]
    block = max(1, BLOCK_BYTES // max(sizes))
    chunk = CHUNK_ELEMS
    weights = spec.weights or [1.0] * n
    method = METHODS[spec.method]

    def blocks() -> Iterator[tuple[int, list[torch.Tensor]]]:
        for b0 in range(0, numel, block):
            b1 = min(numel, b0 + block)
            yield b0, [reader.read(k, name, b0, b1, _scratch.get(("raw", j), (b1 - b0) * size, torch.uint8))
                       for j, (k, size) in enumerate(zip(inputs, sizes))]

    def read_as(raws: list[torch.Tensor], j: int, c0: int, c1: int) -> torch.Tensor:
        """Elements [c0, c1) of input j's raw block as the merge reads them: rounded to the merge's dtype
        `out_dtype` when stored in another, as mergekit casts each input to its `dtype` when it loads it
        (io/tasks.py, GatherTensors; with no dtype, to the inputs' promoted one). Widening to float32 is exact and
        skipped here: as_dtype converts once."""
        r = raws[j][c0:c1]
        if r.dtype == out_dtype or out_dtype == torch.float32:
            return r
        return _scratch.get(("in", j), chunk, out_dtype)[:c1 - c0].copy_(r)

    def as_dtype(raws: list[torch.Tensor], j: int, c0: int, c1: int, dtype: torch.dtype) -> torch.Tensor:
        """Elements [c0, c1) of input j's raw block (read_as) in `dtype`: a view when it already is, else a reused
        copy."""
        r = read_as(raws, j, c0, c1)
        return r if r.dtype == dtype else _scratch.get(("as", j, dtype), chunk, dtype)[:c1 - c0].copy_(r)

    def out_bytes(merged: torch.Tensor) -> memoryview:
        if merged.dtype != out_dtype:
            merged = _scratch.get(("out",), chunk, out_dtype)[:len(merged)].copy_(merged)
        return memoryview(merged.view(torch.uint8).numpy())

    def make() -> Iterator[memoryview]:
        whole = list(blocks()) if numel <= block else None  # a tensor of one block is read once for all passes

        def spans() -> Iterator[tuple[list[torch.Tensor], int, int, int]]:
            """(raw blocks, first element of the chunk in the tensor, chunk start and stop in the blocks)"""
            for b0, raws in whole if whole is not None else blocks():
                for c0 in range(0, len(raws[0]), chunk):
                    yield raws, b0 + c0, c0, min(len(raws[0]), c0 + chunk)

        if method is linear:
            for raws, _, c0, c1 in spans():
                acc = _scratch.get(("acc",), chunk, torch.float32)[:c1 - c0]
                yield out_bytes(linear([as_dtype(raws, j, c0, c1, torch.float32) for j in range(n)],
                                       weights=weights, normalize=spec.resolved_normalize, out=acc))
        elif isinstance(method, TaskArithmetic):
            yield from _task_arithmetic(spec, method, name, numel, spans, as_dtype, weights, out_dtype, out_bytes)
        else:  # slerp: the angle belongs to the whole tensor; a first pass takes <a,b>, |a|², |b|² chunk by chunk
            dot = na = nb = 0.0
            for raws, _, c0, c1 in spans():
                a, b = as_dtype(raws, 0, c0, c1, torch.float32), as_dtype(raws, 1, c0, c1, torch.float32)
                dot += torch.dot(a, b).item()
                na += torch.dot(a, a).item()
                nb += torch.dot(b, b).item()
            cos = slerp_cos(dot, na, nb)
            c0f, c1f = slerp_weights(cos, t)
            tally.add(numel, t, nearly_parallel(cos))
            for raws, _, c0, c1 in spans():
                a = _scratch.get(("f32", 0), chunk, torch.float32)[:c1 - c0].copy_(read_as(raws, 0, c0, c1))
                b = _scratch.get(("f32", 1), chunk, torch.float32)[:c1 - c0].copy_(read_as(raws, 1, c0, c1))
                yield out_bytes(a.mul_(c0f).add_(b.mul_(c1f)))  # mergekit's three float32 roundings, in place

    return make


def _task_arithmetic(spec: MergeSpec, method: TaskArithmetic, name: str, numel: int, spans, as_dtype, weights,
                     cd: torch.dtype, out_bytes) -> Iterator[memoryview]:
    """task_arithmetic / TIES / DARE in the compute dtype `cd` (the output dtype, as mergekit's `dtype:`)."""
    n = len(spec.models)
    density = spec.density
    sparse = method.sparsify is not None and density < 1
    k = max(1, int(density * numel))
    magnitude = sparse and method.sparsify == "magnitude"
    if magnitude and k >= numel:
        sparse = magnitude = False  # every entry kept: nothing to drop, and a rescale by 1
    # mergekit rescales in the tensor's dtype, except DARE on float16, whose Bernoulli draw runs in float32
    work = cd if magnitude or cd != torch.float16 else torch.float32
    w = torch.tensor(weights, dtype=cd)
    seed = spec.seed

    def deltas(raws, c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
        base = as_dtype(raws, n, c0, c1, cd)
        d = _scratch.get(("deltas",), n * (c1 - c0), cd).view(n, c1 - c0)
        for i in range(n):
            torch.sub(as_dtype(raws, i, c0, c1, cd), base, out=d[i])
        return d, base

    cuts = top_k_cuts(lambda: ([magnitude_bits(d_i) for d_i in deltas(raws, c0, c1)[0]]
                               for raws, _, c0, c1 in spans()), k, cd == torch.float32) if magnitude else None

    def keep_masks():
        """A function (model, global start, delta chunk) -> keep mask as 0/1 in the delta's dtype (mergekit masks
        by `tensor * mask`; a multiply is also several times faster than masked_fill_ on CPUs), fresh for each
        pass over the tensor."""
        if magnitude:
            tops = [TopK(*c) for c in cuts]
            return lambda i, g0, d: tops[i](magnitude_bits(d)).view(torch.uint8).to(d.dtype)
        return lambda i, g0, d: random_keep((seed, name, i), g0, g0 + len(d), density).view(torch.uint8).to(d.dtype)

    factors: list[torch.Tensor | None] = [None] * n
    if sparse and spec.resolved_rescale:
        l1_all, l1_kept = [0.0] * n, [0.0] * n
        keep = keep_masks()
        for raws, g0, c0, c1 in spans():
            for i, d in enumerate(deltas(raws, c0, c1)[0]):
                mag = d.to(work).abs()
                l1_all[i] += mag.sum(dtype=torch.float64).item()
                l1_kept[i] += mag.mul_(keep(i, g0, d)).sum(dtype=torch.float64).item()
        factors = [rescale_factor(a, b, work) for a, b in zip(l1_all, l1_kept)]
    keep = keep_masks() if sparse else None
    for raws, g0, c0, c1 in spans():
        d, base = deltas(raws, c0, c1)
        if sparse:
            for i in range(n):
                d[i].mul_(keep(i, g0, d[i]))
                if factors[i] is not None:
                    d[i] = d[i].mul_(factors[i]) if work == cd else (d[i].to(work) * factors[i]).to(cd)
        yield out_bytes(combine(d, base, w, consensus=method.consensus, normalize=spec.resolved_normalize,
                                lam=spec.lambda_))
