"""One typed spec per kind of work. The page builds it, the CLI reads it from YAML, the runner stores it as JSON and
the tests construct it; validation lives here, once. Checks that need the model (such as the valid range of m for
its depth) live in the method's plan function and name the valid range."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backend.names import check_name, safe_name

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.I)


def _valid_name(cls, v: str | None) -> str | None:
    """Every spec's `name` field goes through the one check in backend/names.py (None: a default is derived)."""
    return v if v is None else check_name(v)


def parse_size(text: str) -> int:
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"shard_size {text!r} is not a size like 500MB or 2GB.")
    return int(float(m[1]) * 1000 ** "_KMGT".index((m[2] or "_").upper()))


class Resources(BaseModel):
    """What one process of a job asks the cluster for (Ray: the job's entrypoint, or each Ray Train worker). Ignored
    by the local worker, whose slots share this machine."""
    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1.0, ge=0, description="CPU cores")
    gpus: float = Field(0.0, ge=0, description="GPUs (fractions share one)")
    memory_gb: float | None = Field(None, gt=0, description="memory to reserve, GiB (default: none reserved)")
    custom: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {\"a100\": 1} "
                                     "for nodes started with `ray start --resources '{\"a100\": 4}'`")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resources: Resources = Field(default_factory=Resources, description="on a Ray cluster (DUS_RAY_ADDRESS): what "
                                 "the job asks for; a training job with ray_workers > 1: what each worker asks for")

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        # what the job does first, where it runs last
        return yaml.safe_dump({"kind": data.pop("kind"), **data, "resources": data.pop("resources")},
                              sort_keys=False, allow_unicode=True)


class SliceRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: int = Field(0, ge=0, le=1, description="0: the base model, 1: the second model")
    start: int = Field(ge=0, description="first layer kept")
    end: int = Field(gt=0, description="first layer NOT kept (half-open range)")


# The fields only one up-scaling method reads, with their command-line flags: given to another method they were
# ignored without a word (`--method llama-pro --m 4` built a llama-pro model, and the 4 was lost).
METHOD_ONLY_FIELDS = {"m": ("dus", "--m"), "slices": ("slices", "--slice"), "second": ("slices", "--second"),
                      "groups": ("llama-pro", "--groups")}


class UpscaleSpec(_Spec):
    kind: Literal["upscale"] = "upscale"
    base: str = Field(description="registered model name, or a folder with config.json and safetensors")
    method: Literal["dus", "slices", "llama-pro"] = "dus"
    m: int | None = Field(None, description="dus: layers removed from each copy; s = 2·(n-m)")
    slices: list[SliceRange] = Field(default_factory=list, description="slices: half-open ranges, stacked in order")
    second: str | None = Field(None, description="slices: an optional second source of the same architecture")
    groups: int | None = Field(None, description="llama-pro: number of groups, one identity block added per group")
    name: str | None = Field(None, description="name to register; default derived from base and method")
    out: str | None = Field(None, description="folder to write the model to; default workspace/models/NAME")
    shard_size: str = Field("2GB", description="largest safetensors shard")

    _name = field_validator("name")(_valid_name)

    @field_validator("shard_size")
    @classmethod
    def _shard(cls, v: str) -> str:
        if parse_size(v) < 1000:
            raise ValueError("shard_size must be at least 1KB.")
        return v

    @model_validator(mode="after")
    def _method_fields(self) -> "UpscaleSpec":
        for field, (method, flag) in METHOD_ONLY_FIELDS.items():
            if self.method != method and getattr(self, field) not in (None, []):
                raise ValueError(f"{field} ({flag} on the command line) is for method {method!r}; method "
                                 f"{self.method!r} does not use it: leave it out, or choose method {method!r}.")
        if self.method == "dus" and self.m is None:
            raise ValueError("method 'dus' needs m, the number of layers removed from each copy.")
        if self.method == "dus" and self.m < 1:
            raise ValueError(f"m={self.m}: m must be at least 1.")
        if self.method == "slices" and not self.slices:
            raise ValueError("method 'slices' needs slices: a list of half-open ranges {source, start, end}.")
        if self.method == "slices" and any(s.source == 1 for s in self.slices) and not self.second:
            raise ValueError("slices use source 1 but no second model is given.")
        if self.method == "llama-pro" and not self.groups:
            raise ValueError("method 'llama-pro' needs groups, the number of identity blocks to insert.")
        return self

    def default_name(self) -> str:
        base = _short(self.base)
        if self.method == "slices" and any(s.source == 1 for s in self.slices):  # the models joined, as a merge's:
            base += f"_{_short(self.second)}"  # the same ranges of two other second models had one name
        tag = {"dus": f"dus-m{self.m}", "llama-pro": f"pro-g{self.groups}",
               "slices": "slices-" + "_".join(f"{s.source}.{s.start}-{s.end}" for s in self.slices)}[self.method]
        return _tagged(base, tag)


