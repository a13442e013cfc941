"""Read safetensors headers and write new checkpoints by copying tensor bytes, never loading a model.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
{dtype, shape, data_offsets}, then raw bytes. Depth up-scaling only rearranges whole tensors, so a new checkpoint
is a new header plus byte ranges copied from the sources: memory stays flat whatever the model size, and the
copy runs in the kernel (`os.copy_file_range`), as `cp` does.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from backend.names import human_bytes

# Every whole-byte dtype the safetensors format names (its Rust Dtype enum, as safetensors 0.8 writes them): a file in
# one left out here (AMD's FNUZ fp8, microscaling's E8M0 scales) was refused as "corrupt ... re-download it".
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1, "C64": 8,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
INDEX_NAME = "model.safetensors.index.json"
OTHER_WEIGHTS = (".bin", ".pt", ".gguf")  # weight files an import converts to safetensors (backend/registry.py)
# Pickle files a Trainer folder holds beside the weights: training_args.bin (a pickled object, no tensors) and
# optimizer.pt / scheduler.pt, which weights_only=True refuses or which are no model weights
NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt"}
_CHUNK = 256 << 20  # bytes per copy call: few syscalls (as cp), still a progress report every few hundred MB
# What passes through this process's memory (zeros, and copies where the kernel cannot copy) goes in blocks of this
# size: a 256 MB block per call was up to 1 GB held by four writer threads (a LLaMA Pro build of a large model
# zeroes hundreds of projections). The disk sets the pace: 1 GiB of zeros took 1.7-7 s here with either size.
_BLOCK = 16 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as it stands: the message says which file and what to do."""


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live in a source file."""

    file: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in `file`
    nbytes: int


@dataclass(frozen=True)
class OutTensor:
    """One tensor of a checkpoint to write: copied from `source`, produced chunk by chunk by `make` (a merge), or
    all zeros when neither is given. Each chunk is written before the next is asked for, so a producer may hand
    out views of one buffer it reuses."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source: TensorRef | None
    make: Callable[[], Iterable[bytes]] | None = None


def read_header(path: Path) -> tuple[dict, int]:
    """Return (header without __metadata__, absolute offset where tensor data starts); validates every entry."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{path} is truncated: no safetensors header. Re-download or re-export it.")
            (hlen,) = struct.unpack("<Q", raw_len)
            if hlen <= 1 or 8 + hlen > size or hlen > 100 << 20:
                raise CheckpointError(f"{path} has a corrupt safetensors header (length {hlen} for a {size}-byte "
                                      "file). Re-download or re-export it.")
            header = json.loads(f.read(hlen))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header ({exc}). Re-download or re-export it.")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing. The checkpoint is incomplete: re-download or re-export it.")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header (not a JSON object).")
    header.pop("__metadata__", None)
    data_start = 8 + hlen
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if isinstance(dtype, str) and dtype not in DTYPE_SIZES:  # a sub-byte or newer dtype, not a broken file
            raise CheckpointError(f"{path}: tensor {name!r} is stored as {dtype}, a dtype this tool cannot copy "
                                  f"(it copies {', '.join(DTYPE_SIZES)}). Convert the model to bfloat16 or "
                                  "float16 first.")
        if not _entry_ok(info) or data_start + info["data_offsets"][1] > size:
            raise CheckpointError(f"{path}: tensor {name!r} has a corrupt header entry or lies past the end of the "
                                  "file (truncated download?). Re-download or re-export it.")
    _check_contiguous(path, header)
    _check_no_trailing_bytes(path, header, data_start, size)
    return header, data_start


def _natural(x) -> bool:
    return type(x) is int and x >= 0  # JSON's 2.0, true or -1 are no size or offset (safetensors' usize)


def _entry_ok(info) -> bool:
    """One header entry as safetensors reads it: a known dtype, a shape of whole non-negative numbers and two byte
    offsets whose span holds exactly that many elements. A float, boolean or negative number was accepted (int()
    made 5.0 and -1·-5 look right), though safetensors refuses the file ("invalid JSON in header"); a float offset
    then failed the copy with a TypeError, and a shape like [5.0] was written into the new model's header."""
    if not isinstance(info, dict) or info.get("dtype") not in DTYPE_SIZES:
        return False
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        return False
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets):
        return False
    numel = 1
    for d in shape:
        numel *= d
    return offsets[1] - offsets[0] == numel * DTYPE_SIZES[info["dtype"]]


