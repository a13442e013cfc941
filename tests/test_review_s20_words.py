"""Twentieth review, words and small structures: `jobs wait`'s flags on its own parser, the Jobs page's picker in
linear time, byte units under 1 GiB (evaluation's device check, the memory plan's parts and overhead), "None" cells
on the pages' tables, and a started worker's start time kept on its process."""

from __future__ import annotations

import re
import time

import pytest

from backend import evaldevice, memplan
from backend.evaldevice import DeviceError, ModelShape
from tests.test_pages import app
from tests.test_review_s18_pages import fake_worker  # noqa: F401 (fixture)

MiB, GiB = 2 ** 20, 2 ** 30


# ---------------------------------------------------------------- 1. the jobs CLI's flags belong to `wait`

def _jobs_parser():
    from backend.__main__ import build_parser

    parser = build_parser()
    return parser, next(a for a in parser._subparsers._group_actions[0].choices["jobs"]._actions
                        if a.dest == "action").choices


@pytest.mark.parametrize("action", ["show", "cancel", "resume", "exec"])
def test_only_wait_and_log_take_a_poll_and_only_wait_a_timeout(action, capsys):
    """--timeout/--poll were added after the loop that built show, cancel, resume, exec and wait, to the loop's
    last parser: they reached `wait` only because it came last."""
    parser, actions = _jobs_parser()
    options = {o for a in actions[action]._actions for o in a.option_strings}
    assert options == {"-h", "--help"}
    with pytest.raises(SystemExit):
        parser.parse_args(["jobs", action, "3", "--timeout", "5"])
    assert "unrecognized arguments: --timeout 5" in capsys.readouterr().err
    a = parser.parse_args(["jobs", "wait", "3", "--timeout", "5"])
    assert (a.action, a.id, a.timeout, a.poll) == ("wait", 3, 5.0, 2.0)
    a = parser.parse_args(["jobs", "log", "3"])
    assert (a.poll, a.lines, a.follow) == (1.0, 60, False)
    assert not hasattr(parser.parse_args(["jobs", action, "3"]), "timeout")


# ---------------------------------------------------------------- 2. the Jobs page's picker: one label per job

class _CountedId(int):
    """A job id that counts the comparisons made with it: the picker's format_func searched the job list per
    option (2,000 jobs shown: about 2,000,000 comparisons a rerun)."""
    compared = 0

    def __eq__(self, other):
        type(self).compared += 1
        return int(self) == other

    __hash__ = int.__hash__


def test_the_jobs_picker_labels_each_job_once_not_by_searching_the_list(monkeypatch):
    from backend import runner
    from storage import db
    from storage.models import Job

    n = 600
    with db.session() as s:
        s.add_all(Job(kind="merge", spec={"name": f"m-{i}"}, status="succeeded", progress=1.0) for i in range(n))
        s.commit()
    real = runner.list_jobs

    def counted(*a, **k):
        jobs = real(*a, **k)
        for j in jobs:
            j.id = _CountedId(j.id)
        return jobs

    monkeypatch.setattr(runner, "list_jobs", counted)
    at = app("jobs.py")
    at.selectbox(key="jobs_shown").set_value(0).run()  # all
    _CountedId.compared = 0
    at.run()
    assert not at.exception
    picker = at.selectbox(key="job")
    assert len(picker.options) == n and picker.options[0] == f"{n} · merge · m-{n - 1}"
    assert _CountedId.compared < 10 * n  # was n²/2 = 180,000 (the table's "same jobs?" check: n)


# ---------------------------------------------------------------- 3. evaluation's device check: MiB under 1 GiB

def test_a_small_model_that_does_not_fit_is_said_in_mib_not_as_0_0_gib():
    tiny = ModelShape(30_000, 6, 2, 8, 300)
    with pytest.raises(DeviceError) as exc:
        evaldevice.plan(tiny, cuda=True, free_bytes=100 * MiB)
    # was "the model needs about 0.0 GiB in bfloat16 (+1 GiB working memory) but the GPU has 0.1 GiB free"
    assert str(exc.value).startswith("the model needs about 64.5 KiB in bfloat16 (+1 GiB working memory) but the "
                                     "GPU has 100 MiB free; ")
    note = evaldevice.plan(tiny, cuda=True, free_bytes=3 * GiB).note
    assert "(fits 256: 3 GiB free, 193 KiB per sequence of 512 tokens; scoring whole texts: batch 256, 846 KiB " \
           "per text of 256 tokens)" in note  # was "0.2 MiB", "0.8 MiB"
    with pytest.raises(DeviceError, match=r"needs about 2\.05 GiB .* has 1\.5 GiB free"):
        evaldevice.plan(ModelShape(10 ** 9, 22, 4, 64, 32000), cuda=True, free_bytes=int(1.5 * GiB))


# ---------------------------------------------------------------- 4. the memory plan's overhead says its unit