def _short(model: str) -> str:
    """A model reference as a default name starts it: a folder's own name, a registered name as it is."""
    return Path(model).name if "/" in model else model


def _tagged(base: str, tag: str) -> str:
    """`BASE-TAG` as a valid name (a folder or Hub-style base may hold any character), the tag kept whole:
    safe_name's cut at 100 characters took it off a long base (an up-scale by m 4 and by m 8, a dpo and a dus, of
    one model got one name; at 100 characters the base's own). A base too long for both is cut and given a digest of
    itself, a tag too long (many slices) a digest of itself, so different specs keep different names."""
    if len(tag) > 60:
        tag = f"{tag[:53].rstrip(SEPARATORS)}-{hashlib.sha1(tag.encode()).hexdigest()[:6]}"
    short = safe_name(base, fallback="")
    if len(short) + 1 + len(tag) > 100:
        short = f"{short[:100 - len(tag) - 8].rstrip(SEPARATORS)}-{hashlib.sha1(base.encode()).hexdigest()[:6]}"
    return safe_name(f"{short}-{tag}")


class ImportSpec(_Spec):
    kind: Literal["import"] = "import"
    target: str = Field(description="'builtin', a model folder, a .gguf file, or a Hub id owner/name")
    name: str | None = Field(None, description="name to register; default derived from the target")
    allow_pickle: bool = Field(False, description="convert pickle (.bin) weights with torch.load(weights_only=True)")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give what to import: 'builtin', a folder, a .gguf file or a Hub id (owner/name).")
        return v.strip()

    _name = field_validator("name")(_valid_name)


class PushSpec(_Spec):
    """Upload a registered model to a Hugging Face Hub model repo with a card of its lineage and scores
    (backend/hubpush.py)."""
    kind: Literal["push"] = "push"
    model: str = Field(description="registered model name")
    repo: str = Field(description="the Hub model repo, owner/name (made if missing)")
    private: bool = Field(False, description="make the repo private if this push makes it")
    license_name: str | None = Field(None, description="for a licence `other` whose base models name none: the id "
                                                       "the card gives it (the Hub's license_name, e.g. my-license-1.0)")
    license_link: str | None = Field(None, description="for a licence `other`: its file in the repo (LICENSE) or "
                                                       "its URL (the Hub's license_link)")

    @field_validator("license_name", "license_link")
    @classmethod
    def _licence(cls, v: str | None) -> str | None:
        return (v.strip() or None) if v is not None else None

    @field_validator("license_name")
    @classmethod
    def _licence_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", v):
            raise ValueError(f"{v!r}: a licence name is an id of lower-case letters, digits, '.' and '-' "
                             "(e.g. my-license-1.0), as the Hub's model card spec asks.")
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", v.strip()):
            raise ValueError(f"{v!r}: a Hub repo id is owner/name, e.g. your-name/my-model.")
        return v.strip()


class DataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="builtin:NAME, a local .jsonl/.json/.csv/.parquet/.txt file, or a Hub id")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False,  # inf passed, and the job's mix failed on int(inf)
                          description="1 = the whole set once, 0.5 = a random half, 2 = twice")
    sample_by: Literal["line", "paragraph", "document"] = Field(
        "line", description="what a row of a .txt file is (the source's, or a mix's .txt members): a line, a paragraph "
                            "(lines up to a blank one) or the whole file; each row is one example, which continued "
                            "pretraining ends with the end-of-text token. Other files have rows of their own")


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str = Field("all-linear", description="peft target_modules: all-linear or comma-separated names")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: str) -> str:
        """"q_proj,v_proj" from "q_proj, v_proj": the trainer splits at the commas alone, and peft matched no module
        to " v_proj", so v_proj got no adapter without a word (the memory plan, which strips, counted it)."""
        names = [t.strip() for t in v.split(",")]
        if not all(names):
            raise ValueError(f"{v!r}: all-linear, or module names separated by commas (q_proj,v_proj).")
        return ",".join(names)


