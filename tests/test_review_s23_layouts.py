"""walk23b (a user's own data): trl's conversational prompt/completion rows, trl's default completion-only loss for
prompt/completion files (said in the log), training rows that the built-in evaluation sets hold, and the refusals
that say what to do (plain text for SFT, tool calls, raw UltraFeedback)."""

import json

import pytest

from backend import data
from backend.specs import DataSource, SftSpec


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trl_conversational_prompt_completion_rows_are_read_as_trl_joins_them(tmp_path):
    """{"prompt": [turns], "completion": [turns]} (trl.data_utils.is_conversational; SFTTrainer tokenizes prompt +
    completion) was refused as "row 1: prompt must be text; got list" though the whole file had the form."""
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}?"}],
             "completion": [{"role": "assistant", "content": f"A{i}."}]} for i in range(3)]
    ds, layout = data.prepare(str(_jsonl(tmp_path / "pc.jsonl", rows)), "sft")
    assert layout == "prompt_completion"
    assert ds[1]["messages"] == rows[1]["prompt"] + rows[1]["completion"]
    pc = data.to_prompt_completion(ds)  # the form trl takes back: the same split
    assert pc[2]["prompt"] == rows[2]["prompt"] and pc[2]["completion"] == rows[2]["completion"]
    mixed = _jsonl(tmp_path / "mixed.jsonl", [{"prompt": [{"role": "user", "content": "Q?"}], "completion": "A."}])
    with pytest.raises(data.DataError, match="row 1: completion must be a list of {role, content} turns like the "
                                             "other side; got str: both prompt and completion text, or both"):
        data.prepare(str(mixed), "sft")


@pytest.mark.parametrize("only", [None, False])
def test_a_prompt_completion_file_learns_the_completion_alone_by_default(tiny_llama, tmp_path, capsys, only):
    """trl's completion_only_loss=None learns a prompt/completion row's completion alone; we turned the rows into
    messages and learned every prompt token, and the log said nothing. A spec with completion_only_loss false (every
    spec saved before, which stores it) keeps learning every token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import perf
    from backend.train_entry import build_trainer, load_rows, make_config

    f = _jsonl(tmp_path / "pc.jsonl", [{"prompt": f"question {i} asks", "completion": f"answer {i} is here"}
                                        for i in range(4)])
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    assert tok.chat_template
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(f))], max_steps=1, max_length=64,
                   packing=False, eval_fraction=0.0, **({} if only is None else {"completion_only_loss": only}))
    train, evals = load_rows(spec, str(tiny_llama), tok)
    log = capsys.readouterr().out
    args = make_config(spec, tmp_path / "run", False, perf.resolve(spec, False))
    trainer = build_trainer(spec, AutoModelForCausalLM.from_pretrained(tiny_llama), None, tok, args, train, None, [])
    assert trainer.completion_only_loss is (only is None)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    learned = tok.decode([t for t in batch["labels"][0].tolist() if t != -100])
    assert "answer" in learned
    if only is None:
        assert "question" not in learned, learned
        assert "loss: on each row's completion only, not its prompt (auto: trl's default for prompt/completion" in log
    else:
        assert "question" in learned, learned
        assert "loss: on every token of each row, its prompt and reply alike (completion_only_loss)" in log


def test_every_sft_job_says_what_its_loss_covers(tiny_llama, tmp_path, capsys):
    """Conversations keep trl's default for them (every token), and the log says so and how to change it."""
    from transformers import AutoTokenizer

    from backend.train_entry import load_rows

    f = _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"},
                                                       {"role": "assistant", "content": f"a{i}"}]} for i in range(3)])
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(f))], eval_fraction=0.0)
    train, _ = load_rows(spec, str(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama))
    assert train.column_names == ["messages"]
    assert ("loss: on every token of each row, its prompt and reply alike (auto: trl's default for conversations; "
            "completion_only_loss true learns the replies alone)") in capsys.readouterr().out


def test_a_spec_saved_with_completion_only_loss_false_keeps_it():
    spec = SftSpec.model_validate_json(json.dumps({"model": "m", "data": [{"source": "x.jsonl"}],
                                                   "completion_only_loss": False}))
    assert spec.completion_only_loss is False and SftSpec(model="m", data=[{"source": "x"}]).completion_only_loss \
        is None


def test_the_cli_can_turn_completion_only_loss_off():
    from backend.__main__ import build_parser

    parse = build_parser().parse_args
    args = ["train", "sft", "--model", "m", "--data", "x.jsonl"]
    assert parse(args + ["--no-completion-only-loss"]).completion_only_loss is False
    assert parse(args).completion_only_loss is None