def _check_contiguous(path: Path, header: dict) -> None:
    """The tensors tile the data from byte 0, each starting where the one before ends, as safetensors requires
    ("invalid offset for tensor"). Two tensors sharing bytes, or a hole between them, passed here: a build copied
    the same bytes into both tensors (or skipped some) and registered a model made from a file safetensors itself
    refuses to load."""
    pos = 0
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        lo, hi = info["data_offsets"]
        if lo != pos:
            what = "overlaps the tensor before it" if lo < pos else f"leaves {lo - pos:,} bytes unused before it"
            raise CheckpointError(f"{path}: tensor {name!r} starts at data byte {lo:,}, where the tensors before it "
                                  f"end at {pos:,}: it {what}, which safetensors refuses (a corrupt or hand-made "
                                  "file). Re-download or re-export it.")
        pos = hi


def _check_no_trailing_bytes(path: Path, header: dict, data_start: int, size: int) -> None:
    """The tensors' data ends where the file does. safetensors refuses a file with bytes after its last tensor
    ("file not fully covered") only when a model is loaded, after an up-scaling or merge has built on it; refused
    here, the message names the file when it is read. (A file shorter than its header says is refused per tensor.)"""
    end = data_start + max((info["data_offsets"][1] for info in header.values()), default=0)
    if end < size:
        raise CheckpointError(f"{path} has {size - end:,} bytes after its last tensor (its header's data ends at "
                              f"byte {end:,} of {size:,}): something was appended to it, or a smaller file was "
                              "written over it in place. Re-download or re-export it.")