class PerfOptions(BaseModel):
    """How a training job uses the hardware. "auto" (None) takes the default measured for the device: on a CPU every
    option stays off (float32, eager PyTorch, plain AdamW), as before these options existed."""
    model_config = ConfigDict(extra="forbid")
    compile: Literal["auto", "off", "regional", "full"] = Field(
        "auto", description="torch.compile: regional = each decoder layer (compiled once, reused), full = the model; "
                            "auto: regional with CUDA, off on a CPU")
    liger: bool | None = Field(None, description="Liger kernels (fused RMSNorm, SwiGLU, RoPE, linear cross-entropy); "
                                                 "auto: on with CUDA when liger-kernel is installed")
    optimizer: Literal["auto", "adamw", "adamw_fused", "adamw_8bit"] = Field(
        "auto", description="auto: fused AdamW with CUDA, AdamW on a CPU; adamw_8bit (bitsandbytes) quarters the "
                            "optimizer states")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        "auto", description="attention kernel; auto: sdpa")
    packing_strategy: Literal["auto", "wrapped", "bfd"] = Field(
        "auto", description="sft/cpt packing: wrapped (full rows, any attention) or bfd (padding-free: needs a "
                            "flash-attention kernel to be fast); auto: bfd with CUDA and flash attention, else wrapped")


class _TrainSpec(_Spec):
    # beta: .inf or weight_decay: .inf passed; the run logged a loss of 0 and registered a model of NaN weights
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(description="registered model name, or a model folder")
    data: list[DataSource] = Field(min_length=1, description="weighted mix of sources (SFT v1–v4 style)")
    eval_data: DataSource | None = Field(None, description="held-out set; default: eval_fraction of the data")
    eval_fraction: float = Field(0.1, ge=0, le=0.5, description="share of the data held out when no eval_data")
    reference_model: str | None = Field(None, description="also score this model on the held-out set (cpt: "
                                                           "defaults to the up-scaled model's parent)")
    max_steps: int = Field(30, ge=1, le=10_000_000, description="optimizer steps (a typo like 10**12 would never "
                                                                 "end: refused)")
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(2, ge=1, description="per device")
    grad_accum: int = Field(1, ge=1, description="micro-batches whose gradients add up to one optimizer step: each "
                            "step sees batch size × this × processes rows (gradient_accumulation_steps)")
    max_length: int = Field(256, ge=16, description="tokens per sequence (prompt + completion for DPO)")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="how the learning rate changes after the warmup (transformers' lr_scheduler_type)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps over which the learning rate rises "
                                "from 0 (0: no warmup)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay (0: none)")
    logging_steps: int = Field(1, ge=1)
    eval_steps: int = Field(10, ge=1)
    save_steps: int = Field(10, ge=1, description="checkpoint interval; a resumed job restarts from the last one")
    keep_checkpoints: bool = Field(False, description="keep the run's checkpoints (weights and optimizer states, "
                                                      "about 3× the model) after the model is registered")
    max_rows: int | None = Field(None, ge=1, description="use at most this many rows of each source")
    seed: int = Field(0, description="seeds the held-out split, the mix's shuffle and sampling, and the weights LoRA "
                      "starts from")
    lora: LoraSpec | None = Field(None, description="train LoRA adapters (peft) and merge them; default full")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory, about a third more compute (a larger micro-batch is faster)")
    perf: PerfOptions = Field(default_factory=PerfOptions, description="kernels, compilation, optimizer, packing")
    memory_check: bool = Field(True, description="refuse a job whose memory plan (backend/memplan/) does not fit "
                               "the visible GPUs (or this machine's RAM) before loading anything")
    report_to: list[Literal["tensorboard", "trackio", "mlflow", "wandb"]] = Field(
        default_factory=list, description="also log to these trackers (trl's report_to); off by default")
    num_processes: int = Field(1, ge=1, description="accelerate launch --num_processes (on this machine)")
    num_machines: int = Field(1, ge=1, description="accelerate launch --num_machines: machines taking part; each "
                              "runs the same spec with its own machine_rank (the Slurm script does this)")
    machine_rank: int = Field(0, ge=0, description="accelerate launch --machine_rank of this machine (0: the main)")
    main_process_ip: str | None = Field(None, description="accelerate launch --main_process_ip: address of rank 0")
    main_process_port: int | None = Field(None, ge=1, le=65535, description="port of rank 0 (default: a free one "
                                          "with one machine; 29500 with several)")
    ray_workers: int = Field(1, ge=1, description="on a Ray cluster: Ray Train workers (TorchTrainer, DDP), each "
                             "with `resources`; 1 = the job's own process trains")
    accelerate_config: str | None = Field(None, description="your accelerate config file (DDP, FSDP, DeepSpeed)")
    name: str | None = Field(None, description="name to register; default derived from model and kind")
    out: str | None = Field(None, description="folder to write the model to; default workspace/models/NAME")

    _name = field_validator("name")(_valid_name)

    @field_validator("accelerate_config")
    @classmethod
    def _accel(cls, v: str | None) -> str | None:
        if v and not Path(v).expanduser().is_file():
            raise ValueError(f"accelerate config file {v} does not exist.")
        return v

    @model_validator(mode="after")
    def _machines(self) -> "_TrainSpec":
        n = self.num_machines
        if self.machine_rank >= n:
            raise ValueError(f"machine_rank {self.machine_rank} with num_machines {n}: machine ranks are 0 to "
                             f"{n - 1}; give each machine its own rank (0 on the main one).")
        if n > 1 and not self.main_process_ip:
            raise ValueError(f"main_process_ip: with num_machines {n} every machine needs the address of machine "
                             "0 (its host name or IP, reachable from the others).")
        if n > 1 and self.ray_workers > 1:
            raise ValueError(f"num_machines {n} and ray_workers {self.ray_workers}: choose one way to use several "
                             "machines — accelerate launch on each (num_machines) or Ray Train (ray_workers).")
        if self.ray_workers > 1 and (self.num_processes > 1 or self.accelerate_config):
            raise ValueError(f"ray_workers {self.ray_workers} with num_processes {self.num_processes}"
                             + (" and accelerate_config" if self.accelerate_config else "") + ": Ray Train starts "
                             "the processes (one per worker; give each GPUs with resources.gpus), not accelerate "
                             "launch; set num_processes to 1 and leave accelerate_config empty.")
        return self

    def default_name(self) -> str:
        return _tagged(_short(self.model), self.kind)


