"""Review 23b proofs: each test fails on HEAD 462d8fa."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.recipe.surface import merge_surface
from tests.conftest import make_llama


def test_a_steady_rise_across_a_sweep_is_not_called_noise():
    """11 merges rising 0.5 a step (5.0 end to end) with a standard error of 0.7 each: the ends differ by ~5 combined
    standard errors, yet every point is within 0.7 of its neighbour, and the chart says 'within noise'."""
    pts = [(i / 10, 50 + 0.5 * i, 0.7) for i in range(11)]
    s = merge_surface(pts, 55.2, 49.8, "weight", True, 0.7, 0.7)
    assert s["within_noise"] is False


def test_a_replys_token_count_does_not_depend_on_which_token_pads(tokenizer_dir, tmp_path):
    """A tokenizer with unk and eos but no pad token (Llama 2, Mistral v0.1): configure_pad_token now pads with unk
    where load_model padded with eos, and generate() counts a reply's tokens as those != pad: the eos that ends each
    reply is now counted (3 -> 4), so Generation.tokens of the same model moves between two evaluations."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from backend import evalscore
    from backend.evaldevice import load_model

    folder = make_llama(tokenizer_dir, tmp_path / "m", layers=2)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))

    class EosAt(LogitsProcessor):  # every reply ends its turn after 3 tokens
        def __init__(self, start):
            self.start = start

        def __call__(self, ids, scores):
            if ids.shape[1] - self.start == 3:
                scores[:] = -1e9
                scores[:, 2] = 0
            return scores

    counts = {}
    for pad in ("configured", "eos"):
        tok, model = load_model(folder)
        if pad == "eos":
            tok.pad_token = tok.eos_token
        orig = model.generate
        model.generate = lambda **kw: orig(**kw, logits_processor=LogitsProcessorList([EosAt(kw["input_ids"].shape[1])]))
        counts[pad] = [n for _, n, _ in evalscore.generate(tok, model, ["What is 2 + 2?", "Say more."], 8)]
    assert counts["configured"] == counts["eos"] == [3, 3]


def test_a_dead_training_without_checkpoint_is_told_what_the_button_says():
    """A training job whose process died before its first checkpoint: its row's message (loop.py, _what_resume_does)
    says a resume continues from its last checkpoint; the button and `jobs resume` (resume_action) say it starts over
    from step 0. The commit promised one answer."""
    from backend.runner.messages import _what_resume_does, resume_action

    from storage.models import Job

    job = Job(id=987, kind="sft", spec={"kind": "sft", "model": "m", "name": "s"}, status="failed")
    said, action = _what_resume_does(job), resume_action(job)
    assert "step 0" in action.says
    assert "last checkpoint" not in said, said


def test_a_synth_math_job_whose_pairs_are_registered_is_not_offered_a_resume_that_goes_on(tmp_path):
    """Its pairs were registered before it was stopped (killed while exporting): a resumed run is refused at its start
    (pipeline: "NAME-pairs ... is taken. Nothing was made"), as _what_resume_does says; the button still reads
    'Resume (its cached rephrasings are kept)' and its help 'a running worker goes on from the rephrasings it cached'."""
    from datetime import timedelta

    from backend.runner.messages import _what_resume_does, resume_action
    from backend.synth.datasets import save_dataset
    from storage.models import Job, utcnow

    (tmp_path / "p.jsonl").write_text("")
    save_dataset("sm-pairs", "synth-pairs", str(tmp_path / "p.jsonl"), 0, {})
    job = Job(id=988, kind="synth-math", spec={"kind": "synth-math", "name": "sm"}, status="interrupted",
              started=utcnow() - timedelta(hours=1))
    assert "registered as sm-pairs" in _what_resume_does(job)
    assert "goes on" not in resume_action(job).says


def test_a_merge_of_weights_no_merge_reads_is_refused_when_queued(tokenizer_dir, tmp_path):
    """An F8_E4M3 model (registrable: `models list` sizes its dtype column for it) beside a BF16 one: refused at
    submit before ("stored as F8_E4M3 vs BF16"); now queued (and a recipe plans it), failing only when the merge runs
    ("cannot merge F8_E4M3 weights"), in a recipe after every training stage before it."""
    import torch
    from safetensors.torch import save_file

    from backend import registry, runner
    from backend.specs import MergeSpec
    from tests.conftest import load_state

    a = make_llama(tokenizer_dir, tmp_path / "a", layers=2, dtype=torch.bfloat16)
    b = make_llama(tokenizer_dir, tmp_path / "b", layers=2, seed=1, dtype=torch.bfloat16)
    state = {k: (v.to(torch.float8_e4m3fn) if v.dim() == 2 else v) for k, v in load_state(b).items()}
    (b / "model.safetensors").unlink()
    save_file(state, str(b / "model.safetensors"), metadata={"format": "pt"})
    registry.import_folder(a, "abf16")
    registry.import_folder(b, "bf8")
    with pytest.raises(ValueError, match="F8_E4M3"):
        runner.submit(MergeSpec(models=["abf16", "bf8"]))
    assert runner.list_jobs() == []  # refused: no row left queued to fail when a worker runs it


