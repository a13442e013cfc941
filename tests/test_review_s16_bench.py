"""Review of bench/ (session 16): the benches' checking logic, on tiny models and tiny sizes. No timing asserts:
each test checks what a bench compares and that a difference it finds makes it exit non-zero."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def bench_module(name: str):
    return importlib.import_module(name)


# ---- bench_eval: the comparison of batched and one-at-a-time answers ---------------------------------------------

def run_bench_eval(model: Path, monkeypatch, inject: bool) -> int:
    """bench_eval.main on a tiny model (2 prompts a batch); inject: the batched path's first answer altered."""
    from backend import evaluate

    bench_eval = bench_module("bench_eval")
    real = evaluate.generate

    def generate(tok, m, prompts, n, **kw):
        out = real(tok, m, prompts, n, **kw)
        if inject and kw.get("batch_size", 8) > 1 and len(prompts) > 2:  # the timed batched run, not the warm-up
            out[0] = ("INJECTED " + out[0][0], *out[0][1:])
        return out

    monkeypatch.setattr(evaluate, "generate", generate)
    monkeypatch.setattr(sys, "argv", ["bench_eval.py", "--model", str(model), "--items", "4", "--max-new-tokens",
                                      "4", "--batch", "2"])
    try:
        bench_eval.main()
    except SystemExit as e:
        return e.code
    finally:  # its temporary workspace (the imported model's copy: 517 MB for the built-in) is gone
        assert os.environ["DUS_WORKSPACE"].startswith(tempfile.gettempdir())
        assert not Path(os.environ["DUS_WORKSPACE"]).exists()
    return 0


def test_bench_eval_runs_to_the_end_and_fails_on_a_batched_difference(tiny_llama, monkeypatch, capsys):
    # it unpacked evaluate.generate's (text, tokens, cut off) triples as pairs: a ValueError after the table, on
    # every run, and a difference was printed without failing the bench
    assert run_bench_eval(tiny_llama, monkeypatch, inject=False) == 0
    assert "same answers (greedy): yes (4/4 identical texts" in capsys.readouterr().out
    assert run_bench_eval(tiny_llama, monkeypatch, inject=True) == 1
    out = capsys.readouterr().out
    assert "same answers (greedy): no (3/4 identical texts" in out
    assert "differs on" in out and "'INJECTED " in out


def test_bench_eval_differences_reads_generate_triples():
    bench_eval = bench_module("bench_eval")
    items = [{"id": "a"}, {"id": "b"}]
    assert bench_eval.differences([("x", 3, False), ("y", 4, True)], [("x", 3, False), ("y", 4, True)], items) == []
    assert bench_eval.differences([("x", 3, False), ("y", 4, True)], [("x", 3, False), ("z", 4, True)], items) == \
        ["  differs on b: 'y' vs 'z'"]


# ---- bench_upscale: ours against mergekit, this run's outputs, every tensor ----------------------------------------

def test_bench_upscale_compares_this_runs_output_with_mergekit_on_every_tensor(tmp_path, monkeypatch, capsys):
    """A tiny checkpoint through bench(); mergekit stood in for by our own correct up-scale. It compared mergekit's
    output with `reference` (an up-scale an earlier run left) on three down_proj tensors, so this run's wrong
    output passed."""
    import torch
    from safetensors.torch import load_file, save_file

    bu = bench_module("bench_upscale")
    monkeypatch.setattr(bu, "OUT", tmp_path)
    monkeypatch.setattr(bu, "SHAPES", dict(hidden=64, inter=128, heads=4, kv=2, vocab=300))
    real = bu.run_ours
    broken: list[str] = []

    def indexed(src, m, dst):  # an index as a sharded checkpoint has (the old probe read the tensors through it)
        # `python -m backend upscale` runs once, for the bench's reference; each round's run takes a copy of its
        # output (the same bytes: the up-scale of one input is deterministic), 2 CLI processes fewer
        if once.exists():
            shutil.copytree(once, dst)
            return 0.0, 0.0
        r = real(src, m, dst)
        if not (dst / "model.safetensors.index.json").exists():
            names = list(load_file(dst / "model.safetensors"))
            (dst / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {}, "weight_map": {n: "model.safetensors" for n in names}}))
        shutil.copytree(dst, once)
        return r

    def ours(src, m, dst):
        r = indexed(src, m, dst)
        for name in broken:  # this run's output, not the reference, made wrong
            [f] = [f for f in dst.glob("*.safetensors") if name in load_file(f)]
            t = load_file(f)
            t[name] = torch.zeros_like(t[name])
            save_file(t, f, metadata={"format": "pt"})
        return r

    def mergekit(src, n, m, dst):  # in this process: the bench's own `python -m backend upscale` ran twice more
        from backend.specs import UpscaleSpec
        from backend.upscale import run_upscale

        # each in a workspace of its own, as the bench runs ours: mergekit registers nothing, and the bench removes
        # `dst` between repeats (a row left at a removed folder is refused as such: outputs.check_folder_free)
        with monkeypatch.context() as mp:
            mp.setenv("DUS_WORKSPACE", str(tmp_path / f"ws-mergekit-{len(made)}"))
            run_upscale(UpscaleSpec(base=str(src), m=m, name=f"mergekit-{len(made)}", out=str(dst),
                                    shard_size="1GB"))
        made.append(dst)
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: "model.safetensors" for k in load_file(dst / "model.safetensors")}}))
        return 0.0, 0.0  # (wall s, peak RSS): not read here

    made: list[Path] = []
    once = tmp_path / "cli-output"
    monkeypatch.setattr(bu, "run_ours", ours)
    monkeypatch.setattr(bu, "run_mergekit", mergekit)
    # `sync` before each tool evens out the timings, which this test does not read (a flush of every dirty page of
    # the machine, other processes' too)
    monkeypatch.setattr(bu, "subprocess", types.SimpleNamespace(
        DEVNULL=subprocess.DEVNULL, PIPE=subprocess.PIPE,
        run=lambda cmd, *a, **k: None if cmd == ["sync"] else subprocess.run(cmd, *a, **k)))
    rows = bu.bench(6, 2, True, 1)
    assert [r["tool"] for r in rows] == ["cp -r input", "cp -r output", "dus-studio", "mergekit 0.1.5"]
    broken.append("model.norm.weight")  # not a down_proj: a probe of three layers did not read it either
    with pytest.raises(SystemExit) as e:
        bu.bench(6, 2, True, 1)
    assert e.value.code == 1
    assert "outputs differ in 1 tensors: ['model.norm.weight']" in capsys.readouterr().out