class CptSpec(_TrainSpec):
    """Continued pretraining: causal LM on plain text, packed into full-length sequences."""
    kind: Literal["cpt"] = "cpt"
    packing: bool = True


class SftSpec(_TrainSpec):
    """Supervised fine-tuning on conversations or prompt/completion pairs (chat template applied by trl)."""
    kind: Literal["sft"] = "sft"
    packing: bool | None = Field(None, description="pack examples into full sequences; default: on with CUDA "
                                 "(SFT: only with a flash-attention kernel, whose padding-free packing keeps each "
                                 "conversation whole, or a perf.packing_strategy given)")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    completion_only_loss: bool = Field(False, description="loss on each conversation's last assistant reply only "
                                                          "(what comes before it is its prompt, not learned); "
                                                          "default: every token, trl's default for conversations")


class DpoSpec(_TrainSpec):
    """Direct preference optimisation on prompt/chosen/rejected; the reference is the starting model."""
    kind: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "apo_zero", "apo_down", "sigmoid_norm"] = "sigmoid"
    learning_rate: float = Field(5e-6, gt=0, lt=1)
    precompute_ref_log_probs: bool | None = Field(
        None, description="score the frozen reference once over the data before training (trl's precompute) "
                          "instead of a second forward pass every step; auto: on when the run sees every row at "
                          "least once")


