"""Session 25 review: math answers stated with units or "is:" were scored wrong (and counted as hallucinations);
TIES/DARE density defaulted to 0.5 where mergekit's is 1.0; weights summing to zero were refused for average only."""

import pytest
from pydantic import ValidationError

from backend import qa
from backend.__main__ import build_parser
from backend.merge import MergeError, without_base
from backend.recipe.plan import _budgeted
from backend.recipe.spec import Budget
from backend.specs import MergeSpec, explain
from backend.synth import answers
from backend.synth.answers import extract_answer, stated_answer
from backend.synth.pipeline import verify
from backend.synth.seeds import Seed

# (reply, reference): each right, each scored "wrong" before (the span to the end of the line compared as a number)
RIGHT = [("The answer is 18 dollars.", "18"),
         ("The answer is 5 apples.", "5"),
         ("The answer is: 12", "12"),
         ("The answer is 7 (seven).", "7"),
         ("#### 72 dollars", "72"),
         ("She pays 3 + 4 = 7 in all. The answer is $1,250 per month.", "1250"),
         ("The answer is **18**.", "18"),
         ("The answer is 3 + 4 = 7.", "7"),
         ("The answer is 2 1/2 cups.", "5/2")]


@pytest.mark.parametrize("reply, ref", RIGHT)
def test_a_right_answer_with_words_after_it_is_correct(reply, ref):
    assert qa.classify(reply, [ref], "math") == "correct"


def test_the_number_that_opens_the_statement_is_the_answer():
    assert [stated_answer(r) for r, _ in RIGHT] == ["18", "5", "12", "7", "72", "1,250", "18", "7", "2 1/2"]
    assert extract_answer("Answer: -5 degrees") == "-5" and stated_answer("#### The answer is 72") == "72"
    assert stated_answer("\\boxed{2^{10}}") == "2^{10}"  # a boxed answer is taken whole, not its first number
    assert stated_answer("The answer is 18. Check: 18 + 0 = 18.") == "18"
    assert stated_answer("No statement, just 18 and 19.") is None


@pytest.mark.parametrize("reply", ["The answer is unknown", "The answer is 18 or 19", "The answer is 18-19.",
                                   "The answer is 18, 19", "The answer is 2^{10}"])
def test_no_number_or_a_hedge_stays_wrong(reply):
    """A statement that is no number, or offers two: lm-eval's strict regex reads "18 or 19" as 18; here a hedge is
    not credited with whichever of its numbers is the reference (answers.py says so)."""
    assert qa.classify(reply, ["18"], "math") == "wrong"
    assert qa.classify(reply, ["19"], "math") == "wrong"


def test_the_scores_of_replies_with_units():
    """Five right replies (units, "is:", a note after the number), one wrong, one hedge: accuracy 5/7 and
    hallucination rate 2/7; before, accuracy 0 and every one of them a hallucination."""
    replies = [(r, ref) for r, ref in RIGHT[:5]] + [("The answer is 19 dollars.", "18"),
                                                    ("The answer is 18 or 19", "18")]
    got = qa.summarise([qa.classify(r, [ref], "math") for r, ref in replies])
    assert got == {"accuracy": 5 / 7, "abstention_rate": 0.0, "hallucination_rate": 2 / 7, "cut_off_rate": 0.0,
                   "empty_rate": 0.0, "precision": 5 / 7, "n": 7}


def test_synth_verification_reads_the_answer_the_same_way():
    seed = Seed(id="s1", category="arithmetic", level=1, question="q", solution="#### 18", answer="18")
    assert verify(seed, "She has 12 + 6 = 18 dollars.\nThe answer is 18 dollars.") == ("verified", "", "18")
    assert verify(seed, "The answer is 19 dollars.") == ("failed", "answer changed: 19 ≠ 18", "19")


