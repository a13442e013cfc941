"""Session 19's final review of its own changes: a name that is also a noun kept; "one of them" rewording "either
of them"; weight links choosing no cache repo; stored blank replies to the limit read as cut off; mix weights halved
up; a CSV row with more fields than its header refused in words (its text was lost)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import datasets
import pytest

from backend import data
from backend.answerstats import from_generation
from backend.registry import links_out
from backend.synth import quantities
from backend.synth.rephrase import RulesRephraser


def test_a_name_that_is_also_a_noun_keeps_its_capital_a_plural_noun_does_not():
    q = "Bill has $5. He pays a bill of $3. How much money is left?"
    assert "Given that Bill has $5" in RulesRephraser(0).question(q, "Bill pays 3. 5 - 3 = 2. The answer is 2.")
    q = "Pens cost $2 each. How many pens can Sam buy with $10?"
    assert RulesRephraser(0).question(q, "10 / 2 = 5. The answer is 5.").startswith("Given that pens cost $2")


@pytest.mark.parametrize("original, rephrased", [
    ("If either of them leaves, how many remain of the 6?", "If one of them leaves, how many remain of the 6?"),
    ("Any of those 3 doors opens.", "One of those 3 doors opens."),
])
def test_one_of_them_rewords_either_of_them(original, rephrased):
    assert quantities.changed(original, rephrased) == set()


def test_one_of_the_five_for_two_of_the_five_is_still_refused():
    assert quantities.changed("Sam ate 2 of the 5 apples.", "Sam ate one of the 5 apples.") == {1}


def test_weight_links_into_another_cached_repo_choose_no_repo(tmp_path):
    def blob(repo, name):
        p = tmp_path / "hub" / f"models--org--{repo}" / "blobs" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
        return p
    folder = tmp_path / "assembled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    os.symlink(blob("base", "tok"), folder / "tokenizer.json")
    os.symlink(blob("finetune", "w"), folder / "model.bin")  # weights: parsed as weights wherever they point
    assert links_out(folder) == []  # was: tokenizer.json refused, "links point into 2 cached repos"
    os.symlink(blob("other", "cfg"), folder / "generation_config.json")  # a second repo for a file that is read
    assert len(links_out(folder)) == 2 and all("2 cached repos" in w for w in links_out(folder))


def test_a_stored_blank_reply_to_the_limit_reads_as_cut_off():
    row = dict(model="m", correct=False, hallucination=False, answered=False, prompt_id="1", tokens=64,
               item_kind="answerable", verdict="abstained", output="")
    assert from_generation(SimpleNamespace(**row, words=0, truncated=True)).verdict == "cut off"
    assert from_generation(SimpleNamespace(**row, words=0, truncated=False)).verdict == "empty"  # ended at once (s20)
    assert from_generation(SimpleNamespace(**row, words=3, truncated=True)).verdict == "abstained"  # "I don't know"


def test_a_mix_weight_of_a_half_rounds_up():
    one = datasets.Dataset.from_dict({"text": ["a"]})
    assert [len(data._weighted(one, "s", w, 0)) for w in (1.5, 2.5, 3.5, 0.07 * 100)] == [2, 3, 4, 7]


def test_a_csv_row_with_more_fields_than_its_header_is_refused_in_words(tmp_path):
    f = tmp_path / "book.csv"
    f.write_text("text\nhello, world\nfoo, bar\n")
    with pytest.raises(data.DataError, match=r'book\.csv, line 2: 2 fields where the header names 1 column: a cell '
                                             r'holding a comma must be quoted \("hello, world"\)'):
        data.load_source(str(f))
    f.write_text('text\n"hello, world"\nfoo\n')
    assert data.load_source(str(f))["text"] == ["hello, world", "foo"]
    f.write_text("instruction;output\nhi, there;4\n")  # a comma inside a ';' file is text
    assert data.load_source(str(f))[:] == {"instruction": ["hi, there"], "output": ["4"]}