class SynthMathSpec(_Spec):
    """SOLAR's synthetic math data: seeds rephrased; verified pairs become Synth. Math-Instruct (question ->
    answer, both rephrased) and Synth. Math-Alignment (prompt: rephrased question, chosen: rephrased answer,
    rejected: original answer)."""
    kind: Literal["synth-math"] = "synth-math"
    seeds: str = Field("generator", description="'generator' or a MATH / GSM8K .jsonl/.json file")
    num_seeds: int | None = Field(200, ge=1, le=10_000_000, description="generator: problems to make; files: at "
                                                                        "most this many")
    categories: list[str] = Field(default_factory=list, description="generator categories (default all)")
    levels: list[int] = Field(default_factory=list, description="1, 2, 3 (default all)")
    rephraser: str = Field("rules", description="rules | model:NAME | openai:BASE_URL")
    api_model: str | None = Field(None, description="openai: the model name the server serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    temperature: float = Field(0.0, ge=0, le=2)
    batch_size: int = Field(8, ge=1)
    benchmark: str | None = Field(None, description="contamination check: a benchmark file (e.g. GSM8K test)")
    ngram: int = Field(8, ge=3, le=30, description="contamination: n-gram length in words")
    overlap_threshold: float = Field(0.5, gt=0, le=1, description="flag pairs sharing this share of n-grams")
    include_flagged: bool = Field(False, description="export contamination-flagged pairs too")
    seed: int = 0
    name: str = Field("synth-math", description="prefix of the registered data sets")
    out: str | None = Field(None, description="folder for the files; default workspace/datasets/NAME")

    _name = field_validator("name")(_valid_name)

    @field_validator("rephraser")
    @classmethod
    def _rephraser(cls, v: str) -> str:
        if v != "rules" and not v.startswith(("model:", "openai:")):
            raise ValueError(f"rephraser {v!r}: use rules, model:NAME or openai:BASE_URL.")
        return v

    @model_validator(mode="after")
    def _api(self) -> "SynthMathSpec":
        if self.rephraser.startswith("openai:") and not self.api_model:
            raise ValueError("an openai: rephraser needs api_model, the model name the server serves.")
        if any(level not in (1, 2, 3) for level in self.levels):
            raise ValueError("levels are 1, 2 or 3.")
        return self


# mergekit 0.1.5's defaults per method: (normalize, rescale). linear normalizes its weights; TIES divides by the
# weights of the entries that agree with the elected sign; DARE rescales what it keeps by ‖delta‖₁ / ‖kept‖₁.
MERGE_DEFAULTS = {"average": (True, False), "slerp": (False, False), "task_arithmetic": (False, False),
                  "ties": (True, False), "dare_linear": (False, True), "dare_ties": (False, True)}
MERGE_ALIASES = {"linear": "average", "dare": "dare_linear"}  # mergekit's name; "dare" of specs saved before
_RELATIVE = ("task_arithmetic", "ties", "dare_linear", "dare_ties")
# The fields only some merge methods read, with those methods and the command-line flag: given to another method
# they were ignored without a word (`--method slerp --weights 0.2 0.8` merged a plain SLERP at t 0.5), as
# METHOD_ONLY_FIELDS was for upscale. lambda, rescale and normalize are checked in MergeSpec._method.
MERGE_METHOD_FIELDS = {"weights": (("average", *_RELATIVE), "--weights"), "t": (("slerp",), "--t"),
                       "filters": (("slerp",), None), "density": (_RELATIVE[1:], "--density"),
                       "seed": (("dare_linear", "dare_ties"), "--seed"), "base": (_RELATIVE, "--base")}


class MergeSpec(_Spec):
    """Merge candidates: SOLAR's Average(a, b) and SLERP, plus task arithmetic, TIES and DARE relative to a base —
    mergekit 0.1.5's definitions and defaults (average is its `linear`)."""
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)
    kind: Literal["merge"] = "merge"
    models: list[str] = Field(min_length=2, description="candidates: registered names or folders")
    method: Literal["average", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"] = "average"
    weights: list[float] | None = Field(None, description="average / task vectors: one per model (default 1 each)")
    normalize: bool | None = Field(None, description="divide by the sum of the weights (ties: of those that agree "
                                                     "with the elected sign); default: mergekit's for the method")
    rescale: bool | None = Field(None, description="ties / dare: multiply what is kept by ‖delta‖₁ / ‖kept‖₁; "
                                                   "default: on for dare, off for ties")
    lambda_: float = Field(1.0, alias="lambda", description="task_arithmetic / ties / dare: scales the merged "
                                                             "task vector")
    t: float | list[float] = Field(0.5, description="slerp: 0 = first model, 1 = second; a list is a schedule "
                                                    "interpolated along the depth")
    filters: dict[str, float | list[float]] = Field(default_factory=dict,
                                                    description="slerp: t per module, e.g. {self_attn: [0, 1], "
                                                                "mlp: [1, 0]} (first matching key wins)")
    base: str | None = Field(None, description="task_arithmetic / ties / dare: the common base model")
    density: float = Field(0.5, gt=0, le=1, description="ties / dare: share of each task vector kept")
    seed: int = Field(0, ge=0, description="dare: seed of the random drop mask (the same seed gives the same model)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="output dtype; task_arithmetic / ties / dare also compute in it, as mergekit's dtype")
    tokenizer_source: str | None = Field(
        None, description="the model whose tokenizer files, chat template and generation config the merge gets: "
                          "'base' or one of the models (default, mergekit's: the base when there is one, else the "
                          "first model; config.json always comes from that default)")
    chat_template: str | None = Field(
        None, description="'auto' (the template most of the models share, mergekit's auto) or a Jinja template; "
                          "default: the tokenizer source's own")
    name: str | None = None
    out: str | None = None
    shard_size: str = "2GB"

    _name = field_validator("name")(_valid_name)
    _shard = field_validator("shard_size")(UpscaleSpec._shard.__func__)

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v):
        # mergekit's test of a template (merge.py, _set_chat_template); its built-in names (chatml, llama3…) are
        # files of its package, not of this one
        if v is not None and v != "auto" and (len(v) < 20 or "{" not in v):
            raise ValueError(f"chat_template: 'auto' or a Jinja chat template, not {v[:40]!r} (a named template such "
                             "as chatml is mergekit's file: paste its text).")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _alias(cls, v):
        return MERGE_ALIASES.get(v, v) if isinstance(v, str) else v

    @property
    def resolved_normalize(self) -> bool:
        return MERGE_DEFAULTS[self.method][0] if self.normalize is None else self.normalize

    @property
    def resolved_rescale(self) -> bool:
        return MERGE_DEFAULTS[self.method][1] if self.rescale is None else self.rescale

    @model_validator(mode="after")
    def _method(self) -> "MergeSpec":
        import math

        relative = self.method in ("task_arithmetic", "ties", "dare_linear", "dare_ties")
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"weights: give one per model ({len(self.models)}), not {len(self.weights)}.")
        if self.weights is not None and not all(math.isfinite(w) for w in self.weights):
            raise ValueError("weights: finite numbers only.")
        for field, (methods, flag) in MERGE_METHOD_FIELDS.items():
            # given (a default the page's model_dump or a stored job's spec carries is not) and not the default
            default = type(self).model_fields[field].get_default(call_default_factory=True)
            if self.method not in methods and field in self.model_fields_set and getattr(self, field) != default \
                    and not (field == "density" and self.method == "task_arithmetic" and self.density == 1):
                # (task arithmetic keeps every entry: density 1 says what it does, as the tests compare DARE at 1)
                raise ValueError(f"{field}{f' ({flag} on the command line)' if flag else ''} is for "
                                 f"{' / '.join(methods)}; method {self.method!r} does not use it: leave it out, or "
                                 f"choose one of those methods.")
        if self.method == "average" and self.resolved_normalize and self.weights and sum(self.weights) == 0:
            raise ValueError("weights: they sum to zero, so they cannot be normalized by their sum; change a weight, "
                             "or untick \"Normalize by the weights' sum\" (normalize: false in a spec, "
                             "--no-normalize on the command line).")
        if self.method == "slerp" and len(self.models) != 2:
            raise ValueError("slerp merges exactly two models.")
        ts = [self.t] + list(self.filters.values())
        for v in ts:
            vals = v if isinstance(v, list) else [v]
            if not vals or any(not 0 <= x <= 1 for x in vals):
                raise ValueError("t: values between 0 and 1 (a schedule needs at least one value).")
        if relative and not self.base:
            raise ValueError(f"{self.method} is relative to a base: give base, the model the candidates started "
                             "from.")
        if not math.isfinite(self.lambda_):
            raise ValueError("lambda: a finite number.")
        if self.lambda_ != 1 and not relative:
            raise ValueError(f"lambda scales a task vector: use it with task_arithmetic, ties or dare, not "
                             f"{self.method}.")
        if self.rescale and self.method not in ("ties", "dare_linear", "dare_ties"):
            raise ValueError(f"rescale: only ties and dare drop entries to rescale, not {self.method}.")
        if self.normalize is not None and self.method == "slerp":
            raise ValueError("normalize: slerp has no weights to normalize.")
        if self.tokenizer_source == "base" and not self.base:
            raise ValueError("tokenizer_source: 'base' needs a base (task_arithmetic, ties, dare); name one of the "
                             "models instead.")
        if self.tokenizer_source not in (None, "base", self.base, *self.models):
            raise ValueError(f"tokenizer_source: {self.tokenizer_source!r} is not one of the models"
                             f"{' or the base' if self.base else ''}; give 'base' or one of "
                             f"{', '.join(self.models)}.")
        return self

    def default_name(self) -> str:
        """The candidates joined, then the method's tag (method, weights or t, density, and a digest of any other
        setting changed from its default: a schedule, filters, lambda…). Past DEFAULT_NAME_CHARS:
        the first candidate whole, what each other one adds to it, and the tag never cut (names.safe_name keeps 100
        characters, which cut the tag off long names, so an average and a SLERP of the same models got the same
        name); a name that still does not fit is cut and given a digest of the candidates, so different candidates
        keep different names."""
        short = [Path(m).name if "/" in m else m for m in self.models]
        tag = f"slerp{self.t if not isinstance(self.t, list) else 'sched'}" if self.method == "slerp" else \
            self.method + ("" if not self.weights else "-" + "-".join(f"{w:g}" for w in self.weights))
        if self.method in ("ties", "dare_linear", "dare_ties"):
            tag += f"-d{self.density:g}"
        if unnamed := self._unnamed_settings():  # settings the tag does not spell: two merges differing only
            tag += "-" + hashlib.sha1(json.dumps(unnamed, sort_keys=True).encode()).hexdigest()[:4]  # there differ
        full = safe_name(f"{'_'.join(short)}-{tag}")
        if len(full) <= DEFAULT_NAME_CHARS:
            return full
        models = "_".join([short[0]] + [distinct_tail(short[0], o) for o in short[1:]])
        room = max(DEFAULT_NAME_CHARS - len(tag) - 1, 16)
        if len(models) > room:
            digest = hashlib.sha1("\n".join(self.models).encode()).hexdigest()[:6]
            models = f"{models[:room - 7].rstrip(SEPARATORS)}-{digest}"
        return safe_name(f"{models}-{tag}")

    def _unnamed_settings(self) -> dict:
        """The settings of this method that change the merged weights, are not spelled in the name's tag and differ
        from their defaults (a SLERP schedule or filters, lambda, normalize, rescale, DARE's seed, dtype). The base is
        left out: a merge relative to another base is rare, and refused under a taken name rather than overwriting."""
        keys = {"slerp": ["t", "filters"], "average": ["normalize"],
                "task_arithmetic": ["lambda_", "normalize"]}.get(
            self.method, ["lambda_", "normalize", "rescale"] + (["seed"] if "dare" in self.method else []))
        value = {k: getattr(self, k) for k in keys + ["dtype"] if k != "t" or isinstance(self.t, list)}
        default = {k: type(self).model_fields[k].get_default(call_default_factory=True) for k in value}
        value.update({k: getattr(self, f"resolved_{k}") for k in ("normalize", "rescale") if k in value})
        default.update(zip(("normalize", "rescale"), MERGE_DEFAULTS[self.method]))  # None means the method's own
        return {k: v for k, v in value.items() if v != default[k]}