def test_density_defaults_to_mergekits_one():
    """mergekit 0.1.5 (merge_methods/generalized_task_arithmetic.py): density's default is 1.0; ours was 0.5."""
    ties = MergeSpec(models=["a", "b"], method="ties", base="c")
    assert ties.density == 1.0 and ties.default_name() == "a_b-ties-d1"
    merge = build_parser(["merge"])._subparsers._group_actions[0].choices["merge"]
    assert next(a.help for a in merge._actions if a.dest == "density").endswith("(default: 1, mergekit's: every "
                                                                                 "entry kept)")


def test_a_spec_stored_with_the_old_default_still_loads():
    """Every stored spec (a job's, a model card's) carries density 0.5 whatever its method: refused for an average
    now that 0.5 is not the default, no old merge's spec could be read back."""
    old = MergeSpec.model_validate({"kind": "merge", "models": ["a", "b"], "method": "average", "density": 0.5})
    assert old.method == "average" and old.default_name() == "a_b-average"
    with pytest.raises(ValueError, match="density .* is for ties"):
        MergeSpec(models=["a", "b"], density=0.3)


def test_a_recipe_stage_without_density_hashes_its_new_default():
    """A recipe's ties stage without density was made at 0.5 before; its hash body now says 1.0, so that model is
    not taken for this stage's. Other merges' bodies are unchanged."""
    assert _budgeted({"method": "ties", "models": ["a", "b"], "base": "c"}, "merge", Budget())["density"] == 1.0
    assert _budgeted({"method": "dare", "models": ["a", "b"], "base": "c"}, "merge", Budget())["density"] == 1.0
    assert _budgeted({"method": "ties", "density": 0.3}, "merge", Budget())["density"] == 0.3
    assert "density" not in _budgeted({"models": ["a", "b"]}, "merge", Budget())


@pytest.mark.parametrize("method", ["average", "task_arithmetic", "ties", "dare_linear", "dare_ties"])
@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.3, -0.1, -0.2], [0.0, 0.0]])
def test_zero_sum_weights_with_normalize_are_refused_for_every_method(method, weights):
    """Normalized by a sum of zero (or its rounding error: 0.3 - 0.1 - 0.2 is 1.5e-8 in float32), a float16 merge was
    all inf; only an average with an exactly zero sum was refused."""
    models = ["a", "b", "x"][:len(weights)]
    base = {} if method == "average" else {"base": "c"}
    with pytest.raises(ValidationError) as exc:
        MergeSpec(models=models, method=method, weights=weights, normalize=True, **base)
    assert explain(exc.value) == (
        "weights: they sum to zero, so they cannot be normalized by their sum; change a weight, or untick "
        "\"Normalize by the weights' sum\" (normalize: false in a spec, --no-normalize on the command line).")
    assert MergeSpec(models=models, method=method, weights=weights, normalize=False, **base).weights == weights
    assert MergeSpec(models=models, method=method, weights=[1.0, -0.9, 0.0][:len(weights)], normalize=True, **base)


def test_zero_sum_weights_left_when_the_base_is_listed_are_refused(tmp_path):
    """The base listed among the models has no task vector: its weight is dropped, and the others' may sum to 0."""
    for n in ("base", "a", "b"):
        (tmp_path / n).mkdir()
    base, a, b = (str(tmp_path / n) for n in ("base", "a", "b"))
    spec = MergeSpec(models=[base, a, b], method="ties", base=base, weights=[1.0, 1.0, -1.0])
    with pytest.raises(MergeError, match="the others' weights sum to zero"):
        without_base(spec)
    kept = without_base(spec.model_copy(update={"normalize": False}))
    assert kept.models == [a, b] and kept.weights == [1.0, -1.0]


# ---------------------------------------------------------------- the late review's cases

@pytest.mark.parametrize("reply, expected", [
    ("The answer is 12 dollars per hour x 5 hours = 60 dollars.", 60),  # an equation's result past a unit (was 12)
    ("The answer is 18, 19.", None), ("The answer is 1, 2", None),  # two numbers (to_number read 1819 and 12)
    ("The answer is 1,000.", 1000), ("The answer is $1,250,000.", 1250000),  # thousands separators still read
])
def test_an_equations_result_and_two_numbers_split_by_a_comma(reply, expected):
    assert answers.to_number(answers.stated_answer(reply)) == expected
