"""Review session 24, a browser walk's screens: a job cancelled while running says in its row what a resume does, the
step names the Jobs page's button by its label, and the paper's mixes saved for a second pairs set are refused with
the way out (their names are fixed: "choose another name for the mix" could not be done)."""

from __future__ import annotations

import json

import pytest

from backend import runner
from backend.runner.messages import what_resume_does
from backend.synth.datasets import DatasetError, get_dataset, save_dataset, save_mix, save_paper_mixes
from storage.models import Job
from tests.test_review_cli import add

# ---------------------------------------------------------------- 1, 2. a running job's cancel; the button's label


def test_a_training_cancelled_while_running_says_in_its_row_what_a_resume_does(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    job, = add(Job(kind="sft", spec={"kind": "sft"}, status="running", run_dir=str(tmp_path / "run")))
    row = runner.cancel(job.id)
    assert (row.status, row.message) == ("cancelled", (
        f"cancelled; resume it to continue from its last checkpoint, checkpoint-20 (python -m backend jobs resume "
        f"{job.id}, or \"Resume from the last checkpoint\" on the Jobs page)"))
    queued, = add(Job(kind="sft", spec={"kind": "sft"}, status="queued"))  # it ran nothing: nothing to add
    assert runner.cancel(queued.id).message == "cancelled before it started"


def test_the_step_names_the_button_by_its_label():
    for kind, label in (("sft", "Restart (no checkpoint was saved)"), ("upscale", "Run again"), ("eval", "Run again")):
        job = Job(id=7, kind=kind, spec={}, status="failed")
        assert runner.messages.resume_action(job).label == label
        assert what_resume_does(job).endswith(f"(python -m backend jobs resume 7, or \"{label}\" on the Jobs page)")


# ---------------------------------------------------------------- 3. the paper's mixes for a second pairs set

def _export(tmp_path, prefix: str) -> None:
    f = tmp_path / f"{prefix}-instruct.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                 + "\n")
    save_dataset(f"{prefix}-instruct", "synth-instruct", str(f), 1, {})
    g = tmp_path / f"{prefix}-alignment.jsonl"
    g.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    save_dataset(f"{prefix}-alignment", "synth-alignment", str(g), 1, {})


def test_the_paper_mixes_for_a_second_pairs_set_name_the_first_and_the_way_out(tmp_path):
    _export(tmp_path, "p")
    _export(tmp_path, "q")
    assert len(save_paper_mixes("p-pairs")) == 6
    assert len(save_paper_mixes("p-pairs")) == 6  # the button twice: nothing changes
    with pytest.raises(DatasetError) as refused:
        save_paper_mixes("q-pairs")
    assert str(refused.value) == (
        "The paper's mixes sft-v3, sft-v4 and dpo-v2 are already saved for the pairs set p-pairs (mixing its "
        "Instruct / Alignment sets), and a name holds one data set. Nothing was saved. To save the paper's mixes for "
        "q-pairs, delete them first: python -m backend datasets delete sft-v3 (then sft-v4, dpo-v2 the same way), or "
        "with the Synthetic math page's \"Delete a data set\".")
    assert [x["source"] for x in get_dataset("sft-v4").provenance["sources"]] == ["builtin:alpaca-mini",
                                                                                   "dataset:p-instruct"]


def test_a_paper_mix_name_held_by_another_data_set_is_said_once_with_the_way_out(tmp_path):
    _export(tmp_path, "p")
    save_mix("sft-v1", [("builtin:orca-mini", 1.0)], "sft")
    with pytest.raises(DatasetError) as refused:
        save_paper_mixes("p-pairs")
    said = str(refused.value)
    assert said == ("A mix data set is already named 'sft-v1' (a mix of builtin:orca-mini×1 for sft). Nothing was "
                    "saved. To save the paper's mixes for p-pairs, delete it first: python -m backend datasets "
                    "delete sft-v1, or with the Synthetic math page's \"Delete a data set\".")
    assert said.count("saved") == 1 and get_dataset("sft-v2") is None
