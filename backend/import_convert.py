"""A model import's conversions, each into a new temporary folder that registry._finish moves into the workspace and
registers (or removes): a GGUF file dequantised, pickle weights read with weights_only=True, a Hub repo's download.
No model's code runs: trust_remote_code is never True.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Callable

from backend.import_checks import (TOKENIZER_FILES, RegistryError, _cut_short_message, _gguf_cut_short,
                                   _pickle_weights, missing_tokenizer, tokenizer_problem)
from backend.modelinfo import float32_shortest, inspect_model
from backend.safetensors_stream import NOT_WEIGHTS, CheckpointError
from storage import db

Progress = Callable[[float, str], None]


def gguf_to_folder(path: Path, progress: Progress) -> Path:
    """A new temporary folder holding GGUF file `path` dequantised through transformers and saved as float32
    safetensors, with its tokenizer and generation config (registry.import_gguf registers it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.05, f"reading {path.name} (about 15 s for a 135M model)")
    # Read from a folder holding only a link to the file: from_pretrained(FOLDER, gguf_file=F) also reads FOLDER's
    # tokenizer_config.json, so another model's files beside a download (~/Downloads) gave the import their chat
    # template and auto_map, and with trust_remote_code unset transformers asked on a terminal whether to run that
    # code (and failed the import anywhere else).
    alone = db.new_tmp("gguf-src")
    try:
        try:
            # named .gguf in lower case: transformers tells a GGUF checkpoint by `.endswith(".gguf")`
            # (modeling_utils), and a `model.GGUF` is one too (import_checks reads suffixes in any case)
            link = alone / f"{path.stem}.gguf"
            link.symlink_to(path.resolve())
            # the link's absolute path, never its bare name: transformers' model loader takes a gguf_file that is a
            # file relative to the process's working folder first (modeling_utils._get_resolved_checkpoint_files,
            # `os.path.isfile(gguf_file)`), so a file of the same name there was read as the weights, beside this
            # file's config and tokenizer
            gguf_file = str(link)  # absolute: db.workspace() is resolved
        except OSError:  # a workspace that holds no links (exFAT, SMB): the file's absolute path, joined to the
            gguf_file = str(path.resolve())  # empty folder, is itself (os.path.join), and the folder stays empty
        tok = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_file, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=gguf_file, dtype=torch.float32,
                                                     trust_remote_code=False)
    except Exception as exc:  # gguf raises assorted errors for corrupt or unsupported files
        if _gguf_cut_short(path):  # those errors (struct, numpy reshape) then say nothing a user can act on
            raise RegistryError(_cut_short_message(path)) from exc
        raise RegistryError(f"Could not read GGUF file {path}: {str(exc).replace(str(alone), str(path.parent))}"
                            ) from exc
    finally:
        shutil.rmtree(alone, ignore_errors=True)
    # A model loaded from GGUF refuses save_pretrained and training until its quantizer is detached.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    progress(0.6, "writing safetensors")
    tmp = db.new_tmp("import")
    try:  # a full disk left the partial weights in workspace/.tmp until the worker's next start
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tok = _keep_the_files_tokens(tmp, path, tok, model.get_input_embeddings().num_embeddings)
        _config_as_its_source(tmp, type(model.config), tok.unk_token_id)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, tmp)
        raise
    return tmp