DEFAULT_NAME_CHARS = 60  # longer default merge names (82 characters) hid the scores table's numbers
SEPARATORS = "-_."


def distinct_tail(first: str, other: str) -> str:
    """What `other` adds to `first` after the start they share, cut at a separator, so a merge of a model and its
    fine-tune reads "…-dus-m8_cpt" for "…-dus-m8" and "…-dus-m8-cpt"; `other` whole when they share no word."""
    shared = os.path.commonprefix([first, other])
    if not (shared == first and other[len(shared):len(shared) + 1] in tuple(SEPARATORS)):
        shared = shared[:max(shared.rfind(c) for c in SEPARATORS) + 1]
    return other[len(shared):].lstrip(SEPARATORS) or other


EVAL_TASK_KINDS = ("perplexity", "synth-math", "qa", "mc", "gsm8k", "lm-eval")


class EvalSpec(_Spec):
    """Evaluate models on the same tasks; generations are kept for the length / hallucination analysis."""
    kind: Literal["eval"] = "eval"
    models: list[str] = Field(min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["perplexity", "synth-math"],
                             description="perplexity[:FILE], synth-math, qa[:FILE], mc:FILE, gsm8k:FILE, "
                                         "lm-eval:TASK")
    limit: int = Field(40, ge=1, description="items per task")
    max_new_tokens: int = Field(96, ge=8)
    samples: int = Field(1, ge=1, le=10, description="k > 1: k-1 extra sampled answers for a consistency score")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (bfloat16 + sdpa) when present")
    batch_size: int | None = Field(None, ge=1, description="generation batch; default: fitted to free GPU "
                                                           "memory, 8 on the CPU")
    ngram: int = Field(8, ge=3, le=30, description="held-out check: n-gram length in words")
    overlap_threshold: float = Field(0.3, gt=0, le=1, description="an item overlaps training data when this share "
                                                                  "of its n-grams is in the lineage's training sets")
    judge_url: str | None = Field(None, description="qa: grade replies with an OpenAI-compatible server "
                                                    "(http://host:port/v1); default: the rules")
    judge_model: str | None = Field(None, description="qa judge: the model name the server serves")
    judge_key_env: str = Field("OPENAI_API_KEY", description="qa judge: environment variable holding the key")
    judge_timeout: float = Field(60.0, gt=0, le=600, description="qa judge: seconds per request")
    skip_missing: bool = Field(False, description="leave out, and name, the models not registered when the job "
                                                  "starts (a recipe's evaluation: a stage that failed made none)")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one task.")
        for task in v:
            kind, _, arg = task.partition(":")
            if kind not in EVAL_TASK_KINDS:
                raise ValueError(f"task {task!r}: choose perplexity, synth-math, qa, mc:FILE, gsm8k:FILE or "
                                 "lm-eval:TASK.")
            if kind in ("mc", "gsm8k", "lm-eval") and not arg:
                raise ValueError(f"task {task!r} needs a file or task name after the colon.")
            if kind in ("mc", "gsm8k", "qa") and arg and not Path(arg).expanduser().is_file():
                # refused here, not queued to fail in the worker after the models were checked
                raise ValueError(f"task {task!r}: {arg} does not exist.")
        twice = sorted({t for t in v if v.count(t) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}.")  # shown as "tasks: listed twice: …"
        return v

    @model_validator(mode="after")
    def _judge(self) -> "EvalSpec":
        if self.judge_url and not self.judge_url.startswith(("http://", "https://")):
            raise ValueError(f"judge_url {self.judge_url!r}: give the server's base URL, such as "
                             "http://127.0.0.1:8000/v1.")
        if self.judge_url and not self.judge_model:
            raise ValueError("judge_model: a judge needs the model name its server serves.")
        return self

    def per_model(self) -> list["EvalSpec"]:
        """The same evaluation as one spec per model: independent jobs that run side by side on free slots or
        cluster nodes. Scores are stored per (model, task), so the tables read the same either way."""
        return [self.model_copy(update={"models": [m]}) for m in self.models]


TRAIN_KINDS = ("cpt", "sft", "dpo")
SPECS: dict[str, type[_Spec]] = {"upscale": UpscaleSpec, "import": ImportSpec, "cpt": CptSpec, "sft": SftSpec,
                                 "dpo": DpoSpec, "synth-math": SynthMathSpec, "merge": MergeSpec,
                                 "eval": EvalSpec, "push": PushSpec}


def spec_from_dict(data: dict) -> _Spec:
    kind = data.get("kind")
    if kind not in SPECS:
        raise ValueError(f"kind {kind!r} is not a kind of work; choose one of: {', '.join(SPECS)}.")
    return SPECS[kind].model_validate(data)


def load_spec(path: Path) -> _Spec:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}")
    except UnicodeDecodeError as exc:  # it said "'utf-8' codec can't decode byte 0x83 …" without naming the file
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): a "
                         "spec is a YAML file; save it as UTF-8.") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{path}: a spec is a mapping with a 'kind' field (one of: {', '.join(SPECS)}).")
    return spec_from_dict(data)


