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