def _config_as_its_source(folder: Path, config_class: type, unk_id: int | None) -> None:
    """Write the config.json that a GGUF import saved in `folder` as the model the file was made from has it. GGUF
    stores float settings as float32, and transformers reads them so (integrations/ggml.py _gguf_parse_value):
    rms_norm_eps 1e-05 came back as 9.999999747378752e-06; each float that is a float32 value is written as the
    shortest decimal of that float32 (1e-05), as the source wrote it. transformers' loader also writes the file's
    tokenizer.ggml.unknown_token_id into the config as unk_token_id, a field no Llama/Qwen2/... config class has:
    dropped where the saved tokenizer's unk token is that id (the tokenizer says it, as the source's does). Both made
    a merge of the import with its source refused as "the models differ in architecture (config: rms_norm_eps:
    1e-05 vs 9.999999747378752e-06; unk_token_id: None vs 0)"."""
    import dataclasses
    import json

    file = folder / "config.json"
    config = float32_shortest(json.loads(file.read_text(encoding="utf-8")))
    fields = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    if "unk_token_id" not in fields and unk_id is not None and config.get("unk_token_id") == unk_id:
        del config["unk_token_id"]
    file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _keep_the_files_tokens(folder: Path, path: Path, tok, rows: int):
    """Leave tokenizer `tok`, read from GGUF file `path` and saved in `folder`, with the tokens the file holds, and
    refuse one with an id past the embedding's `rows`; returns the tokenizer as saved. transformers builds a byte-level
    (gpt2) GGUF vocabulary with GPT2Tokenizer (integrations/gguf/gguf_tokenizer_mapping.py byte_level_tokenizer), whose
    unk/bos/eos default to "<|endoftext|>"; a file without that token (every Llama-3 GGUF) got it appended as a special
    token at id len(vocab), one past the embedding: a text holding it failed training with "index out of range", and a
    merge with the model the file was made from was refused as another vocabulary. A sentencepiece file without <unk>,
    <s> or </s> gets those the same way (LlamaTokenizer's defaults)."""
    import json

    # the file's tokens: its token list, all of it the vocabulary of the tokenizer's model, at the list's indices; a
    # token transformers added beyond them is no token of the file
    held = max(tok.backend_tokenizer.get_vocab(with_added_tokens=False).values()) + 1
    file = folder / "tokenizer.json"
    if len(tok) > held and file.is_file():
        data = json.loads(file.read_text(encoding="utf-8"))
        added = {t["content"] for t in data.get("added_tokens", []) if t["id"] >= held}
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < held]
        file.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        config = folder / "tokenizer_config.json"
        if config.is_file():  # a special token naming a dropped one would be added again on load
            settings = json.loads(config.read_text(encoding="utf-8"))
            for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
                if settings.get(key) in added:
                    settings[key] = None
            config.write_text(json.dumps(settings, ensure_ascii=False, indent=2), encoding="utf-8")
        # read again as training and chat will (AutoTokenizer takes the class tokenizer_config.json names): 1.5 s for
        # a 49k vocabulary, so only where the files changed
        tok = type(tok).from_pretrained(folder)
    if len(tok) > rows:
        past = [t for t, i in sorted(tok.get_vocab().items(), key=lambda x: x[1]) if i >= rows]
        raise RegistryError(f"{path.name}'s tokenizer has {len(tok)} tokens but its embedding only {rows} rows: "
                            f"token ids {rows}…{len(tok) - 1} ({', '.join(map(repr, past[:5]))}) would index past it "
                            "in training and chat. The file's vocabulary and weights disagree, so nothing was "
                            "registered: import another conversion of the model (or its safetensors folder).")
    return tok


def _raise_if_disk_full(exc: BaseException, tmp: Path) -> None:
    """An import's conversion that filled the disk says so, as a build does (backend/outputs.py building): the bare
    "[Errno 28] No space left on device" named neither the folder nor what was left behind."""
    from backend.outputs import disk_full

    if disk_full(exc):
        raise OSError(errno.ENOSPC, f"Disk full while writing the imported model to {tmp.parent} (No space left on "
                                    "device): the partial files were removed and nothing was registered. Free some "
                                    "space, then import again.") from exc


def pickle_to_folder(folder: Path, progress: Progress) -> Path:
    """A new temporary folder holding the pickle weights of `folder` read with torch.load(weights_only=True) and
    saved as safetensors, beside its config and companions (registry.import_folder registers it)."""
    import torch
    from safetensors.torch import save_file

    tmp = db.new_tmp("import")
    try:
        state: dict = {}
        files = _pickle_weights(folder, ".bin") or _pickle_weights(folder, ".pt")
        if not files:
            raise RegistryError(f"{folder} holds no pickle weights file (pytorch_model*.bin), only "
                                f"{', '.join(sorted(NOT_WEIGHTS & {p.name for p in folder.iterdir()}))}.")
        for i, f in enumerate(files):
            progress(i / len(files), f"reading {f.name} with weights_only=True")
            try:
                loaded = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise RegistryError(f"{f} could not be read safely ({exc}). It may hold code, or be corrupt.")
            # a training script's checkpoint ({"model": state_dict, "epoch": 3}) failed below on .data_ptr() with
            # an AttributeError and a traceback
            if not isinstance(loaded, dict):
                raise RegistryError(f"{f} holds a {type(loaded).__name__}, not a state dict of tensors. Save the "
                                    "model's state_dict(), or save_pretrained() it, and import that.")
            if other := [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]:
                raise RegistryError(f"{f} is a checkpoint with more than the weights (not tensors: "
                                    f"{', '.join(map(repr, other[:5]))}). Save the model's state_dict() alone, or "
                                    "save_pretrained() it, and import that.")
            state.update(loaded)
        # safetensors refuses tensors that share memory. The very same view twice (tied weights) is stored once;
        # other views of one storage (a fused qkv split with torch.split) are different weights: each gets a copy.
        seen: set[tuple] = set()
        storages: set[int] = set()
        for k in list(state):
            t = state[k]
            view = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
            if view in seen:
                del state[k]
                continue
            if t.untyped_storage().data_ptr() in storages:
                state[k] = t.clone()
            seen.add(view)
            storages.add(t.untyped_storage().data_ptr())
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
        from backend.outputs import copy_companions

        for keep in ("config.json", "README.md"):  # a missing config.json is _finish's error to report
            if (folder / keep).is_file():
                shutil.copy2(folder / keep, tmp / keep)
        copy_companions(folder, tmp)  # not a Trainer folder's adapter_config.json, trainer_state.json, ...
    except BaseException as exc:  # a Ctrl-C too (as gguf_to_folder): it left the partial weights in workspace/.tmp
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, tmp)
        raise
    return tmp