def explain(exc: ValidationError) -> str:
    """One line per problem, naming the field once: what pages and the CLI show instead of pydantic's dump. A
    message that starts with its field's name already (check_name's "name 'a/b': …") is not prefixed again. A field
    the spec does not have (a typo in a YAML file) gets the nearest field's name."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "upscale")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += _did_you_mean(exc.title, err["loc"])
        lines.append(f"{loc}: {msg}" if loc and not msg.startswith((f"{loc} ", f"{loc}:")) else msg)
    return "\n".join(lines)


def _did_you_mean(title: str, loc: tuple) -> str:
    """"; did you mean 'learning_rate'?" for an unknown field `loc[-1]` of the model named `title` (a
    ValidationError's title is its model's class name), or "" when no field's name is close: `learnig_rate: Extra
    inputs are not permitted` left the user to find the spelling in the docs. difflib's ratio of 0.65 keeps
    `model_name` → 'model' and `warmup` → 'warmup_ratio' but not `colour` → 'lora' (0.6)."""
    import difflib

    model = next((c for c in _backend_models(BaseModel) if c.__name__ == title), None)
    fields = _fields_at(model, loc[:-1]) if model else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.65)
    return f"; did you mean {close[0]!r}?" if close else ""


def _backend_models(root: type[BaseModel]):
    """The pydantic models this project defines (specs, their parts, recipes), found by walking the subclasses."""
    for c in root.__subclasses__():
        if c.__module__.startswith("backend."):
            yield c
        yield from _backend_models(c)


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names (as a YAML file spells them: aliases such as merge's `lambda`) of the model nested at `path`
    in `model` (`("lora",)`: LoraSpec's); list positions in the path are skipped."""
    for part in path:
        if isinstance(part, int):
            continue
        info = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _model_in(info.annotation) if info else None
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation) -> type[BaseModel] | None:
    """The model a field holds: `LoraSpec | None` and `list[DataSource]` hold LoraSpec and DataSource."""
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
