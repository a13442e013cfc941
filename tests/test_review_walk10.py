"""What a walk through the dashboard in the browser found: a folder that is no model was queued for import and
failed only when its turn came, the length histograms drew each bar half a bin to the left, and a JSON error lost
its position ("Unterminated string starting at")."""

from __future__ import annotations

import pytest

from backend import data, registry, runner
from backend.registry import RegistryError
from backend.specs import ImportSpec
from pages.figures import length_histogram_figure


def test_a_folder_without_config_json_is_refused_before_queueing(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "01.png").write_bytes(b"\x89PNG")
    with pytest.raises(RegistryError, match=f"{shots} has no config.json: it is not a Hugging Face model folder"):
        runner.submit(ImportSpec(target=str(shots)))
    assert runner.list_jobs() == []
    (shots / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="config.json is not valid JSON"):
        registry.check_import(str(shots))


def test_each_length_bar_spans_its_bin():
    hist = {"q_words": [(0, 3), (5, 7)], "new_q_words": [(10, 1)]}
    fig = length_histogram_figure(hist, [("q_words", "original", "#111"), ("new_q_words", "rephrased", "#222")],
                                  "Question length", 5)
    orig, reph = fig.data
    assert list(orig.x) == [2.5, 7.5] and list(reph.x) == [12.5] and orig.width == 5  # 0–4 centred on 2.5, not 0
    assert list(orig.customdata) == ["0–4", "5–9"] and list(orig.y) == [3, 7]


def test_a_json_error_says_where_on_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "yo"}\n{"prompt": "x\n')
    with pytest.raises(data.DataError) as exc:
        data.load_source(str(bad))
    assert str(exc.value) == ("bad.jsonl, line 2, column 12: not valid JSON (Unterminated string starting there). "
                              "Each line must be one JSON object.")


def test_the_pinned_model_column_is_as_wide_as_its_longest_name():
    """A fixed 400 px column held "SmolLM2-135M-Instruct" and "walk-avg" and pushed half the scores out of sight."""
    from pages.figures import NAME_CHARS, name_width

    assert name_width(["SmolLM2-135M-Instruct", "walk-avg"]) == 7 * 21 + 24 == 171
    assert name_width(["a"]) == 100 and name_width(["x" * NAME_CHARS]) == 400
