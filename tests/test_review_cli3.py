"""Same work, every interface: the Compare page's models × tasks table (`scores`) and its "fewer hallucinations,
or just shorter answers?" comparison (`compare`) from the command line, with the page's numbers and words."""

from __future__ import annotations

from backend import analysis, scoretable
from backend.__main__ import main as cli
from backend.recipe import tables
from tests.test_review_cutoff import base_model, five_cut_off, rambler
from tests.test_review_pages_d import add_generations
from tests.test_review_scores11 import add


def generations(records) -> None:
    add_generations([(r.model, int(r.prompt_id), r.verdict, r.tokens, "math") for r in records], task="synth-math")


def test_scores_prints_the_pages_table_with_standard_errors_and_its_notes(capsys):
    add(("base", "qa", "accuracy", 0.25, 20), ("base", "synth-math", "accuracy", 0.0, 20),
        ("dus", "synth-math", "accuracy", 0.0, 20), ("dus", "perplexity", "perplexity", 42.0, 20))
    assert cli(["scores"]) == 0
    out = capsys.readouterr().out
    rows = scoretable.table_rows(scoretable.latest_scores(), {})
    assert out.startswith(tables.to_markdown(scoretable.export_table(rows)))
    assert "| 0.2500 ± 0.0993 |" in out  # qa: p = 0.25 over 20 items, lm-eval's mean_stderr
    notes = [line.removeprefix("note: ") for line in out.splitlines() if line.startswith("note: ")]
    assert notes == scoretable.table_notes(scoretable.latest_scores(), rows) and any(
        n.startswith("average (accuracy tasks): each model's mean of its own scores on synth-math") for n in notes)
    assert cli(["scores", "dus", "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("model,average (accuracy tasks),") and len(csv) == 2 and csv[1].startswith("dus,0.0,")
    assert cli(["scores", "nobody"]) == 2
    assert "unknown model nobody: neither registered nor evaluated" in capsys.readouterr().err  # review s22


def test_compare_says_what_the_page_says_and_leaves_cut_off_items_out(capsys):
    generations(five_cut_off())
    assert cli(["compare", "A", "B", "--task", "synth-math"]) == 0
    lines = capsys.readouterr().out.splitlines()
    res = analysis.compare(analysis.task_records("synth-math"), "A", "B")
    assert lines[0] == res["sentence"] and "5 of 20 items left out: B's reply was cut off" in lines[0]
    assert lines[1].startswith("hallucination rate A 0.533, B 0.200; A − B +0.333 [")  # 8/15 vs 3/15
    assert lines[1].endswith("(paired bootstrap over 15 items)")
    assert lines[2].startswith("accuracy, McNemar: only A right on ")
    assert lines[3].startswith("within ") and "mean length" in lines[3]


def test_compare_with_no_verdict_and_bad_input(capsys):
    generations(base_model() + rambler("dus", 20))
    assert cli(["compare", "base", "dus", "--task", "synth-math"]) == 1  # no comparison made: not a success
    assert capsys.readouterr().out.startswith("No verdict: 20 of 20 items left out: dus's reply was cut off")
    assert cli(["compare", "base", "ghost", "--task", "synth-math"]) == 2
    # no such model: unknown, not "evaluate first" (review s22)
    assert "unknown model ghost: neither registered nor evaluated" in capsys.readouterr().err
    assert cli(["compare", "base", "dus", "--task", "synth-math", "--bins", "9"]) == 2
    assert "--bins 9: give 2 to 6" in capsys.readouterr().err


def test_compare_outcome_correct_counts_cut_off_as_errors(capsys):
    generations(five_cut_off())
    assert cli(["compare", "A", "B", "--task", "synth-math", "--outcome", "correct"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("not-correct rate A 0.500, B 0.400;") and "over 20 items" in lines[1]


def test_scores_tex_keeps_its_notes_as_latex_comments(capsys):
    add(("base", "qa", "accuracy", 0.25, 20), ("base", "qa", "hallucination_rate", 0.0, 20),
        ("base", "qa", "cut_off_rate", 0.75, 20))
    assert cli(["scores", "--format", "tex"]) == 0
    out = capsys.readouterr().out
    after = out.split(r"\end{table}", 1)[1].strip().splitlines()
    assert after and all(line.startswith("% note: ") for line in after)  # a bare "95 % interval" or "_" broke it
    assert any("Max new tokens (eval --max-new-tokens)" in line for line in after)  # the page's field and the flag