@pytest.mark.parametrize("by_its_run", [True, False])
def test_a_synth_math_resume_that_its_start_would_refuse_is_refused_before_it_is_queued(by_its_run):
    """Queued by a resume, the run failed at once ("A synth-pairs data set is already named 'sm2-pairs' ... Nothing
    was made") while `jobs resume` had said it went on from its cached rephrasings: now refused before queueing,
    with the export command when its own run registered the pairs, with the start's own refusal otherwise."""
    from datetime import timedelta

    from backend import runner
    from backend.runner.messages import _what_resume_does, resume_action
    from backend.specs import SynthMathSpec
    from backend.synth.datasets import save_dataset
    from storage import db
    from storage.models import Job, utcnow

    job = runner.submit(SynthMathSpec(name="sm2", num_seeds=2))
    save_dataset("sm2-pairs", "synth-pairs", "/x/pairs.jsonl", 4, {})
    started = utcnow() - timedelta(hours=1) if by_its_run else utcnow() + timedelta(hours=1)
    with db.session() as s:
        row = s.get(Job, job.id)
        row.status, row.started = "interrupted", started
        s.add(row)
        s.commit()
    job = runner.get(job.id)
    with pytest.raises(ValueError) as exc:
        runner.resume(job.id)
    assert runner.get(job.id).status == "interrupted"
    if by_its_run:
        assert str(exc.value) == (
            f"Job {job.id} is not run again: its pairs were registered as sm2-pairs; make the Instruct / Alignment "
            "sets from them with python -m backend datasets export sm2-pairs (or the Synthetic math page's Export "
            "tab).")
        action = resume_action(job)
        assert (action.label, action.runs) == ("Export instead (sm2-pairs is registered)", False)
        assert "python -m backend datasets export sm2-pairs" in action.says
        assert _what_resume_does(job).endswith("(or the Synthetic math page's Export tab)")
    else:
        assert str(exc.value).startswith(f"Job {job.id} would be refused at its start: A synth-pairs data set is "
                                         "already named 'sm2-pairs'")
        assert "Nothing was made" in str(exc.value)
    assert runner.resume_blocked(job) == (str(exc.value), None)  # the Jobs page: the sentence, no button


def test_a_training_with_a_checkpoint_is_told_it_continues_from_it(tmp_path):
    from backend.runner.messages import _what_resume_does

    from storage.models import Job

    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    job = Job(id=989, kind="sft", spec={"kind": "sft"}, status="failed", run_dir=str(tmp_path / "run"))
    assert _what_resume_does(job) == ("resume it to continue from its last checkpoint, checkpoint-20 (python -m "
                                      "backend jobs resume 989, or \"Resume from the last checkpoint\" on the Jobs "
                                      "page)")


@pytest.fixture
def f32_bf16(tokenizer_dir, tmp_path):
    import torch

    return (make_llama(tokenizer_dir, tmp_path / "f32", layers=2, seed=0),
            make_llama(tokenizer_dir, tmp_path / "bf16", layers=2, seed=1, dtype=torch.bfloat16))


def test_a_slices_build_that_casts_the_second_models_layers_says_so(f32_bf16):
    """The second model's BF16 layers were written as F32 (the base's) without a word in the build or its card."""
    from backend.specs import UpscaleSpec
    from backend.upscale import run_upscale

    f32, bf16 = f32_bf16
    said = []
    spec = UpscaleSpec(base=str(f32), second=str(bf16), method="slices", name="stack-cast",
                       slices=[{"source": 0, "start": 0, "end": 2}, {"source": 1, "start": 0, "end": 2}])
    out = Path(run_upscale(spec, progress=lambda f, m: said.append(m))["path"])
    line = (f"{bf16}'s layers were cast to the base's dtype (BF16 to F32, rounded to nearest even as torch's .to()): "
            "one model, one dtype, the one its config.json says.")
    assert said[0].endswith(f"; {line}")
    assert line in (out / "README.md").read_text()
    same = UpscaleSpec(base=str(f32), second=str(f32), method="slices", name="stack-same",
                       slices=[{"source": 0, "start": 0, "end": 2}, {"source": 1, "start": 0, "end": 2}])
    said.clear()
    out = Path(run_upscale(same, progress=lambda f, m: said.append(m))["path"])
    assert "were cast" not in said[0] and "were cast" not in (out / "README.md").read_text()


def test_an_auto_dtype_merge_of_mixed_inputs_says_it_wrote_their_promoted_dtype(f32_bf16):
    """F32 + BF16 with no dtype set is written in F32 (twice a BF16 input's bytes); the Hub card said only 'F32'."""
    from backend import hubpush, registry
    from backend.merge import run_merge
    from backend.specs import MergeSpec

    registry.import_folder(f32_bf16[0], "in32")
    registry.import_folder(f32_bf16[1], "in16")
    run_merge(MergeSpec(models=["in32", "in16"], name="mixed"))
    assert hubpush.step_line(registry.get("mixed")).endswith(
        "average merge of `in32` and `in16`; its inputs were stored as BF16 and F32, and with no dtype set it was "
        "written in F32, their promoted dtype, as mergekit does")
    run_merge(MergeSpec(models=["in32", "in16"], name="chosen", dtype="bfloat16"))
    assert "promoted" not in hubpush.step_line(registry.get("chosen"))


def test_a_reply_ends_at_its_first_eos_and_padding_is_no_end():
    """unk (0) pads, eos is 2: a reply that ran to the limit on unk is all its own tokens and did not end (cut off);
    one that ended on eos is its tokens before it; one a stop string ended leaves its trailing padding out."""
    from backend.evalscore import _reply_length

    assert _reply_length([5, 6, 0, 0], {2}, 0, False) == (4, False)  # cut off on unk: counted whole, not ended
    assert _reply_length([5, 6, 2, 0], {2}, 0, False) == (2, True)
    assert _reply_length([5, 6, 0, 0], {2}, 0, True) == (2, False)  # a stop string ended it, then padding
    assert _reply_length([5, 2, 2, 2], {2}, 2, False) == (1, True)  # pad = eos: as the old count
