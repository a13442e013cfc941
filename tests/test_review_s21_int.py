"""Twenty-first session, integration of the helpers' changes: the Recipe tables write a huge or infinite score as
the models × tasks table does, and a LaTeX export of an infinite one compiles."""
from __future__ import annotations

from backend.recipe import tables
from backend.recipe.tables import Table


def test_recipe_tables_write_a_huge_perplexity_compactly_and_infinity_in_latex():
    assert tables._cell(3.2e17) == "3.2e17"  # was "3.2e+17"
    assert tables._cell(309.7419) == "309.742"  # as before
    assert tables._cell(float("inf")) == "∞"
    assert tables._tex(float("inf")) == r"$\infty$"  # pdflatex has no ∞ in text
    t = Table("t", "T", ["model", "ppl"], [["a", float("inf")], ["b", 3.2e17]])
    assert "| a | ∞ |" in tables.to_markdown(t) and "| b | 3.2e17 |" in tables.to_markdown(t)
    assert tables.to_csv(t).splitlines()[1:] == ["a,inf", "b,3.2e+17"]  # the CSV keeps the exact value


def test_qa_and_seed_files_nested_too_deeply_name_their_line(tmp_path):
    """A bare RecursionError reached the Evaluate and Synthetic-math pages."""
    import pytest

    from backend import qa
    from backend.synth import seeds

    deep = "[" * 100_000 + "]" * 100_000
    good = '{"id": 1, "question": "q?", "answers": ["a"], "answerable": true}'
    (f := tmp_path / "qa.jsonl").write_text(good + "\n" + deep + "\n")
    with pytest.raises(qa.QAError, match=r"^qa.jsonl, line 2: nested too deeply"):
        qa.load_items(f)
    (s := tmp_path / "seeds.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n\n' + deep + "\n")
    with pytest.raises(seeds.SeedError, match=r"^seeds, line 3: nested too deeply .* MATH's \{problem, solution\}"):
        seeds.read_records(s, "seeds")
    (j := tmp_path / "seeds.json").write_text(deep)
    with pytest.raises(seeds.SeedError, match=r"^seeds is nested too deeply"):
        seeds.read_records(j, "seeds")
