"""Nineteenth review of the pages: a worker started from the page that never comes up, an arena round whose models
do not fit on the GPU together, finished jobs' numbers in words, the recipe editor beside the run picked, the Jobs
and Monitor pages. No GPU here: torch.cuda's memory readings are a fake GPU (tests/test_review_s18_pages.py)."""

from __future__ import annotations

import shutil
import time

from backend import evaldevice, registry
from tests.test_pages import tiny  # noqa: F401 (fixture)
from tests.test_review_s18_pages import fake_worker, gpu  # noqa: F401 (fixtures)


# ---------------------------------------------------------------- a started worker that never beats

def test_a_started_worker_that_never_beats_is_said_stuck_with_its_log_and_can_be_restarted(fake_worker,
                                                                                              monkeypatch):
    """A worker alive but hung (in an import, on a database it cannot reach) read "The job worker is starting"
    for as long as it hung, with no log and no way out but a terminal."""
    import pages.common
    from tests.test_pages import app

    run, started = fake_worker
    run["code"] = "print('connecting to postgresql://db:5432', flush=True); import time; time.sleep(60)"
    at = app("jobs.py")
    at.button(key="start_worker").click().run()
    assert any("is starting" in i.value for i in at.info)  # within UP_WITHIN: starting, as before
    # its start put back past UP_WITHIN (60 s: a healthy worker beats within seconds)
    started[0].started_at -= 65  # (the old banner kept no start time: still "starting")
    deadline = time.monotonic() + 20  # its first line reaches the log
    while "connecting" not in (pages.common.db.workspace() / "logs" / "worker.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    at.run()
    assert not any("is starting" in i.value for i in at.info)
    (said,) = [w.value for w in at.warning if "has not come up" in w.value]
    assert f"process {started[0].pid}" in said and "1 min 5 s without a heartbeat" in said
    assert any("connecting to postgresql://db:5432" in c.value for c in at.code)
    assert "start_worker" not in [b.key for b in at.button]
    at.button(key="restart_worker").click().run()
    assert started[0].poll() is not None and len(started) == 2 and started[1].poll() is None  # stopped, another
    assert any(f"starting (process {started[1].pid})" in i.value for i in at.info)


def test_span_says_durations_as_people_do():
    from pages.common import span

    assert [span(s) for s in (3.21, 48.4, 59.6, 200.37, 3600, 7530, 120)] == \
        ["3.2 s", "48 s", "1 min", "3 min 20 s", "1 h", "2 h 5 min", "2 min"]


# ---------------------------------------------------------------- an arena round on a full GPU

def _registered(tiny_llama, tmp_path, *names: str) -> None:
    for n in names:
        registry.import_folder(shutil.copytree(tiny_llama, tmp_path / n), n)


def test_an_arena_round_whose_second_model_does_not_fit_lets_go_of_the_first(gpu, tiny_llama, tmp_path):
    """Room for one model, a round of two: b was refused beside a, which the round held (the cache's retry could not
    free it), the error said every model had been unloaded, and a's memory stayed reserved after the round."""
    from tests.test_pages import app

    _registered(tiny_llama, tmp_path, "a", "b")
    at = app("arena.py")
    at.multiselect(key="arena_models").set_value(["a", "b"])
    at.chat_input(key="arena_prompt").set_value("hello").run()
    assert not at.exception
    (said,) = [e.value for e in at.error]
    assert said.startswith("Not run: a model cannot be loaded: b does not fit on the GPU beside a, loaded first for "
                           "the same round"), said
    assert "choose fewer or smaller models" in said and "GiB free" in said  # evaldevice's numbers follow
    assert gpu.loads == ["a"] and gpu.used() == 0
    assert gpu.reserved == 0  # a's memory given back (it stayed reserved: taken from the worker's jobs)


def test_an_arena_round_that_fits_still_runs_after_letting_go_of_other_cached_models(gpu, tiny_llama, tmp_path):
    """Room for two: x, cached by an earlier page, is let go when b does not fit beside a and x; the round runs."""
    from pages.common import current_model
    from tests.test_pages import app

    gpu.capacity = evaldevice.RESERVE + gpu.weights * 5 // 2
    _registered(tiny_llama, tmp_path, "a", "b", "x")
    current_model(str(tmp_path / "x"), "x")
    at = app("arena.py")
    at.multiselect(key="arena_models").set_value(["a", "b"])
    at.chat_input(key="arena_prompt").set_value("hello").run()
    assert not at.exception and not at.error
    assert gpu.loads == ["x", "a", "b"]  # x let go, b loaded beside a
    from storage import db
    from storage.models import ChatTranscript

    with db.session() as s:
        t = s.get(ChatTranscript, at.session_state["arena_round"])
    assert sorted(t.answers) == ["a", "b"] and not any(a["error"] for a in t.answers.values())


# ---------------------------------------------------------------- a finished job's numbers in words

def _done(job_id: int, result: dict, message: str, status: str = "succeeded") -> None:
    from backend import runner

    runner._update(job_id, status=status, progress=1.0, result=result, message=message)


def test_a_finished_jobs_result_is_said_in_the_units_the_pages_use(tiny):
    """"done: model tiny-dus, layers 12, parameters 102432, seconds 200.37" in the status box and the table: the
    runner's message (for `jobs list`) said again from the result, as the Build page says parameters."""
    from backend import runner
    from backend.specs import CptSpec, DataSource, UpscaleSpec
    from tests.test_pages import app

    up = runner.submit(UpscaleSpec(base="tiny", m=2, name="tiny-dus")).id
    _done(up, {"model": "tiny-dus", "path": "/w/models/tiny-dus", "layers": 12, "parameters": 135_000_000,
               "seconds": 200.37}, "done: model tiny-dus, layers 12, parameters 135000000, seconds 200.37")
    cpt = runner.submit(CptSpec(model="tiny", name="t-cpt", data=[DataSource(source="builtin:facts-corpus")])).id
    _done(cpt, {"model": "t-cpt", "run_dir": "/w/runs/1", "global_step": 1200, "train_loss": 2.3456,
                "eval_loss": None, "train_seconds": 7530.2, "tokens_seen": 1_234_567, "peak_memory_gib": 1.234,
                "perf": {"attn": "sdpa"}},
          "done: model t-cpt, global_step 1200, train_loss 2.3456, train_seconds 7530.2, tokens_seen 1234567, "
          "peak_memory_gib 1.234")
    at = app("jobs.py")
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[up, "message"] == "done: model tiny-dus, layers 12, 135.0M parameters, work took 3 min 20 s"
    assert table.loc[cpt, "message"] == ("done: model t-cpt, 1,200 steps, train loss 2.3456, training took 2 h 5 min, "
                                         "1.2M tokens seen, peak memory 1.23 GiB (GPU or CPU RAM)")
    at.selectbox(key="job").set_value(up).run()
    assert [s.value for s in at.success] == \
        [f"Job {up} (upscale): succeeded — done: model tiny-dus, layers 12, 135.0M parameters, work took 3 min 20 s"]
    assert runner.get(up).message.endswith("parameters 135000000, seconds 200.37")  # stored raw: `jobs list`, JSON


# ---------------------------------------------------------------- the recipe editor beside the run picked

def test_the_recipe_editor_opens_on_the_picked_runs_recipe_and_says_what_it_shows(tiny):
    """The editor opened on the solar-mini preset while the Run picker showed the newest run: a user reading run 2's
    stages saw another recipe above them, and nothing said which."""
    import yaml

    from backend import recipe
    from tests.test_pages import app

    texts = {}
    for steps in (2, 3):
        d = yaml.safe_load(recipe.preset("smoke", "tiny"))
        d["budget"] = {"max_steps": steps, "max_rows": 20, "eval_limit": 5}
        texts[recipe.run_recipe(yaml.safe_dump(d, sort_keys=False), queue=True)[-1]] = f"max_steps: {steps}"
    first, second = sorted(texts)
    at = app("recipe.py")
    assert at.selectbox(key="recipe_run_pick").value == second
    editor = at.text_area(key="recipe_yaml").value
    assert editor == _run_text(second) and texts[second] in editor and "solar" not in editor
    assert any(c.value == f"The editor shows run {second}'s recipe (smoke, as it was run)." for c in at.caption)
    assert "recipe_edit_run" not in [b.key for b in at.button]
    at.selectbox(key="recipe_run_pick").set_value(first).run()  # unedited: it follows the picker
    assert at.text_area(key="recipe_yaml").value == _run_text(first)
    # edited: kept when another run is picked, said edited, and the picked run's recipe offered
    at.text_area(key="recipe_yaml").set_value(_run_text(first) + "# mine\n").run()
    at.selectbox(key="recipe_run_pick").set_value(second).run()
    assert at.text_area(key="recipe_yaml").value.endswith("# mine\n")
    assert any(c.value == f"The editor shows run {first}'s recipe (smoke, as it was run), edited since."
               for c in at.caption)
    at.button(key="recipe_edit_run").click().run()
    assert at.text_area(key="recipe_yaml").value == _run_text(second)
    at.selectbox(key="recipe_preset").set_value("solar-mini").run()
    at.button(key="recipe_load").click().run()
    assert any(c.value == "The editor shows the solar-mini preset." for c in at.caption)
    assert "recipe_edit_run" in [b.key for b in at.button]


def test_the_recipe_editor_opens_on_the_preset_when_nothing_has_run():
    from tests.test_pages import app

    at = app("recipe.py")
    assert "name: solar-mini" in at.text_area(key="recipe_yaml").value
    assert any(c.value == "The editor shows the solar-mini preset." for c in at.caption)


def _run_text(run_id: int) -> str:
    from backend import recipe

    return next(r.text for r in recipe.runs() if r.id == run_id)


# ---------------------------------------------------------------- the Jobs and Monitor pages as a user reads them

def test_a_stopped_job_of_any_kind_offers_what_its_message_promises(tiny):
    """"interrupted: … resume it to go on (Jobs page, or python -m backend jobs resume 1)": the Jobs page offered
    Resume to training jobs alone, so an evaluation or a build stopped by a worker's end had no button."""
    from backend import runner
    from backend.specs import EvalSpec, UpscaleSpec
    from tests.test_pages import app

    ev = runner.submit(EvalSpec(models=["tiny"], tasks=["perplexity"])).id
    runner._update(ev, status="interrupted", message="interrupted: its process ended without finishing (worker or "
                   f"machine stopped); resume it to go on (Jobs page, or python -m backend jobs resume {ev})")
    up = runner.submit(UpscaleSpec(base="tiny", m=2, name="tiny-dus")).id
    runner._update(up, status="failed", error="Not enough disk space in /w: free some space.", message="failed")
    at = app("jobs.py")
    at.selectbox(key="job").set_value(ev).run()
    # it stored no score (runner.messages.resume_action): run again, as `jobs resume` says
    assert [b.label for b in at.button if b.key == f"resume_{ev}"] == ["Run again"]
    at.button(key=f"resume_{ev}").click().run()
    assert (runner.get(ev).status, runner.get(ev).message) == ("queued", "queued to resume")
    at.selectbox(key="job").set_value(up).run()
    assert [b.label for b in at.button if b.key == f"resume_{up}"] == ["Run again"]
    at.button(key=f"resume_{up}").click().run()
    assert runner.get(up).status == "queued" and not at.exception


def test_a_started_worker_that_beat_and_then_hung_is_said_to_have_stopped_answering(fake_worker):
    import json

    from backend import runner
    from tests.test_pages import app

    _, started = fake_worker
    at = app("jobs.py")
    at.button(key="start_worker").click().run()
    pid = started[0].pid
    runner.heartbeat_path().write_text(json.dumps({"pid": pid, "time": time.time() - 600}))  # beat, 10 min ago
    started[0].started_at -= 3600
    at.run()
    (said,) = [w.value for w in at.warning if f"(process {pid})" in w.value]
    assert "stopped answering: its last heartbeat was 10 min ago" in said
    assert "restart_worker" in [b.key for b in at.button]
