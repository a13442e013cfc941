"""The model, tokenizer, trl config and trainer of a training job (backend/train_entry.py), and the FLOPs a step
of it computes per token (its MFU)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from backend import perf
from backend.train_job import CUDA, weights_dtype

def load_model(path: str, attention: str | None = None):
    """bf16 on CUDA, float32 on a CPU; attention: perf's choice (None: transformers' default). trust_remote_code off,
    said: left to decide, transformers asks on a terminal whether to run a remote-code model's own code."""
    kwargs = {"dtype": weights_dtype(), "trust_remote_code": False}
    if attention:
        kwargs["attn_implementation"] = attention
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def load_tokenizer(path: str):
    """The model's tokenizer (trust_remote_code off, as load_model); one without a pad token pads with EOS."""
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def make_config(spec, run_dir: Path, has_eval: bool, r: perf.Resolved | None = None):
    """trl's config for the spec; r: backend/perf.py's choices (default: resolved for this machine)."""
    from trl import DPOConfig, SFTConfig

    r = r or perf.resolve(spec, CUDA)

    common = dict(
        output_dir=str(run_dir / "checkpoints"), max_steps=spec.max_steps, per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=spec.weight_decay, logging_steps=spec.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=2,
        eval_strategy="steps" if has_eval else "no", eval_steps=spec.eval_steps if has_eval else None,
        # trl defaults bf16 and gradient checkpointing on; on a CPU neither helps, so both follow the hardware.
        bf16=CUDA, fp16=False, use_cpu=not CUDA, activation_checkpointing=spec.gradient_checkpointing,
        report_to=list(spec.report_to) or "none", run_name=run_dir.name,  # trackers: off unless the spec asks
        seed=spec.seed, max_length=spec.max_length, disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen="all",
        # backend/perf.py's choices; "regional" compilation is applied to the layers in main(), not here
        use_liger_kernel=r.liger, torch_compile=r.compile == "full", **({"optim": r.optim} if r.optim else {}),
    )
    if spec.kind == "dpo":
        return DPOConfig(beta=spec.beta, loss_type=[spec.loss_type], precompute_ref_log_probs=bool(r.precompute_ref),
                         **common)
    # trl's default "bfd" is padding-free and needs flash-attention kernels to be fast; with sdpa it measured six
    # times slower on an H200 (trl 1.16, 1.1B Llama shape, sequence 2048: 7.6k vs 37.5k tokens/s) — perf.resolve
    # picks it only with a flash kernel.
    # CPT packs with "bfd_split" (perf.resolve): "bfd" cuts every document at max_length; SFT keeps "bfd": a
    # conversation cut in two teaches its second half without its question.
    # completion_only_loss None (the spec's auto) is trl's own default: the completion alone when the rows are
    # prompt/completion (load_rows made them so for prompt/completion files), every token of conversations
    return SFTConfig(packing=r.packing, packing_strategy=r.packing_strategy, padding_free=r.padding_free,
                     dataset_text_field="text", completion_only_loss=getattr(spec, "completion_only_loss", None)
                     if spec.kind == "sft" else None, **common)


def build_trainer(spec, model, ref_model, tok, args, train, evals, callbacks):
    from trl import DPOTrainer, SFTTrainer

    peft_config = None
    if spec.lora:
        from peft import LoraConfig

        targets = spec.lora.target_modules
        peft_config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                                 target_modules=targets if targets == "all-linear" else targets.split(","),
                                 task_type="CAUSAL_LM")
    if spec.kind == "dpo":
        # The reference is passed explicitly (trl would reload it from config._name_or_path otherwise); with LoRA
        # the frozen base with adapters disabled is the reference.
        return DPOTrainer(model=model, ref_model=None if spec.lora else ref_model, args=args, train_dataset=train,
                          eval_dataset=evals, processing_class=tok, callbacks=callbacks, peft_config=peft_config)
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tok,
                      callbacks=callbacks, peft_config=peft_config)


def reference_each_step(spec, trainer) -> bool:
    """Whether trl's DPO runs the reference forward in every step (its log-probs not precomputed)."""
    return spec.kind == "dpo" and not getattr(trainer.args, "precompute_ref_log_probs", False)


def model_flops_per_token(spec, trainer) -> float:
    """FLOPs of a training step per token (what MetricsCallback's `mfu` counts): perf.flops_per_token of the model
    as it trains (with LoRA, peft's adapters trainable beside the frozen base), and in DPO without precomputed
    reference log-probs the reference's forward on the same tokens (trl's _compute_loss; with LoRA the base with its
    adapters off). Left out before, such a DPO run's MFU read 6/8 of what the GPU did."""
    m = trainer.model
    adapters = m.num_parameters(only_trainable=True) if spec.lora else None
    flops = perf.flops_per_token(m.config, m.num_parameters(), spec.max_length, adapters)
    if reference_each_step(spec, trainer):
        flops += perf.forward_flops_per_token(m.config, m.num_parameters() - (adapters or 0), spec.max_length)
    return flops
