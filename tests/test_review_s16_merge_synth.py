"""Review of session 16: merges against mergekit 0.1.5 (each tensor's own dtype under dtype auto, the base listed
among the models), synthetic math (problems drawn once, a rephrased question that changes a number, exact decimal
answers) and the training launcher's resume (a checkpoint whose state is cut)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend import registry
from backend.merge import MergeError, run_merge
from backend.specs import MergeSpec, SynthMathSpec
from backend.synth import rephrase
from backend.synth.answers import format_number, to_number
from backend.synth import seeds as seeds_module
from backend.synth.seeds import Seed, SeedError, generate, load_seeds
from backend.training import complete_checkpoints
from tests.conftest import make_llama


# ---------------------------------------------------------------- merges

def test_auto_dtype_keeps_each_tensors_dtype_as_mergekit(tokenizer_dir, tmp_path):
    """Checkpoints with float32 norms beside bfloat16 matrices: mergekit with no dtype keeps each tensor's dtype
    (linear: the float32 sum cast back to the input's dtype); every tensor was written as bfloat16."""
    for name, seed in (("a", 1), ("b", 2)):
        d = make_llama(tokenizer_dir, tmp_path / name, seed=seed, layers=2, dtype=torch.bfloat16)
        g = torch.Generator().manual_seed(seed)
        state = {k: (1 + 0.1 * torch.randn(v.shape, generator=g) if "norm" in k else v)
                 for k, v in load_file(d / "model.safetensors").items()}
        save_file(state, d / "model.safetensors", metadata={"format": "pt"})
        registry.import_folder(d, name)
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    out = load_file(Path(run_merge(MergeSpec(models=["a", "b"], weights=[0.3, 0.7], name="avg"))["path"])
                    / "model.safetensors")
    for k in ("model.norm.weight", "model.layers.1.post_attention_layernorm.weight",
              "model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight"):
        ref = ((a[k].float() * 0.3 + b[k].float() * 0.7) / 1.0).to(a[k].dtype)
        assert out[k].dtype == a[k].dtype, k
        torch.testing.assert_close(out[k], ref, rtol=0, atol=1e-6 if ref.dtype == torch.float32 else 1e-2)
    assert out["model.norm.weight"].dtype == torch.float32
    # a chosen dtype still casts every tensor
    chosen = load_file(Path(run_merge(MergeSpec(models=["a", "b"], weights=[0.3, 0.7], dtype="bfloat16",
                                                name="avg16"))["path"]) / "model.safetensors")
    assert {v.dtype for v in chosen.values()} == {torch.bfloat16}


def test_a_base_listed_among_the_models_is_no_task_vector(tokenizer_dir, tmp_path):
    """mergekit leaves the base out of the task vectors: with normalize on, listing it with weight 0.5 beside a
    fine-tune with 0.5 gives the fine-tune itself (base + 0.5·d / 0.5), not the halfway point it gave here."""
    for name, seed in (("base", 1), ("ft", 2)):
        registry.import_folder(make_llama(tokenizer_dir, tmp_path / name, seed=seed, layers=2), name)
    base, ft = load_file(tmp_path / "base/model.safetensors"), load_file(tmp_path / "ft/model.safetensors")
    spec = MergeSpec(models=["base", "ft"], base="base", method="task_arithmetic", weights=[0.5, 0.5],
                     normalize=True, name="ta")
    out = load_file(Path(run_merge(spec)["path"]) / "model.safetensors")
    for k in base:
        torch.testing.assert_close(out[k], base[k] + (0.5 * (ft[k] - base[k])) / 0.5, rtol=0, atol=1e-6)
    assert registry.get("ta").recipe["models"] == ["base", "ft"]  # the spec as given, which rebuilds it
    with pytest.raises(MergeError, match="every model to merge is the base"):
        run_merge(MergeSpec(models=["base", str(tmp_path / "base")], base="base", method="task_arithmetic", name="none"))
    assert registry.get("none") is None


def test_a_slerp_filter_star_matches_every_tensor(tiny_llama):
    """mergekit 0.1.5 (config.evaluate_setting) matches a filter "*" with every tensor; here it matched none."""
    from backend.merge.plan import tensor_t
    from backend.modelinfo import inspect_model

    info = inspect_model(tiny_llama)
    spec = MergeSpec(models=["a", "b"], method="slerp", t=0.5, filters={"mlp": [0.0, 1.0], "*": 0.2})
    assert tensor_t(spec, "model.layers.0.self_attn.q_proj.weight", info) == 0.2
    assert tensor_t(spec, "model.norm.weight", info) == 0.2
    assert tensor_t(spec, "model.layers.5.mlp.up_proj.weight", info) == 1.0  # an earlier filter still wins


# ---------------------------------------------------------------- seeds

def test_the_generator_gives_each_problem_once(monkeypatch):
    """1000 seeds held 787 distinct problems (100k: 18,077): the rest were the same pair trained on again."""
    seeds = generate(1000)
    assert len(seeds) == 1000 and len({s.question for s in seeds}) == 1000
    assert len({s.id for s in seeds}) == 1000
    assert generate(1000) == seeds  # still the same for the same arguments
    # the problems before the first repeat stay as they were: the 7th seed of 100 was the first repeat
    assert [s.id for s in generate(100)[:6]] == [f"gen-0-{i}" for i in range(6)]
    # a space of five problems (n people in a line once had n = 3 … 7 alone; the templates have since grown)
    monkeypatch.setitem(seeds_module.GENERATORS, "counting", lambda rng, level: (
        f"In how many ways can {rng.randint(3, 7)} people stand in a line?", ("…", "1")))
    with pytest.raises(SeedError, match="only 5 distinct problems, not 10"):
        generate(10, categories=["counting"], levels=[2])


def test_a_problem_a_seed_file_holds_twice_is_one_seed(tmp_path):
    row = {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3 + 4 = 7\n#### 7"}
    other = {"question": "What is 2 + 2?", "answer": "#### 4"}
    f = tmp_path / "gsm.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in (row, other, row)))
    seeds = load_seeds(str(f))
    assert [s.question for s in seeds] == [row["question"], other["question"]]


# ---------------------------------------------------------------- rephrasing

def test_a_rephrased_question_that_changes_a_number_fails(monkeypatch):
    """The answer is verified, not the question: $10 rewritten as $999 with the answer kept was a verified pair."""
    seed = Seed("gen-0-5", "money", 1, "Pencils cost $10 each. How much do 2 pencils cost in dollars?",
                "2 × 10 = 20. The answer is \\boxed{20}.", "20")  # as generate(8) once drew it
    replies = {"changed": "QUESTION: Pencils cost $999 each. How much do 2 pencils cost in dollars?\nSOLUTION: "
                          + seed.solution,
               "words": "QUESTION: Each pencil is priced at $10.00. What do two pencils cost in dollars?\nSOLUTION: "
                        + seed.solution}
    for kind, reply in replies.items():
        monkeypatch.setattr(rephrase, "chat_completion", lambda *a, reply=reply, **k: reply)
        got = rephrase.OpenAIRephraser("http://127.0.0.1:9/v1", "m").rephrase([seed])[0]
        if kind == "changed":
            assert isinstance(got, rephrase.RephraseError)
            assert "has 999, which the original has neither in digits nor in words" in str(got)
        else:  # a number written in words, or 10 as 10.00, is no new number
            assert got == ("Each pencil is priced at $10.00. What do two pencils cost in dollars?", seed.solution)


def test_the_synth_math_job_fails_a_pair_whose_question_changed(monkeypatch):
    from backend.synth.pipeline import run_synth_math

    def reply(base_url, model, prompt, **_):  # every number of the question plus one
        question = prompt.split("Problem: ", 1)[1].split("\nSolution: ", 1)[0]
        solution = prompt.split("\nSolution: ", 1)[1]
        return f"QUESTION: {question} Assume 12345 more.\nSOLUTION: {solution}"

    monkeypatch.setattr(rephrase, "chat_completion", reply)
    spec = SynthMathSpec(num_seeds=4, rephraser="openai:http://127.0.0.1:9/v1", api_model="m", name="changed")
    result = run_synth_math(spec)
    assert (result["verified"], result["failed"]) == (0, 4)


# ---------------------------------------------------------------- answers

def test_format_number_writes_terminating_decimals_exactly():
    """1/32 was written 0.0312 (a float to four places), which is not 1/32."""
    assert format_number(Fraction(1, 32)) == "0.03125"
    assert format_number(Fraction(-1, 64)) == "-0.015625"
    assert format_number(Fraction(25, 2)) == "12.5" and format_number(Fraction(-7, 8)) == "-0.875"
    assert format_number(Fraction(1, 3)) == "1/3" and format_number(Fraction(7)) == "7"
    for d in (2, 4, 8, 16, 32, 64, 128, 5, 25, 125, 625, 40, 8192):
        assert to_number(format_number(Fraction(3, d))) == Fraction(3, d)


# ---------------------------------------------------------------- training resume

def test_a_checkpoint_whose_state_is_cut_is_not_resumed_from(tmp_path):
    """A machine that went down while saving leaves trainer_state.json empty: it counted as complete, so every
    resume started from it and failed (JSONDecodeError in transformers), never from the whole one before it."""
    states = {"checkpoint-10": json.dumps({"global_step": 10}), "checkpoint-20": "", "checkpoint-30": '{"global'}
    for name, text in states.items():
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "trainer_state.json").write_text(text)
    (tmp_path / "checkpoints" / "checkpoint-best").mkdir()  # not the trainer's: left alone, and no crash
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-10"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-best"]