# *.py: a remote-code model's modules, which its auto_map names; without them the folder (and every model built from
# it: outputs.copy_companions) names classes it does not hold. Fetched to be kept as files, never imported (nothing
# here passes trust_remote_code=True); after the download only those the auto_map names stay (_keep_named_modules).
# README.md, LICENSE*, NOTICE*, USE_POLICY*: the model's card, whose metadata gives its licence (hubpush.card_license),
# and the licence files builds copy on (outputs.copy_companions): without them a pushed card said "The licence is
# not known".
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*", "*.tiktoken", "*.py",
                "README.md", "LICENSE*", "NOTICE*", "USE_POLICY*"]
# Matched by HUB_PATTERNS but never fetched: a LoRA adapter's files kept beside merged full weights (with
# adapter_config.json in the folder, transformers and peft load it as an adapter of another base model and fail on
# the missing adapter weights), and everything in a subfolder (checkpoint-*/, original/): the model is the repo's
# root, which is all transformers reads.
HUB_SKIP = ["adapter_config.json", "adapter_model*", "*/*"]
# Mistral's own format (consolidated.safetensors, for mistral-inference) published beside the transformers weights:
# transformers never reads it, and fetching it too doubled the download. Skipped only when the repo's root holds
# the transformers weights (one file, or shards with their index), so a repo with nothing else still fails as such.
HUB_DUPLICATES = ["consolidated*"]
TRANSFORMERS_WEIGHTS = {"model.safetensors", "model.safetensors.index.json"}