def test_differing_tensors_counts_a_name_only_one_side_holds(tmp_path):
    import torch
    from safetensors.torch import save_file

    bu = bench_module("bench_upscale")
    for d, tensors in (("a", {"x": torch.ones(2), "y": torch.ones(2)}), ("b", {"x": torch.ones(2)})):
        (tmp_path / d).mkdir()
        save_file(tensors, tmp_path / d / "model.safetensors")
    assert bu.differing_tensors(tmp_path / "a", tmp_path / "b") == ["y"]
    assert bu.differing_tensors(tmp_path / "a", tmp_path / "a") == []


# ---- bench_compare: both cases timed equally cold, and the ratio to the floor printed ------------------------------

def test_bench_compare_times_each_case_in_a_fresh_process():
    # both cases ran in one process: the floor paid the page's imports and the full case did not, so at 3 models x
    # 2 tasks x 20 items the full page's first render read 0.08 s against its floor's 0.58 s
    bc = bench_module("bench_compare")
    floor, full = bc.case_in_child(False, 1, 1, 2), bc.case_in_child(True, 1, 1, 2)
    assert len({floor["pid"], full["pid"], os.getpid()}) == 3
    assert (floor["rows"], full["rows"]) == (16, 18)  # qa: 16 score rows; and one Generation per item
    assert set(full["times"]) == {"first render", "rerun", "rerun, clean only", "table"}


def test_bench_compare_prints_the_ratio_to_its_floor():
    r = subprocess.run([sys.executable, "bench/bench_compare.py", "--models", "1", "--tasks", "1", "--items", "2"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    [row] = [ln for ln in r.stdout.splitlines() if ln.startswith("÷ floor")]
    assert len([x for x in row.split() if x.endswith("×")]) == 4


# ---- bench_chat: the side-by-side row compares the same answers ---------------------------------------------------

def test_bench_chat_fails_when_the_side_by_side_answers_differ(tiny_llama, monkeypatch, capsys):
    """It checked only the one-answer row: answer_all answering with half the tokens printed a tokens/s ratio of
    unlike work (8 tokens against 16) and exited 0."""
    from backend import chat

    bench_chat = bench_module("bench_chat")
    monkeypatch.setattr(sys, "argv", ["bench_chat.py", "--model", str(tiny_llama), "--tokens", "4", "--reps", "1"])
    bench_chat.main()
    assert "dus-studio answer_all" in capsys.readouterr().out
    real = chat.answer_all

    def other(lms, messages, **settings):
        answers = real(lms, messages, **settings)
        for a in answers.values():
            a.thread.join()
            a.text += " (another answer)"
        return answers

    monkeypatch.setattr(chat, "answer_all", other)
    with pytest.raises(SystemExit) as e:
        bench_chat.main()
    assert "side by side: answer_all and generate produced different answers" in str(e.value.code)


# ---- bench_runner: both paths at one priority ----------------------------------------------------------------------

@pytest.mark.parametrize("nice", ["10", "7"])
def test_bench_runner_direct_child_runs_at_the_workers_job_niceness(monkeypatch, nice):
    """The runner's job process runs at $DUS_JOB_NICE (runner.start_child); the direct trl child ran at 0."""
    monkeypatch.setenv("DUS_JOB_NICE", nice)
    bench_runner = bench_module("bench_runner")
    out = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True,
                         preexec_fn=bench_runner.at_job_niceness, check=True).stdout
    assert int(out) == max(int(nice), os.nice(0))