def test_training_rows_copied_from_a_builtin_evaluation_set_are_said(tiny_llama, tmp_path, capsys):
    """SFT on rows copied from data/eval-math.jsonl trained without a word; the evaluation's held-out check (the same
    measure) flagged the scores only after the run."""
    from transformers import AutoTokenizer

    from backend import heldout
    from backend.synth.contamination import ContaminationIndex
    from backend.train_entry import load_rows
    from backend.train_job.overlap import eval_overlap

    items = [json.loads(x) for x in heldout.eval_path("eval-math").read_text().splitlines()[:3]]
    rows = [{"instruction": f"Say the number {i} in words, please.", "output": f"{i}"} for i in range(40)]
    rows[7:7] = [{"instruction": it["question"], "output": it["answer"]} for it in items]
    f = _jsonl(tmp_path / "contam.jsonl", rows)
    found = eval_overlap([{"instruction": it["question"]} for it in items])
    assert found["eval-math"][1] == 200 and found["eval-math"][2] == 3  # qa-closed-book asks such problems too
    assert found["eval-math"][0] >= 3  # the three copied items at least (others of their template share 8-grams)
    assert eval_overlap(rows[:7]) == {}
    # the evaluation's own measure (evaljob: an index of every training row, items over its threshold) agrees
    full = ContaminationIndex([heldout.row_text(r) for r in rows], heldout.NGRAM)
    questions = [json.loads(x)["question"] for x in heldout.eval_path("eval-math").read_text().splitlines()]
    assert eval_overlap(rows)["eval-math"][:3] == (sum(full.overlap(q) >= 0.3 for q in questions), 200, 3)
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(f))], eval_fraction=0.0)
    load_rows(spec, str(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama))
    log = capsys.readouterr().out
    assert any(f"data: 3 of the rows trained on (after the held-out split, max_rows and weights) overlap the built-in evaluation set eval-math (one: '{it['question'][:30]}"
               in log for it in items), log
    assert f"): {found['eval-math'][0]} of its 200 items share 30% or more of their 8-word runs with them" in log


@pytest.mark.parametrize("rows, kind, said", [
    ([{"text": "a line of prose"}], "sft", "Plain text is for continued pretraining: use train cpt"),
    ([{"source": "evol", "instruction": f"Q{i}?", "models": ["a"], "completions": [{"model": "a", "response": "A."}]}
      for i in range(2)],
     "dpo", "use its binarized form, HuggingFaceH4/ultrafeedback_binarized (prompt, chosen, rejected)"),
    ([{"messages": [{"role": "user", "content": "hi"},
                    {"role": "assistant", "content": None,
                     "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "content": "1"}, {"role": "assistant", "content": "done"}]}],
     "sft", "row 1: messages, turn 2: a tool call (tool_calls, content null): tool calls are not supported"),
])
def test_refusals_say_what_to_do(tmp_path, rows, kind, said):
    with pytest.raises(data.DataError) as err:
        data.prepare(str(_jsonl(tmp_path / "f.jsonl", rows)), kind)
    assert said in str(err.value)


def test_without_a_chat_template_conversational_prompt_completion_of_several_turns_is_refused(tiny_llama, tmp_path):
    """A base model reads prompt/completion as plain text: a one-turn conversational row is its texts; a system turn
    too was dropped without a word (the first turn alone was kept)."""
    from transformers import AutoTokenizer

    from backend.train_entry import load_rows

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = None
    one = [{"prompt": [{"role": "user", "content": f"Q{i}?"}], "completion": [{"role": "assistant", "content": "A."}]}
           for i in range(3)]
    spec = SftSpec(model=str(tiny_llama), data=[DataSource(source=str(_jsonl(tmp_path / "one.jsonl", one)))],
                   eval_fraction=0.0)
    train, _ = load_rows(spec, str(tiny_llama), tok)
    assert sorted(train["prompt"]) == ["Q0?", "Q1?", "Q2?"] and train["completion"] == ["A."] * 3
    system = [{**r, "prompt": [{"role": "system", "content": "Be brief."}] + r["prompt"]} for r in one]
    spec = spec.model_copy(update={"data": [DataSource(source=str(_jsonl(tmp_path / "sys.jsonl", system)))]})
    with pytest.raises(SystemExit, match="has no chat template, and the prompt/completion rows hold conversations of "
                                         "several turns"):
        load_rows(spec, str(tiny_llama), tok)
