"""The training specs (continued pretraining, SFT, DPO) and their parts: data sources, LoRA, performance options
(re-exported by backend/specs.py, where the kinds are looked up)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.spec_base import _short, _Spec, _tagged, _valid_name

class DataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="builtin:NAME, a local .jsonl/.json/.csv/.parquet/.txt file, or a Hub id")
    # inf passed, and the job's mix failed on int(inf); 1e308 too (le: backend.data.MAX_REPEATS, checked when run)
    weight: float = Field(1.0, gt=0, le=10_000, allow_inf_nan=False,
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
    out: str | None = Field(None, description="folder to write the model to; default $DUS_WORKSPACE/models/NAME")

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
                             f"{n - 1}; give each machine its own rank (--machine-rank on the command line; 0 on the "
                             "main one).")
        if n > 1 and not self.main_process_ip:
            raise ValueError(f"main_process_ip: with num_machines {n} every machine needs the address of machine "
                             "0 (its host name or IP, reachable from the others: --main-process-ip on the command "
                             "line).")
        if n > 1 and self.ray_workers > 1:
            raise ValueError(f"num_machines {n} and ray_workers {self.ray_workers}: choose one way to use several "
                             "machines — accelerate launch on each (num_machines; --num-machines on the command line) "
                             "or Ray Train (ray_workers; --ray-workers).")
        if self.ray_workers > 1 and (self.num_processes > 1 or self.accelerate_config):
            raise ValueError(f"ray_workers {self.ray_workers} with num_processes {self.num_processes}"
                             + (" and accelerate_config" if self.accelerate_config else "") + ": Ray Train starts "
                             "the processes (one per worker; give each GPUs with resources.gpus), not accelerate "
                             "launch; set num_processes to 1 and leave accelerate_config empty (on the command line: "
                             "--num-processes 1, no --accelerate-config).")
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
    # None (auto) since s23: trl's default (SFTConfig.completion_only_loss=None), the completion alone for
    # prompt/completion data. Before, the default was False (every token of prompt/completion rows too); a spec saved
    # then stores completion_only_loss: false and keeps it.
    completion_only_loss: bool | None = Field(
        None, description="loss on each conversation's last assistant reply only (what comes before it is its "
                          "prompt, not learned); default (auto, trl's): on when every source is a prompt/completion "
                          "file, else every token (trl's default for conversations)")


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
