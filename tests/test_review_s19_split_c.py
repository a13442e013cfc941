"""backend/evaluate.py and backend/analysis.py split into modules under the house's ~500 lines, without a change:
each stays the import point of every name it had, as the same object its new module holds, and the evaluation's
errors keep the name a traceback in a job's log gives them. A test that replaces one of these functions
(monkeypatch) replaces it in the module that looks it up (evaljob.score_task, evalscore.generate, …): see
backend/evaluate.py's docstring."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from backend import analysis, answerstats, claimtext, evaljob, evalscore, evaltasks, evaluate, lengthfit

ROOT = Path(__file__).resolve().parent.parent
# every name the two modules defined before the split, and the modules they bound that callers reach through them
EVALUATE = ["Progress", "SYSTEM_HINT", "MAX_LENGTH", "SAMPLING", "UNSET_MAX_LENGTH", "MC_CONTEXT", "EvalError",
            "EvalFailed", "_load", "perplexity_items", "perplexity", "context_length", "choice_logprob", "mc_items",
            "multiple_choice", "read_jsonl", "generate", "answer_task", "qa_task", "_stratified", "TaskSet",
            "task_set", "FILE_TASKS", "check_task", "run_lm_eval", "score_task", "settings", "SET_BY_GENERATE",
            "decoding_extras", "stored_by_job", "stored_name", "missing_models", "NONE_MADE", "run_eval",
            "evaldevice", "heldout", "qa", "registry"]
ANALYSIS = ["MIN_ITEMS", "MIN_CLUSTERS", "FEW_ITEMS", "CUT_OFF", "CUT_OFF_LARGE", "RAISE_CAP", "RAISE_LIMIT",
            "OUTCOMES", "RATE_LABEL", "is_bad", "Record", "from_generation", "task_records", "cut_shares",
            "answered_models", "pair_records", "bin_edges", "bin_of", "bins_of", "word_bins", "by_length_bin",
            "length_controlled", "shared_items", "judged_items", "expanded_tail", "paired_bootstrap", "preload",
            "mcnemar_accuracy", "Separation", "length_model", "sentence", "_few_items_note", "_points", "compare",
            "length_curves"]


@pytest.mark.parametrize("face, parts, names", [
    (evaluate, (evaltasks, evalscore, evaljob), EVALUATE),
    (analysis, (answerstats, lengthfit, claimtext), ANALYSIS)])
def test_every_name_is_still_reached_through_the_old_module(face, parts, names):
    missing = [n for n in names if not hasattr(face, n)]
    assert missing == []
    assert sorted(face.__all__) == sorted(set(face.__all__))
    for n in names:  # the same object: an isinstance check or an `is` comparison sees no difference
        homes = [p for p in parts if n in vars(p) and getattr(p, n) is getattr(face, n)]
        assert homes or n == "compare", n


def test_the_errors_keep_their_name_in_a_traceback():
    with pytest.raises(evaluate.EvalError) as err:
        evaluate.task_set("no-such-task", 1)
    assert traceback.format_exception_only(err.type, err.value)[0] == (
        "backend.evaluate.EvalError: unknown task 'no-such-task'\n")
    assert issubclass(evaluate.EvalFailed, evaluate.EvalError) and issubclass(evaluate.EvalFailed, RuntimeError)
    assert f"{evaluate.EvalFailed.__module__}.{evaluate.EvalFailed.__qualname__}" == "backend.evaluate.EvalFailed"


def test_the_modules_stay_under_the_house_size():
    files = ["evaluate", "evaltasks", "evalscore", "evaljob", "analysis", "answerstats", "cutoff", "lengthfit",
             "claimtext"]
    sizes = {f: len((ROOT / "backend" / f"{f}.py").read_text().splitlines()) for f in files}
    assert max(sizes.values()) <= 500, sizes


def test_a_patch_where_the_name_is_looked_up_reaches_the_caller(monkeypatch):
    """The trap of the split, shown: pair_records looks task_records up in answerstats, so a patch on the import
    point alone no longer reaches it, and one on answerstats does."""
    rec = analysis.Record(model="a", words=1, correct=True, hallucination=False, prompt_id="1")
    monkeypatch.setattr(analysis, "task_records", lambda task, models=None: [rec])
    with pytest.raises(ValueError, match="no answers of a, b on synth-math"):
        analysis.pair_records("synth-math", "a", "b")
    monkeypatch.setattr(answerstats, "task_records", lambda task, models=None: [rec, rec.__class__(
        model="b", words=2, correct=False, hallucination=True, prompt_id="1")])
    assert [r.model for r in analysis.pair_records("synth-math", "a", "b")] == ["a", "b"]
