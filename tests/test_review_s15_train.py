"""The training data path, reviewed end to end (session 15): what trl's trainers are handed for CPT, SFT and DPO.
Each test failed before its fix: CPT's padding-free packing cut every document at max_length, DPO scored
plain-text pairs without the chat template, UltraFeedback-style rows said the prompt twice (SFT) or failed (DPO),
held-out rows were also training rows, a base model could not be fine-tuned at all, and rows cut at max_length
went without a word."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from backend import data, perf, train_entry
from backend.specs import CptSpec, DataSource, DpoSpec, SftSpec

TINY = dict(max_steps=1, batch_size=2, save_steps=100, eval_steps=100)


def trainer_for(spec, model_dir: Path, rows, tmp_path: Path, r: perf.Resolved | None = None, tok=None):
    """The trl trainer main() builds for `spec` on `rows` (no held-out set), without training."""
    tok = tok or AutoTokenizer.from_pretrained(model_dir)
    ref = train_entry.load_model(str(model_dir)) if spec.kind == "dpo" else None
    args = train_entry.make_config(spec, tmp_path / "run", False, r)
    return tok, train_entry.build_trainer(spec, train_entry.load_model(str(model_dir)), ref, tok, args, rows, None, [])


def run_main(spec, model_dir: Path, tmp_path: Path) -> dict:
    run = tmp_path / f"run-{spec.kind}"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"), "model_path": str(model_dir),
                                               "reference_path": None, "name": "t"}))
    train_entry.main(run)
    return json.loads((run / "summary.json").read_text())


def test_cpt_packed_padding_free_keeps_every_token_of_a_long_document(tiny_llama, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": " ".join(f"Fact {i}.{k}: the quick brown fox jumps over the lazy dog."
                                                         for k in range(6))}) + "\n" for i in range(10)))
    spec = CptSpec(model="x", data=[DataSource(source=str(docs))], max_length=32, eval_fraction=0, **TINY)
    on_cuda = perf.resolve(spec, True, installed=lambda module: True)  # flash-attn installed: padding-free
    assert (on_cuda.packing_strategy, on_cuda.padding_free) == ("bfd_split", True)  # was "bfd": cut at max_length
    r = dataclasses.replace(perf.resolve(spec, False), packing=True, packing_strategy=on_cuda.packing_strategy,
                            padding_free=True)  # the CUDA choice, run on the CPU
    rows, _ = data.prepare(str(docs), "cpt")
    tok, trainer = trainer_for(spec, tiny_llama, rows, tmp_path, r)
    given = sum(len(tok(t + tok.eos_token)["input_ids"]) for t in rows["text"])
    assert given > 10 * 32 and sum(map(len, trainer.train_dataset["input_ids"])) == given  # before: 320 of 2442


def test_dpo_on_plain_text_pairs_scores_them_in_the_chat_template(tiny_llama, tmp_path):
    spec = DpoSpec(model="x", data=[DataSource(source="builtin:prefs-mini")], max_length=64, **TINY)
    rows, _ = data.prepare("builtin:prefs-mini", "dpo", max_rows=4)
    tok, trainer = trainer_for(spec, tiny_llama, rows, tmp_path)
    row = trainer.train_dataset[0]
    # as the SFT of the same rows and the chat render it; before: 'What is 2 plus 4?2 plus 4 = 6.<|im_end|>'
    assert tok.decode(row["prompt_ids"] + row["chosen_ids"]) == \
        "<|im_start|>user\nWhat is 2 plus 4?<|im_end|>\n<|im_start|>assistant\n2 plus 4 = 6.<|im_end|>\n"


def test_ultrafeedback_rows_say_their_prompt_once_and_mix_with_plain_pairs(tiny_llama, tmp_path):
    def turns(q, a):
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    uf = tmp_path / "uf.jsonl"  # HuggingFaceH4/ultrafeedback_binarized: a text prompt, conversations repeating it
    questions = [f"What is {i} plus 1?" for i in range(12)]
    uf.write_text("".join(json.dumps({"prompt": q, "chosen": turns(q, f"{i + 1}."), "rejected": turns(q, "no")}) + "\n"
                          for i, q in enumerate(questions)))
    sft, _ = data.prepare(str(uf), "sft")
    assert sft[0]["messages"] == turns("What is 0 plus 1?", "1.")  # before: user, user, assistant
    spec = DpoSpec(model="x", data=[DataSource(source=str(uf))], max_length=64, **TINY)
    rows, _ = data.prepare(str(uf), "dpo")
    tok, trainer = trainer_for(spec, tiny_llama, rows, tmp_path)  # before: "'list' object has no attribute 'endswith'"
    row = trainer.train_dataset[0]
    assert tok.decode(row["prompt_ids"]) == "<|im_start|>user\nWhat is 0 plus 1?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(row["chosen_ids"]) == "1.<|im_end|>\n"
    # one DPO mix of this file and a plain-text one (before: "The features can't be aligned")
    train, _, report = data.split_mix([(str(uf), 1.0), ("builtin:prefs-mini", 1.0)], "dpo", eval_fraction=0.1)
    assert len(train) == sum(n for _, _, n in report) > 180


def test_a_held_out_row_is_never_also_a_training_row(workspace):
    def key(row):
        return json.dumps(row, sort_keys=True)

    # facts-corpus holds 200 lines, 168 distinct: 8 of its 20 held-out rows were training rows too
    for sources, kind in (([("builtin:facts-corpus", 1.0)], "cpt"), ([("builtin:alpaca-mini", 1.0)], "sft"),
                          ([("builtin:alpaca-mini", 1.0), ("builtin:orca-mini", 2.0)], "cpt")):
        train, held, _ = data.split_mix(sources, kind, seed=0, eval_fraction=0.1)
        trained = {key(r) for r in train}
        assert len(held) >= 15 and not any(key(r) in trained for r in held)
    # the same seed holds out the same rows; another seed others
    first, again, other = (data.split_mix([("builtin:facts-corpus", 1.0)], "cpt", seed=s, eval_fraction=0.1)[1]
                           for s in (0, 0, 1))
    assert first["text"] == again["text"] != other["text"]


@pytest.fixture
def base_model(tiny_llama, tmp_path) -> Path:
    """The tiny Llama without a chat template: a base model."""
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    for f in base.glob("chat_template*"):
        f.unlink()
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert not AutoTokenizer.from_pretrained(base).chat_template
    return base


def test_a_base_model_fine_tunes_on_prompt_completion_and_plain_preference_files(base_model, tmp_path, capsys):
    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": f"Q: {i} plus 1?\nA:", "completion": f" {i + 1}"}) + "\n"
                          for i in range(20)))
    # before: "has no chat template; sft on conversations needs one. Use a prompt/completion file with a base model"
    sft = SftSpec(model=str(base_model), data=[DataSource(source=str(pc))], max_length=32, **TINY)
    assert run_main(sft, base_model, tmp_path)["global_step"] == 1
    dpo = DpoSpec(model=str(base_model), data=[DataSource(source="builtin:prefs-mini")], max_length=64, max_rows=20,
                  **TINY)
    assert run_main(dpo, base_model, tmp_path)["global_step"] == 1
    assert "no chat template: each prompt and reply as plain text" in capsys.readouterr().out
    # the rows trl gets: the completion right after its prompt, then EOS
    rows, _ = data.prepare(str(pc), "sft")
    plain, _ = train_entry.without_chat_template(sft, str(base_model), {"prompt_completion"}, rows, None)
    tok, trainer = trainer_for(sft, base_model, plain, tmp_path)
    assert tok.decode(trainer.train_dataset[0]["input_ids"]) == "Q: 0 plus 1?\nA: 1<|im_end|>"
    with pytest.raises(SystemExit, match=r"sft on conversations \(alpaca\) needs one"):  # still refused
        train_entry.without_chat_template(sft, str(base_model), {"alpaca"}, rows, None)


def test_rows_cut_at_max_length_are_said(tiny_llama, tmp_path, capsys):
    sft = SftSpec(model="x", data=[DataSource(source="builtin:alpaca-mini")], max_length=32, max_rows=20,
                  eval_fraction=0, packing=False, **TINY)
    run_main(sft, tiny_llama, tmp_path)
    assert "data: 20 of 20 rows cut at max_length 32: their tokens past it are never trained on" in \
        capsys.readouterr().out
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "Explain. " * (1 if i % 2 else 40), "chosen": "Yes, it is so.",
                                        "rejected": "No."}) + "\n" for i in range(20)))
    dpo = DpoSpec(model="x", data=[DataSource(source=str(long))], max_length=48, eval_fraction=0, **TINY)
    run_main(dpo, tiny_llama, tmp_path)
    assert "data: 10 of 20 pairs dropped: their prompt alone fills max_length 48" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="every pair's prompt alone fills max_length 16"):  # before: num_samples=0
        run_main(dpo.model_copy(update={"max_length": 16}), tiny_llama, tmp_path / "all")


def test_a_text_file_with_a_byte_order_mark_trains_on_its_text_alone(tmp_path):
    txt = tmp_path / "notepad.txt"
    txt.write_bytes("\ufeffhello world\nsecond line\n".encode())
    rows, _ = data.prepare(str(txt), "cpt")
    assert rows["text"] == ["hello world", "second line"]  # before: '\ufeffhello world'