TINYLLAMA = {"model_type": "llama", "num_hidden_layers": 22, "hidden_size": 2048, "intermediate_size": 5632,
             "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000, "tie_word_embeddings": False}


@pytest.mark.parametrize("device, avail, what", [("cuda", [80 * GiB], "the CUDA context and allocator slack"),
                                                 ("cpu", [16 * GiB], "the process itself")])
def test_the_memory_plan_says_each_part_and_the_overhead_with_a_unit(device, avail, what):
    shape = memplan.shape_from_config(TINYLLAMA)
    plan = memplan.estimate(shape, memplan.Setup(batch=1, seq=2048, device=device))
    v = memplan.verdict(plan, avail, "H100", memplan.compare_strategies(shape, plan.setup, avail))
    # was "(weights 2.0, gradients 2.0, optimizer 4.1, activations 4.2, overhead 1.3)": a bare 1.3 read as a factor
    parts = v.split(" (", 1)[1].split(")")[0]
    size = r"\d+(\.\d+)? [KMG]iB"
    assert re.fullmatch(rf"weights {size}, gradients {size}, optimizer {size}, activations {size}, and {size} of "
                        f"overhead for {what}", parts), parts


# ---------------------------------------------------------------- 6. no "None" in the pages' tables

def _no_none_shown(at) -> list[str]:
    """The tables that show the word None: a missing value without a placeholder, or str(None) in a cell."""
    bad = []
    for i, df in enumerate(at.dataframe):
        v = df.value
        if v.isna().any().any() and not df.proto.HasField("placeholder"):
            bad.append(f"table {i}: a missing value without a placeholder (shown as None)")
        if (v.astype(object).map(lambda x: x == "None")).any().any():
            bad.append(f"table {i}: the text None")
    return bad


def test_the_recipe_pages_tables_show_a_dash_for_no_value_not_none():
    from storage import db
    from storage.models import RecipeRun
    from tests.test_review_s18_ui2 import _run_with_scores

    run_id = _run_with_scores()  # no jobs; c2 has no synth-math score
    with db.session() as s:
        s.add_all([RecipeRun(name="r", text="budget: {max_steps: 2}\n"),
                   RecipeRun(name="r", text="budget: {max_steps: 2, eval_limit: 5}\n")])
        s.commit()
    at = app("recipe.py")
    at.selectbox(key="recipe_run_pick").select(run_id).run()
    at.multiselect(key="compare_runs").set_value([run_id + 1, run_id + 2]).run()
    assert not at.exception, at.exception
    assert len(at.dataframe) >= 3 and _no_none_shown(at) == []
    stages = at.dataframe[0].value
    assert stages["job"].isna().all() and at.dataframe[0].proto.placeholder == "—"  # no job yet: "—", not "None"
    diff = at.dataframe[-1].value
    assert diff["field"].tolist() == ["budget.eval_limit"] and sorted(diff.iloc[0, 1:]) == ["5", "—"]


# ---------------------------------------------------------------- 7. a started worker's start time rides on it

def test_a_started_workers_start_time_is_kept_on_its_process(fake_worker):
    import pages.common

    _, started = fake_worker
    at = app("jobs.py")
    before = time.monotonic()
    at.button(key="start_worker").click().run()
    assert pages.common._started == started and before - 60 < started[0].started_at <= time.monotonic()
    assert not hasattr(pages.common, "_started_at")  # one structure: no dict of pids beside the list
    started[0].started_at -= 65  # alive past UP_WITHIN without a beat: said stuck, as before
    at.run()
    assert any(f"(process {started[0].pid}) has not come up" in w.value for w in at.warning)


def test_a_long_named_merges_default_name_keeps_every_candidate():
    """Past 60 characters the joined names were cut: the second candidate vanished from the name
    ("SmolLM2-135M-Instruct-dus-m8-cpt-sft-openher-83f888-slerp0.5"). Each candidate now keeps a share."""
    from backend.names import check_name
    from backend.specs import MergeSpec

    a = "SmolLM2-135M-Instruct-dus-m8-cpt-sft-openhermes-2.5"
    b = "Qwen2.5-0.5B-Instruct-dus-m12-cpt-sft-dpo-ultrafeedback"
    assert MergeSpec(models=[a, b], method="slerp").default_name() == \
        "SmolLM2-135M-Instruct-dus-m8_Qwen2.5-0.5B-931d29-slerp0.5"  # the digest: of the candidates and the tag
    three = MergeSpec(models=[a, b, "Llama-3.2-1B"], method="linear").default_name()
    assert three == "SmolLM2-135M_Qwen2.5-0.5B_Llama-3.2-1B-66cc27-average"
    names = {MergeSpec(models=[x, y], method=m, **({"base": "b0"} if m == "ties" else {})).default_name()
             for x, y in ((a, b), (a, "Org/" + b), ("x" * 90, "y" * 90)) for m in ("slerp", "linear", "ties")}
    assert len(names) == 9 and all(len(n) <= 60 and check_name(n) == n for n in names), names
    assert MergeSpec(models=["m1", "m2"], method="slerp").default_name() == "m1_m2-slerp0.5"  # short: unchanged


def test_evaluate_and_merge_say_a_chosen_model_deleted_since_and_queue_nothing_on_that_click(tiny_llama):
    """Evaluate quietly dropped a model deleted in another tab and queued the rest on the same click."""
    from backend import registry, runner

    for name in ("blocker", "keep", "other"):
        registry.import_folder(tiny_llama, name)
    at = app("compare.py")
    at.multiselect(key="eval_models").set_value(["blocker", "keep"]).run()
    at.multiselect(key="merge_models").set_value(["blocker", "other"]).run()
    registry.delete("blocker")
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception
    said = [w.value for w in at.warning]
    assert "blocker was deleted since you chose it (in another tab or from the command line), and is left out. " \
           "Check the models, then click Evaluate again." in said
    assert any(w.startswith("blocker was deleted since you chose it") and "click Merge again" in w for w in said)
    assert at.multiselect(key="eval_models").value == ["keep"] and runner.list_jobs() == []
    at.button(key="evaluate").click().run()  # the user has seen it: this click queues the models left
    assert [j.spec["models"] for j in runner.list_jobs()] == [["keep"]]