def hub_to_folder(repo_id: str, revision: str | None, progress: Progress) -> tuple[Path, str]:
    """(a new temporary folder holding Hub repo `repo_id`'s safetensors, config and tokenizer at `revision` (never
    pickles), and the modules its auto_map names, refused unless it is a model with a tokenizer; the commit sha it
    was downloaded at, which registry.import_hub records: a branch moves, and the model's card had no way to say
    which weights it holds)."""
    from huggingface_hub import snapshot_download

    progress(0.02, f"downloading {repo_id}")
    tmp = db.new_tmp("hub")
    try:
        commit, skip = _hub_commit(repo_id, revision)
        snapshot_download(repo_id, revision=commit, local_dir=tmp, allow_patterns=HUB_PATTERNS, ignore_patterns=skip)
    except RegistryError:  # what the repo holds, said before any download
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # HTTP, offline and missing-file errors (OSErrors), and the transport's own (a dropped
        shutil.rmtree(tmp, ignore_errors=True)  # connection mid-file raises httpx's RemoteProtocolError)
        raise RegistryError(_hub_failure(repo_id, revision, exc)) from None
    except BaseException:  # anything else, an interrupt included: no half download left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    _keep_named_modules(tmp)
    if not any(tmp.glob("*.safetensors")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RegistryError(f"{repo_id!r} has no safetensors weights at its root; only those are downloaded from the "
                            "Hub (a LoRA adapter's adapter_model.safetensors is no model: merge it into its base "
                            "first).")
    try:
        inspect_model(tmp)
    except (CheckpointError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if missing_tokenizer(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RegistryError(f"{repo_id!r} has no tokenizer at its root (none of {', '.join(TOKENIZER_FILES)}): "
                            "training, evaluation and chat need one. Import the repo that publishes the model with "
                            "its tokenizer, or download both into a folder and import the folder.")
    if problem := tokenizer_problem(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RegistryError(problem.replace(str(tmp), repo_id))
    return tmp, commit


def _keep_named_modules(folder: Path) -> None:
    """Remove the downloaded .py files that no auto_map names (an endpoint's handler.py, a repo's scripts): what
    stays is what save_pretrained writes for a remote-code model (outputs.remote_modules: the modules named and
    those they import relatively), read as text, never imported."""
    from backend.outputs import AUTO_MAP_TOKENIZER_FILES, remote_modules

    named = set(remote_modules(folder, ("config.json", *AUTO_MAP_TOKENIZER_FILES)))
    for f in folder.glob("*.py"):
        if f not in named:
            f.unlink()


def _hub_commit(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """(the commit `revision` names now, the file patterns not to fetch from it). The download then asks for that
    very commit, so the file list that decided what to skip is the one downloaded."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=revision)
    files = {s.rfilename for s in info.siblings or []}
    if problem := _hub_weights_problem(repo_id, files):
        raise RegistryError(problem)
    return info.sha, HUB_SKIP + (HUB_DUPLICATES if files & TRANSFORMERS_WEIGHTS else [])


def _hub_weights_problem(repo_id: str, files: set[str]) -> str | None:
    """Why a Hub repo holding these files has no weights a Hub import takes (safetensors at its root), naming what it
    holds and what to do instead; None when it has them. Said before the download: a repo of .bin or .gguf files
    was downloaded for its config alone, huggingface_hub printed "No files matched allow_patterns", and the refusal
    spoke of LoRA adapters."""
    root = sorted(f for f in files if "/" not in f)
    if any(f.endswith(".safetensors") and not f.startswith("adapter_model") for f in root):
        return None
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    pickles = [f for f in root if f.endswith((".bin", ".pt")) and f not in NOT_WEIGHTS
               and not f.startswith("adapter_model")]
    local = f"hf download {repo_id} --local-dir {repo_id.split('/')[-1]}"
    if pickles:
        return (f"{repo_id!r} holds its weights only as pickle files ({', '.join(pickles[:3])}"
                f"{', …' if len(pickles) > 3 else ''}), which a Hub import never downloads: a pickle can run code "
                f"when loaded. Download the repo (`{local}`) and import that folder with --allow-pickle ('allow "
                "pickle' on the page), which reads them with torch.load(weights_only=True).")
    if ggufs:
        return (f"{repo_id!r} holds GGUF files ({', '.join(ggufs[:3])}{', …' if len(ggufs) > 3 else ''}), which a "
                f"Hub import does not download: download the one you want (`hf download {repo_id} {ggufs[0]} "
                f"--local-dir .`) and import that file.")
    if any(f.startswith("adapter_model") for f in root):
        return (f"{repo_id!r} holds a LoRA adapter (adapter_model.*), not a model: merge it into its base model "
                "first, then import the merged model.")
    return None  # no weights of any kind: the download's own checks say so


def _hub_failure(repo_id: str, revision: str | None, exc: Exception) -> str:
    """What stopped a Hub download and what to do: huggingface_hub's error types tell a missing repo, a gated one,
    a bad revision and a refused token apart from a network that is down."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    if isinstance(exc, GatedRepoError):  # a RepositoryNotFoundError too: first
        return (f"{repo_id!r} is gated on the Hugging Face Hub: accept its conditions on "
                f"{constants.ENDPOINT}/{repo_id} while logged in, then set HF_TOKEN to a token of that account.")
    if isinstance(exc, RepositoryNotFoundError):
        return f"{repo_id!r} is not a Hub model repo (or it is gated/private: set HF_TOKEN)."
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id!r} has no revision {revision!r} on the Hub: give a branch, tag or commit id it has."
    if isinstance(exc, HfHubHTTPError) and exc.response.status_code in (401, 403):
        return (f"The Hugging Face Hub refused the token in HF_TOKEN for {repo_id!r} (HTTP "
                f"{exc.response.status_code}): it is wrong, expired or lacks read access. Set HF_TOKEN to a valid "
                "token, or unset it for a public repo.")
    return (f"Could not download {repo_id!r} from the Hugging Face Hub: this machine seems to be offline or the Hub "
            f"is unreachable ({type(exc).__name__}). Download it elsewhere and import the folder instead.")
