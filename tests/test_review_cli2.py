"""A second walk through the command line: --save-spec wrote a spec the checks then refused, an up-scaling option
the chosen method does not read was dropped without a word, a misspelt YAML field got no hint, `models list` lost
its columns past 40-character names, `eval --queue` of several models made one job where the Eval page makes one
per model, and a safetensors file with bytes appended passed the header check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from backend import registry, runner
from backend.safetensors_stream import CheckpointError, read_header
from backend.specs import (CptSpec, DataSource, DpoSpec, EvalSpec, ImportSpec, MergeSpec, SftSpec, SynthMathSpec,
                           UpscaleSpec, load_spec)
from tests.test_review_cli import cli


@pytest.fixture
def tiny(tiny_llama) -> str:
    registry.import_folder(tiny_llama, "tiny")  # 6 layers
    return "tiny"


# ---- 1. --save-spec writes only a spec that passed the checks

@pytest.mark.parametrize("queue", [False, True])
def test_save_spec_is_not_written_when_the_checks_refuse_the_spec(tiny, tmp_path, queue):
    saved = tmp_path / "up.yaml"
    rc, out, err = cli("upscale", "--base", tiny, "--m", "5", "--save-spec", str(saved), *(["--queue"] * queue))
    assert (rc, out) == (2, "")
    assert err == "error: m=5 is out of range for a 6-layer model: choose 1 <= m <= 2 (s = 2·(n-m) must exceed n=6).\n"
    assert not saved.exists() and runner.list_jobs() == [] and registry.get("tiny-dus-m5") is None


def test_save_spec_is_kept_when_a_checked_spec_fails_while_running(tiny_llama, tmp_path):
    """The run fails on what only reading the weights finds (here a damaged file): the spec is right, so it stays
    written, and `run FILE` repeats the same command once the file is fixed."""
    broken = shutil.copytree(tiny_llama, tmp_path / "broken")
    with open(broken / "model.safetensors", "ab") as f:
        f.write(b"junk")
    saved = tmp_path / "up.yaml"
    rc, _, err = cli("upscale", "--base", str(broken), "--m", "1", "--name", "up", "--save-spec", str(saved))
    assert rc == 2 and "4 bytes after its last tensor" in err
    assert load_spec(saved) == UpscaleSpec(base=str(broken), m=1, name="up")
    assert registry.get("up") is None


def test_save_spec_of_an_eval_fanned_out_to_one_job_per_model(tiny, tiny_llama, tmp_path):
    registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "b"), "tiny-2")
    saved = tmp_path / "eval.yaml"
    rc, out, err = cli("eval", "tiny", "tiny-2", "--tasks", "perplexity", "--limit", "2", "--queue",
                       "--save-spec", str(saved))
    assert rc == 0, err
    assert load_spec(saved) == EvalSpec(models=["tiny", "tiny-2"], tasks=["perplexity"], limit=2)


@pytest.mark.parametrize("models", [["tiny"], ["tiny", "tiny"]])
def test_a_save_spec_path_that_cannot_be_written_queues_nothing(tiny, tmp_path, models):
    """The job was queued, then writing the YAML into a missing folder failed: exit 2 with a job left queued."""
    rc, out, err = cli("eval", *models, "--tasks", "perplexity", "--queue", "--save-spec",
                       str(tmp_path / "no" / "such" / "eval.yaml"))
    assert rc == 2 and "No such file or directory" in err and out == ""
    assert runner.list_jobs() == []


# ---- 2. an option the chosen up-scaling method does not read is refused

@pytest.mark.parametrize("args, said", [
    (["--method", "llama-pro", "--groups", "2", "--m", "4"],
     "m (--m on the command line) is for method 'dus'; method 'llama-pro' does not use it"),
    (["--method", "slices", "--slice", "0:0:4", "--m", "2"],
     "m (--m on the command line) is for method 'dus'; method 'slices' does not use it"),
    (["--m", "1", "--groups", "2"],
     "groups (--groups on the command line) is for method 'llama-pro'; method 'dus' does not use it"),
    (["--m", "1", "--second", "tiny"],
     "second (--second on the command line) is for method 'slices'; method 'dus' does not use it"),
    (["--method", "llama-pro", "--groups", "2", "--slice", "0:0:2"],
     "slices (--slice on the command line) is for method 'slices'; method 'llama-pro' does not use it"),
])
def test_upscale_refuses_an_option_of_another_method(tiny, tmp_path, args, said):
    saved = tmp_path / "up.yaml"
    rc, out, err = cli("upscale", "--base", tiny, *args, "--save-spec", str(saved))
    assert (rc, out) == (2, "")
    assert err.startswith(f"error: {said}: leave it out, or choose method ")
    assert not saved.exists() and registry.list_models()[0].name == "tiny" and len(registry.list_models()) == 1


def test_a_yaml_spec_gets_the_same_rule_as_the_command_line(tiny, tmp_path):
    f = tmp_path / "pro.yaml"
    f.write_text(yaml.safe_dump({"kind": "upscale", "base": tiny, "method": "llama-pro", "groups": 2, "m": 4}))
    rc, _, err = cli("run", str(f))
    assert rc == 2 and err == ("error: m (--m on the command line) is for method 'dus'; method 'llama-pro' does not "
                               "use it: leave it out, or choose method 'dus'.\n")
    assert runner.list_jobs() == [] and len(registry.list_models()) == 1


def test_each_method_with_only_its_own_fields_still_validates():
    """What the Build page sends per method (pages/build.py), and what a model's stored recipe holds (every field,
    the others at their defaults)."""
    for spec in (UpscaleSpec(base="a", m=2), UpscaleSpec(base="a", method="llama-pro", groups=3),
                 UpscaleSpec(base="a", method="slices", slices=[{"start": 0, "end": 2}], second="b")):
        assert UpscaleSpec.model_validate(spec.model_dump(mode="json")) == spec


# ---- 3. a misspelt field of a spec file names the field meant

DATA = [DataSource(source="data.jsonl")]
TYPOS = {  # kind: (a valid spec, the misspelt key as written, where it goes, the field meant)
    "upscale": (UpscaleSpec(base="a", m=1), "shard_sise", (), "shard_size"),
    "import": (ImportSpec(target="builtin"), "allow_pickel", (), "allow_pickle"),
    "cpt": (CptSpec(model="a", data=DATA), "max_step", (), "max_steps"),
    "sft": (SftSpec(model="a", data=DATA), "learnig_rate", (), "learning_rate"),
    "dpo": (DpoSpec(model="a", data=DATA), "loss_typ", (), "loss_type"),
    "synth-math": (SynthMathSpec(), "num_seed", (), "num_seeds"),
    "merge": (MergeSpec(models=["a", "b"]), "lamda", (), "lambda"),  # the alias, as a YAML file spells it
    "eval": (EvalSpec(models=["a"]), "max_new_token", (), "max_new_tokens"),
    "sft data": (SftSpec(model="a", data=DATA), "wieght", ("data", 0), "weight"),
    "sft resources": (SftSpec(model="a", data=DATA), "cpu", ("resources",), "cpus"),
    "dpo perf": (DpoSpec(model="a", data=DATA), "compil", ("perf",), "compile"),
}


@pytest.mark.parametrize("case", TYPOS)
def test_a_misspelt_yaml_field_says_which_field_was_meant(tmp_path, case):
    spec, typo, where, meant = TYPOS[case]
    data = yaml.safe_load(spec.to_yaml())
    part = data
    for key in where:
        part = part[key]
    part[typo] = part.pop(meant, 1)
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(data))
    rc, out, err = cli("run", str(f))
    loc = ".".join(map(str, (*where, typo)))
    assert (rc, out, err) == (2, "", f"error: {loc}: Extra inputs are not permitted; did you mean {meant!r}?\n")
    assert runner.list_jobs() == []


def test_a_field_like_none_of_the_spec_gets_no_guess(tmp_path):
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump({"kind": "upscale", "base": "a", "m": 1, "colour": "blue"}))
    assert cli("run", str(f)) == (2, "", "error: colour: Extra inputs are not permitted\n")


# ---- 4. models list fits its columns to the longest name

def test_models_list_columns_fit_a_long_name(tiny, tiny_llama, tmp_path):
    long = "tiny-llama-dus-m2-cpt-sft-v3-dpo-v1_dpo-v2-average-0.5-0.5"  # 57 characters
    registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "long"), long)
    rc, out, _ = cli("models", "list")
    header, *rows = out.splitlines()
    assert rc == 0 and len(rows) == 2
    kind_at = header.index("kind")
    assert kind_at == len(long) + 1
    for row in rows:
        name = row.split()[0]
        assert name in (long, "tiny") and row[:kind_at] == f"{name:{len(long)}} "
        assert row[kind_at:].split() == ["base", "LlamaForCausalLM", "6", "300",
                                         f"{registry.get(name).num_parameters:,}", "F32", "-"]
        assert row.index(" F32 ") + 1 == header.index("dtype") and row.index(" -") + 1 == header.index("parents")


# ---- 5. eval --queue of several models: one job per model, as on the Eval page

def test_eval_queue_of_several_models_fans_out_unless_told_not_to(tiny, tiny_llama, tmp_path):
    registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "b"), "tiny-2")
    task = ["--tasks", "perplexity", "--limit", "2", "--queue"]
    rc, out, err = cli("eval", "tiny", "tiny-2", *task)
    assert rc == 0, err
    assert [j.spec["models"] for j in sorted(runner.list_jobs(), key=lambda j: j.id)] == [["tiny"], ["tiny-2"]]
    assert out.startswith("queued jobs 1, 2 (eval, one per model)") and "--no-fan-out queues one job" in out
    rc, out, err = cli("eval", "tiny", "tiny-2", *task, "--no-fan-out")
    assert rc == 0, err
    newest = max(runner.list_jobs(), key=lambda j: j.id)
    assert newest.spec["models"] == ["tiny", "tiny-2"] and out.startswith(f"queued job {newest.id} (eval)")


def test_eval_fan_out_checks_every_model_before_queueing_any(tiny):
    rc, _, err = cli("eval", "tiny", "ghost", "--tasks", "perplexity", "--queue")
    assert rc == 2 and "'ghost' is neither a registered model" in err
    assert runner.list_jobs() == []  # not tiny's job queued, then ghost's refused


@pytest.mark.parametrize("flag", [[], ["--no-fan-out"]])
def test_eval_of_several_models_in_the_foreground_is_not_an_error_of_fan_out(flag):
    rc, _, err = cli("eval", "ghost-a", "ghost-b", "--tasks", "perplexity", *flag)
    assert rc == 2 and "add --queue" not in err and "'ghost-a' is neither a registered model" in err


# ---- 6. a safetensors file must end where its last tensor does

@pytest.fixture
def weights(tiny_llama, tmp_path) -> Path:
    return Path(shutil.copy(tiny_llama / "model.safetensors", tmp_path / "model.safetensors"))


def _library_refuses(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt"):
            return False
    except Exception:
        return True


def test_read_header_refuses_bytes_after_the_last_tensor(weights):
    header, start = read_header(weights)
    size = weights.stat().st_size
    assert start + max(info["data_offsets"][1] for info in header.values()) == size  # intact: read as before
    with open(weights, "ab") as f:
        f.write(b"\0" * 10)
    assert _library_refuses(weights)  # what safetensors says later ("not fully covered"), said here first
    with pytest.raises(CheckpointError) as got:
        read_header(weights)
    assert str(got.value) == (f"{weights} has 10 bytes after its last tensor (its header's data ends at byte "
                              f"{size:,} of {size + 10:,}): something was appended to it, or a smaller file was "
                              "written over it in place. Re-download or re-export it.")


def test_read_header_refuses_a_truncated_file(weights):
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-1])
    assert _library_refuses(weights)
    with pytest.raises(CheckpointError, match=r"lies past the end of the file \(truncated download\?\)"):
        read_header(weights)


def test_eval_scores_keep_their_columns_with_a_long_model_name(tiny, tiny_llama, tmp_path):
    long = "tiny-llama-dus-m2-cpt-sft-v3-dpo-v1_dpo-v2-average-0.5-0.5"
    registry.import_folder(shutil.copytree(tiny_llama, tmp_path / "long"), long)
    rc, out, err = cli("eval", "tiny", long, "--tasks", "perplexity", "--limit", "2", "--device", "cpu")
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.startswith(("tiny ", long))]  # each with its bootstrap error,
    metrics = ["bits_per_byte", "byte_perplexity", "byte_perplexity_stderr", "perplexity",  # and lm-eval's, with
               "perplexity_stderr", "word_perplexity", "word_perplexity_stderr"]  # our bootstrap's errors
    assert [row.split()[:3:2] for row in rows] == [[m, x] for m in ("tiny", long) for x in metrics]
    assert [row.index(" perplexity") for row in rows] == [len(long)] * 14


def test_train_and_eval_take_every_setting_the_pages_offer(tiny, tmp_path):
    """grad accumulation, LR schedule, warmup and weight decay were YAML only, and eval's n-gram length was not on
    the command line: the Train page's Advanced expander and the Eval page have them."""
    saved = tmp_path / "sft.yaml"
    rc, _, err = cli("train", "sft", "--model", "tiny", "--data", "builtin:alpaca-mini", "--grad-accum", "4",
                     "--lr-scheduler", "linear", "--warmup-ratio", "0.1", "--weight-decay", "0.01", "--queue",
                     "--save-spec", str(saved))
    assert rc == 0, err
    spec = load_spec(saved)
    assert (spec.grad_accum, spec.lr_scheduler, spec.warmup_ratio, spec.weight_decay) == (4, "linear", 0.1, 0.01)
    rc, _, err = cli("eval", "tiny", "--tasks", "perplexity", "--ngram", "6", "--queue", "--save-spec", str(saved))
    assert rc == 0, err
    assert (load_spec(saved).ngram, load_spec(saved).overlap_threshold) == (6, 0.3)