def _weight_map(folder: Path) -> dict[str, str] | None:
    """The index's tensor -> shard file map, None without an index."""
    index = Path(folder) / INDEX_NAME
    if not index.exists():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a valid safetensors index ({exc}).")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} is not a valid safetensors index (weight_map is not an object).")
    # a file of this folder each: a number (TypeError past every caller) or "../x" (a file elsewhere, read and
    # pushed as a shard) is no shard
    bad = sorted({str(v) for v in weight_map.values()
                  if not isinstance(v, str) or not v or Path(v).is_absolute() or ".." in Path(v).parts})
    if bad:
        raise CheckpointError(f"{index} is not a valid safetensors index: its weight_map names {', '.join(bad[:3])}, "
                              "not shard files of the folder.")
    return weight_map


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, following the index when there is one."""
    folder = Path(folder)
    weight_map = _weight_map(folder)
    if weight_map is not None:
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
        if (folder / "model.safetensors").is_file() and folder / "model.safetensors" not in files:
            # transformers loads model.safetensors and never reads the index; builds here follow the index: a
            # model evaluated and one built or pushed would be two different models
            raise CheckpointError(f"{folder} holds model.safetensors beside {INDEX_NAME}, which names other shards: "
                                  "transformers loads the one, this studio's builds the others. Remove the file "
                                  "that is not the model (or the index), then try again.")
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{folder} is missing shard(s) {', '.join(missing)} named in {INDEX_NAME}. "
                                  "The download or export is incomplete: fetch the missing files.")
        _no_folders(files)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(_no_safetensors(folder))
    _no_folders(files)
    return files


def _no_folders(files: list[Path]) -> None:
    """Refuse a weights name that is a folder (or another non-file): read as a file, it failed the import and a
    build with a bare "[Errno 21] Is a directory"."""
    if odd := [f for f in files if not f.is_file()]:
        raise CheckpointError(f"{odd[0]} is a folder, not a safetensors file: the model's weights are not there (an "
                              "archive unpacked into a folder of the file's name, or a copy that went wrong?). Put "
                              f"the model's {odd[0].name} file itself in its place, then try again."
                              if odd[0].is_dir() else
                              f"{odd[0]} is not a regular file, so it cannot be read as safetensors weights: put the "
                              f"model's {odd[0].name} file itself in its place, then try again.")


def _no_safetensors(folder: Path) -> str:
    """What to do about a folder without safetensors: other weights (pickle, GGUF) are converted by an import; with
    none at all, an import fails too (backend/registry.py refuses it), so only copying the weights in helps."""
    others = sorted(f.name for ext in OTHER_WEIGHTS for f in folder.glob(f"*{ext}") if f.name not in NOT_WEIGHTS)
    if others:
        return (f"No safetensors weights in {folder}, only {', '.join(others[:3])}. Import the model first (Models "
                "page or `python -m backend models import`; .bin/.pt need 'allow pickle'), which converts them to "
                "safetensors, then use the imported model.")
    return (f"No safetensors weights in {folder}, nor any other weight file: the download or copy is incomplete. "
            "Copy the model's .safetensors files into it.")


def open_checkpoint(folder: Path) -> dict[str, TensorRef]:
    """Map every tensor name of a model folder to where its bytes are. Reads headers only.

    With an index, a tensor comes from the shard the index names (as transformers reads it), and a tensor the index
    names but its shard does not hold is an error: before, it was left out without a word, and a model built on
    the checkpoint lacked it (an untied lm_head, say, which transformers then initialises at random). Without an
    index, one name in two files is an error: which copy is the model's cannot be told."""
    folder = Path(folder)
    weight_map = _weight_map(folder)
    tensors: dict[str, TensorRef] = {}
    for file in weight_files(folder):
        header, start = read_header(file)
        for name, info in header.items():
            if weight_map is not None and name in weight_map and folder / weight_map[name] != file:
                continue  # a stale copy: the index puts this tensor in another shard
            if name in tensors:
                raise CheckpointError(f"{folder}: tensor {name!r} is in both {tensors[name].file.name} and "
                                      f"{file.name}, and no {INDEX_NAME} says which is the model's. Remove the "
                                      "stale file.")
            lo, hi = info["data_offsets"]
            tensors[name] = TensorRef(file, name, info["dtype"], tuple(info["shape"]), start + lo, hi - lo)
    missing = [name for name in (weight_map or {}) if name not in tensors]
    if missing:
        raise CheckpointError(f"{folder}: {INDEX_NAME} names {len(missing)} tensor(s) that their shard does not "
                              f"hold ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}). The download or "
                              "export is incomplete or a shard was replaced: re-download or re-export it.")
    return tensors


def _copy_range(src_fd: int, dst_fd: int, offset: int, nbytes: int, tick: Callable[[int], None],
                src: Path | None = None) -> None:
    """Copy `nbytes` from `offset` of `src` (its open `src_fd`). The header was checked when the build was planned;
    a file that ends early now was cut short (or replaced) while the build read it, so the error names it: "Source
    file ended early" alone left the user to guess which of the source models to fetch again."""
    done = 0
    while done < nbytes:
        n = min(_CHUNK, nbytes - done)
        try:
            copied = os.copy_file_range(src_fd, dst_fd, n, offset + done)
        except OSError:  # filesystems without in-kernel copy: plain reads and writes
            copied = os.write(dst_fd, os.pread(src_fd, min(n, _BLOCK), offset + done))
        if copied == 0:
            raise CheckpointError(f"{src or 'A source file'} ended early while copying (byte {offset + done:,}): it "
                                  "was truncated or replaced while this job read it. Nothing was registered: restore "
                                  "or re-download that model, then run the job again.")
        done += copied
        tick(copied)


def _write_zeros(dst_fd: int, nbytes: int, tick: Callable[[int], None]) -> None:
    block = bytes(min(_BLOCK, nbytes))
    done = 0
    while done < nbytes:
        n = os.write(dst_fd, memoryview(block)[: min(len(block), nbytes - done)])
        done += n
        tick(n)


