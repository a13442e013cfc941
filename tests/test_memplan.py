"""The memory plan (backend/memplan/) against real allocations: torch's MemTracker follows every tensor of real
training steps on the CPU (the job's step: trl's fused LM head, fused AdamW, set_to_none gradients), and the estimate
must land within 15 %. Plus exact parameter counts, peft's LoRA count, the refusal before loading, the CLI and the
Train page."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from backend import memplan, registry, runner
from backend.memplan import GiB, Setup, estimate, shape_from_config

SMALL = dict(hidden=256, inter=688, layers=4, heads=8, kv=4, vocab=2048, batch=2, seq=256)


def tracked_peak(hidden, inter, layers, heads, kv, vocab, batch, seq, dtype=torch.float32, dpo=False, ckpt=False,
                 lora=None, pad=False, tie=False, attn="sdpa", autocast=False, lora_dropout=0.05) -> tuple[int, object]:
    """Peak bytes MemTracker sees over a training step that has optimizer states (the second), and the config.
    autocast: the forward under torch.autocast(bfloat16), as accelerate runs a CUDA job's (mixed precision bf16)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      tie_word_embeddings=tie, attn_implementation=attn)
    model = LlamaForCausalLM(cfg).to(dtype)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as trl's SFTTrainer does
    ref = None
    if dpo:  # the frozen reference copy train_entry loads for DPO without LoRA
        ref = LlamaForCausalLM(cfg).to(dtype).requires_grad_(False)
        add_fused_lm_head(ref)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora, lora_alpha=2 * lora, lora_dropout=lora_dropout,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    x = torch.randint(0, vocab, (batch * (2 if dpo else 1), seq))
    mask = torch.ones_like(x)
    if pad:
        mask[:, -seq // 8:] = 0
    kw = dict(input_ids=x, labels=x.masked_fill(mask == 0, -100), fused_lm_head=True,
              **({"attention_mask": mask} if pad else {}))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward():
        if dpo:  # frozen reference: no graph is built
            ref_lp = ref(**kw).log_probs.sum(1).detach()
            chosen, rejected = (model(**kw).log_probs.sum(1) - ref_lp).chunk(2)
            loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()
        else:
            out = model(**kw)
            loss = -out.log_probs.sum() / (kw["labels"] != -100).sum()
            del out
        return loss

    step()  # the first step makes the optimizer states; the tracked one runs with them, as every later step does
    tracker = MemTracker()
    tracker.track_external(model, opt, *([ref] if ref is not None else []))

    class _NoHook:  # MemTracker puts gradient hooks on every parameter; frozen ones refuse hooks
        def remove(self):
            pass

    for p in list(model.parameters()) + (list(ref.parameters()) if ref is not None else []):
        if not p.requires_grad:
            tracker._param_to_grad_hook_handles[p] = (_NoHook(), _NoHook())
    with tracker:
        step()
    (snap,) = tracker.get_tracker_snapshot("peak").values()
    return snap["Total"], cfg


CONFIGS = {  # name: (tracked_peak kwargs, Setup kwargs besides batch/seq/device); full fp32: the trainer test below
    "full bf16": ({"dtype": torch.bfloat16}, {}),
    "dpo fp32 (2x batch, padded, reference)": ({"dpo": True, "pad": True}, {"kind": "dpo"}),
    "checkpointing fp32 (seq 512)": ({"ckpt": True, "seq": 512}, {"checkpointing": True}),
    "lora r8 fp32": ({"lora": 8}, {"lora_r": 8}),
    # peft keeps the adapters in float32 on a bf16 model (autocast_adapter_dtype, review finding 5): without autocast
    # each adapted linear saves a float32 copy of its input; under autocast (a CUDA job) a bf16 one
    "lora r8 bf16": ({"lora": 8, "dtype": torch.bfloat16}, {"lora_r": 8}),
    "lora r8 bf16 autocast (the CUDA job's path)": ({"lora": 8, "dtype": torch.bfloat16, "autocast": True},
                                                    {"lora_r": 8, "autocast": True}),
    "eager attention bf16": ({"attn": "eager", "dtype": torch.bfloat16}, {"attention": "eager"}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_estimate_within_15_percent_of_tracked_peak(name):
    extra, setup = CONFIGS[name]
    shape_kw = {**SMALL, **{k: v for k, v in extra.items() if k in SMALL}}
    peak, cfg = tracked_peak(**shape_kw, **{k: v for k, v in extra.items() if k not in SMALL})
    shape = shape_from_config(cfg)
    plan = estimate(shape, Setup(batch=shape_kw["batch"], seq=shape_kw["seq"], device="cpu",
                                 bf16=extra.get("dtype") == torch.bfloat16, **setup))
    err = plan.total_bytes / peak - 1
    per_token = memplan.components._layer_activation_bytes(shape, plan.setup, plan.setup.kind == "dpo")
    layer_share = shape.layers * per_token \
        * shape_kw["batch"] * shape_kw["seq"] * (2 if setup.get("kind") == "dpo" else 1) / peak
    print(f"{name}: tracked {peak / 2**20:.1f} MiB, estimate {plan.total_bytes / 2**20:.1f} MiB, {err:+.1%}, "
          f"layer activations {layer_share:.0%} of the peak")
    assert abs(err) < 0.15
    if not setup.get("checkpointing"):
        assert layer_share > 0.2  # the activation model is really exercised, not hidden behind the weights


def test_estimate_matches_the_real_sft_trainer_step(tokenizer_dir, tmp_path):
    """The job's own path: trl's SFTTrainer as train_entry configures it on a CPU (wrapped packing, fused AdamW),
    MemTracker around its second step."""
    from datasets import Dataset
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    text = " ".join(["Depth up-scaling stacks two copies of a model's layers into a deeper model. 3 + 4 = 7."] * 60)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, bf16=False, use_cpu=True,
                     activation_checkpointing=False, report_to="none", max_length=512, packing=True,
                     packing_strategy="wrapped", dataset_text_field="text", save_strategy="no", disable_tqdm=True,
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=LlamaForCausalLM(cfg), args=args, train_dataset=Dataset.from_dict({"text": [text] * 8}),
                         processing_class=tok)
    tracker, peaks = MemTracker(), []

    class Track(TrainerCallback):  # the second step: the optimizer states exist, as in every later step
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == 1:
                tracker.track_external(trainer.model, trainer.optimizer)
                tracker.__enter__()

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == 2:
                tracker.__exit__(None, None, None)
                peaks.append(next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"])

    trainer.add_callback(Track())
    trainer.train()
    plan = estimate(shape_from_config(cfg), Setup(batch=2, seq=512, device="cpu", padded=False))
    print(f"SFTTrainer fp32: tracked {peaks[0] / 2**20:.1f} MiB, estimate {plan.total_bytes / 2**20:.1f} MiB, "
          f"{plan.total_bytes / peaks[0] - 1:+.1%}")
    assert abs(plan.total_bytes / peaks[0] - 1) < 0.15


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_untied", "tiny_qwen2"])
def test_parameter_counts_are_exact_without_loading(fixture, request):
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(fixture)
    shape = memplan.load_shape(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.tied == (fixture == "tiny_llama") and shape.layers == 6
    assert shape.layer_params == sum(p.numel() for p in model.model.layers[0].parameters())


@pytest.mark.parametrize("targets", ["all-linear", "q_proj,v_proj"])
def test_lora_count_matches_peft(tiny_llama, targets):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(
        r=8, target_modules=targets if targets == "all-linear" else targets.split(","), task_type="CAUSAL_LM"))
    assert memplan.load_shape(tiny_llama).lora_params(8, targets) == model.get_nb_trainable_parameters()[0]
    with pytest.raises(memplan.PlanError, match="matches no linear layer"):
        memplan.load_shape(tiny_llama).lora_params(8, "nonexistent")


SOLAR = {"model_type": "llama", "num_hidden_layers": 48, "hidden_size": 4096, "intermediate_size": 14336,
         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": False}


def test_strategies_order_as_they_should():
    shape = shape_from_config(SOLAR)
    assert shape.params == 10_731_524_096  # SOLAR-10.7B's count
    base = Setup(batch=1, seq=4096, device="cuda")
    plans = {p.strategy: p for p, _ in memplan.compare_strategies(shape, base, [139 * GiB] * 8)}
    full = plans["full"]
    assert full.components["weights"] == shape.params * 2 and full.components["optimizer"] == shape.params * 4
    assert plans["adamw_8bit"].components["optimizer"] < full.components["optimizer"] / 1.9
    assert plans["checkpointing"].total_bytes < full.total_bytes
    # float32 AdamW states of the float32 adapters (peft's autocast_adapter_dtype): 8 bytes a trainable value
    assert plans["lora"].components["optimizer"] == 8 * shape.lora_params(16) < full.components["optimizer"] / 50
    assert plans["fsdp"].components["weights"] == 4 * shape.params // 8  # float32 shards over 8 GPUs
    assert plans["zero3_offload"].cpu_bytes == 18 * shape.params and plans["zero3_offload"].components["weights"] == 0
    dpo = estimate(shape, Setup(batch=1, seq=4096, device="cuda", kind="dpo"))
    assert dpo.components["reference"] == shape.params * 2
    assert estimate(shape, Setup(batch=1, seq=4096, device="cuda", kind="dpo", lora_r=16)).components["reference"] == 0


def _sft(model, **kw):
    from backend.specs import DataSource, SftSpec

    return SftSpec(model=model, data=[DataSource(source="builtin:alpaca-mini")], max_steps=1, **kw)


def test_a_job_that_cannot_fit_is_refused_before_loading(tiny_llama, workspace, monkeypatch):
    from backend import training

    registry.import_folder(tiny_llama, "tiny")
    monkeypatch.setattr(memplan.report, "available_memory", lambda device: ([2 * GiB], "RAM"))
    spec = _sft("tiny", batch_size=64, max_length=1024)  # full: 2.5 GiB on the CPU, checkpointing: 1.7
    with pytest.raises(training.TrainingError) as exc:
        training.run_train(spec)
    msg = str(exc.value)
    assert "does not fit" in msg and "this machine has 2 GiB of RAM" in msg and "needs" in msg
    assert "full + activation checkpointing (1.7 GiB) or LoRA + checkpointing (1.7 GiB) would" in msg
    assert not (workspace / "runs").exists() and registry.list_models()[0].name == "tiny"
    training.check_memory(spec.model_copy(update={"memory_check": False}), tiny_llama)  # skipped: no error


def test_cli_flags_reach_the_spec_and_plan_prints_the_estimate(tiny_llama, tmp_path, capsys):
    from backend.__main__ import main
    from backend.specs import load_spec

    registry.import_folder(tiny_llama, "tiny")
    out = tmp_path / "dpo.yaml"
    assert main(["train", "dpo", "--model", "tiny", "--data", "builtin:prefs-mini", "--compile", "regional",
                 "--no-liger", "--optimizer", "adamw_8bit", "--attention", "eager", "--packing-strategy", "wrapped",
                 "--gradient-checkpointing", "--precompute-ref", "--no-memory-check", "--ray-workers", "2",
                 "--cpus", "4", "--gpus", "1", "--memory-gb", "32", "--save-spec", str(out), "--queue"]) == 0
    spec = load_spec(out)
    assert spec.perf.model_dump() == {"compile": "regional", "liger": False, "optimizer": "adamw_8bit",
                                      "attention": "eager", "packing_strategy": "wrapped"}
    assert spec.gradient_checkpointing and spec.precompute_ref_log_probs is True and not spec.memory_check
    assert spec.ray_workers == 2 and (spec.resources.cpus, spec.resources.gpus, spec.resources.memory_gb) == (4, 1, 32)
    capsys.readouterr()
    n_jobs = len(runner.list_jobs())
    assert main(["train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--batch-size", "3",
                 "--max-length", "128", "--plan", "--plan-device", "cuda", "--plan-memory-gb", "80"]) == 0
    text = capsys.readouterr().out
    assert len(runner.list_jobs()) == n_jobs  # nothing queued
    plan = estimate(memplan.load_shape(tiny_llama), Setup(batch=3, seq=128, device="cuda", padded=False))
    row = next(line for line in text.splitlines() if line.startswith("full fine-tuning (this spec)"))
    numbers = [float(x) for x in row.split()[4:12]]  # 5 components, overhead, total, CPU RAM
    assert numbers[:5] == [round(plan.components[c] / GiB, 2) for c in memplan.COLUMNS]
    assert numbers[6] == round(plan.needed_bytes / GiB, 2) and row.endswith("yes")
    assert "fits." in text.splitlines()[-1]


def test_train_page_shows_the_plan_and_a_perf_choice_reaches_the_job(tiny_llama, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT

    registry.import_folder(tiny_llama, "tiny")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/train.py").run()
    at.radio(key="kind").set_value("sft").run()
    at.selectbox(key="perf_optimizer").select("adamw_fused").run()
    at.checkbox(key="grad_ckpt").check().run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "strategy" in d.value.columns)
    shape = memplan.load_shape(tiny_llama)
    own = estimate(shape, Setup(batch=2, seq=256, device="cpu", checkpointing=True, optimizer="adamw_fused",
                                padded=True))
    first = table.iloc[0]
    # the columns carry their unit (GiB), which a narrow window cut from the header row's tooltip alone
    assert first["strategy"].endswith("(this spec)") and first["total (GiB)"] == round(own.needed_bytes / GiB, 2)
    # every component's column, but the reference model's: an SFT holds none, so its all-zero column is left out
    shown = [c for c in memplan.COLUMNS if f"{c} (GiB)" in table.columns]
    assert shown == [c for c in memplan.COLUMNS if c != "reference"] and own.components["reference"] == 0
    assert [first[f"{c} (GiB)"] for c in shown] == [round(own.components[c] / GiB, 2) for c in shown]
    assert "CUDA: regional; CPU: off" in at.selectbox(key="perf_compile").format_func("auto")
    at.button(key="launch").click().run()
    (job,) = runner.list_jobs()
    assert job.spec["perf"]["optimizer"] == "adamw_fused" and job.spec["gradient_checkpointing"] is True
    # a plan that does not fit disables Launch and says why
    monkeypatch.setattr(memplan.report, "available_memory", lambda device: ([GiB // 2], "RAM"))
    at.run()
    assert at.button(key="launch").disabled and any("does not fit" in w.value for w in at.warning)


def test_the_spec_decides_the_strategy(tiny_llama, tmp_path):
    from backend.specs import DpoSpec, LoraSpec

    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 8\nmixed_precision: bf16\n")
    zero = tmp_path / "zero3.yaml"
    zero.write_text("distributed_type: DEEPSPEED\nnum_processes: 4\ndeepspeed_config:\n  zero_stage: 3\n"
                    "  offload_optimizer_device: cpu\n  offload_param_device: cpu\n")
    st = memplan.setup_for_spec(_sft(str(tiny_llama), accelerate_config=str(fsdp)), "cuda")
    assert (st.sharding, st.gpus, st.bf16, st.bytes_per_value) == ("fsdp", 8, None, 2)
    assert memplan.setup_for_spec(_sft(str(tiny_llama), accelerate_config=str(zero)), "cuda").sharding == \
        "zero3_offload"
    dpo = DpoSpec(model=str(tiny_llama), data=[{"source": "builtin:prefs-mini"}], batch_size=3, max_length=64)
    st = memplan.setup_for_spec(dpo, "cpu")
    assert (st.kind, st.reference, st.padded, st.bytes_per_value) == ("dpo", True, True, 4)
    assert memplan.setup_for_spec(dpo.model_copy(update={"precompute_ref_log_probs": True}), "cpu").reference is False
    lora = memplan.setup_for_spec(dpo.model_copy(update={"lora": LoraSpec(r=4)}), "cpu")
    assert lora.reference is False and lora.lora_r == 4
    # CPU processes share the one RAM: two processes need twice the plan
    one = memplan.plan_for_spec(_sft(str(tiny_llama)), tiny_llama, "cpu")
    two = memplan.estimate(memplan.load_shape(tiny_llama), replace(one.setup, gpus=2))
    assert memplan.fits(one, [int(one.needed_bytes * 1.5)]) and not memplan.fits(two, [int(one.needed_bytes * 1.5)])