def plan_shards(tensors: list[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _shard_name(i: int, count: int) -> str:
    return "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"


def open_source(file: Path) -> int:
    """A source shard, opened when its first tensor is copied: one deleted or moved since the build was planned
    failed with a bare "[Errno 2] No such file or directory" that did not say the source model changed mid-job."""
    try:
        return os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing: it was deleted or moved while this job read its model. Nothing "
                              "was registered: restore or re-download that model, then run the job again.") from None


def _write_shard(path: Path, shard: list[OutTensor], tick: Callable[[int], None]) -> None:
    # Widest dtype first, as safetensors' own writer orders them ("sort by dtype to make sure alignment"): with the
    # data start padded to 8 bytes, every tensor then starts at a multiple of its element size. In plan order, an
    # F32 tensor after an odd-length BF16 or U8 one (an FP8 checkpoint's scalar scales) started at an odd address,
    # and torch mapped it misaligned (data_ptr() % 4 == 1). Stable: a one-dtype model keeps the plan's order.
    shard = sorted(shard, key=lambda t: -DTYPE_SIZES.get(t.dtype, 1))
    header: dict = {"__metadata__": {"format": "pt"}}
    pos = 0
    for t in shard:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads the header to 8 bytes
    src_fds: dict[Path, int] = {}
    try:
        with open(path, "wb") as out:
            out.write(struct.pack("<Q", len(raw)) + raw)
            out.flush()
            dst = out.fileno()
            for t in shard:
                if t.make is not None:
                    written = 0
                    for chunk in t.make():
                        view = memoryview(chunk).cast("B")
                        size = len(view)
                        while view:  # os.write may write less than asked
                            view = view[os.write(dst, view):]
                        written += size
                        tick(size)
                    if written != t.nbytes:
                        raise ValueError(f"{t.name}: produced {written} bytes, expected {t.nbytes}.")
                    continue
                if t.source is None:
                    _write_zeros(dst, t.nbytes, tick)
                    continue
                if t.source.file not in src_fds:
                    src_fds[t.source.file] = open_source(t.source.file)
                _copy_range(src_fds[t.source.file], dst, t.source.offset, t.nbytes, tick, t.source.file)
    finally:
        for fd in src_fds.values():
            os.close(fd)


def write_checkpoint(tensors: Iterable[OutTensor], out_dir: Path, max_shard_bytes: int = 2 << 30,
                     progress: Callable[[float, str], None] | None = None, workers: int | None = None) -> list[Path]:
    """Write `tensors` as (sharded) safetensors with an index into `out_dir`. Returns the files written.

    Shards are independent files, so they are written by `workers` threads at once (default: one per core, at
    most 4); the copies run in the kernel and release the GIL, so two cores copy about twice as fast as one.
    """
    tensors = list(tensors)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("Duplicate tensor names in the output plan: this is a bug in the layer plan.")
    total = sum(t.nbytes for t in tensors)
    shards = plan_shards(tensors, max_shard_bytes)
    lock = threading.Lock()
    written = 0
    last_report = -1.0

    def tick(n: int) -> None:
        nonlocal written, last_report
        with lock:
            written += n
            frac = written / total if total else 1.0
            if progress and frac - last_report >= 0.01:
                last_report = frac
                progress(frac, f"writing weights: {human_bytes(written)} / {human_bytes(total)}")

    paths = [Path(out_dir) / _shard_name(i, len(shards)) for i in range(len(shards))]
    workers = max(1, min(workers or os.cpu_count() or 1, 4, len(shards)))
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(_write_shard, p, sh, tick) for p, sh in zip(paths, shards)]:
            future.result()  # re-raises the first failure
    if len(shards) > 1:
        weight_map = {t.name: p.name for p, sh in zip(paths, shards) for t in sh}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (Path(out_dir) / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return paths
