"""Review s26, page imports: the Train page's first visit built the model on the meta device for its memory plan,
importing transformers' modeling code, accelerate and torch._dynamo into the dashboard (~2 s of CPU, ~130 MB on
every fresh server). The shape is now kept in the workspace (backend/memplan/shape.py), keyed by the config's text."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from backend import registry
from backend.memplan import shape

ROOT = Path(__file__).resolve().parent.parent
# what building a model pulls in, and what the page must never need to draw itself
DEFERRED = ["accelerate", "transformers.modeling_utils", "transformers.generation.utils", "torch._dynamo", "trl",
            "peft", "lm_eval"]

PAGE_RUN = f"""
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=120)
at.switch_page("pages/train.py")
at.run()
plans = [d.value for d in at.dataframe if "strategy" in d.value.columns]
print(json.dumps({{"exception": [str(e.value) for e in at.exception],
                  "loaded": [m for m in {DEFERRED!r} if m in sys.modules],
                  "plan": [[str(s), float(t)] for s, t in zip(plans[0]["strategy"], plans[0]["total (GiB)"])]
                          if plans else None}}))
"""


@pytest.fixture
def fresh_shapes():
    """The process-wide lru_cache in front of the kept files emptied, before and after: a shape another test built in
    this process would otherwise be returned without a file being read or written."""
    shape._shape_cached.cache_clear()
    yield
    shape._shape_cached.cache_clear()


def test_train_page_draws_the_memory_plan_without_building_the_model(tiny_llama, fresh_shapes):
    rec = registry.import_folder(tiny_llama, "tiny")
    shape.load_shape(rec.path)  # as the import job or an earlier visit leaves it: the shape kept in the workspace
    out = subprocess.run([sys.executable, "-c", PAGE_RUN], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["exception"] == []
    assert got["loaded"] == []  # before: accelerate, transformers.modeling_utils, generation.utils, torch._dynamo
    assert got["plan"] and got["plan"][0][0].endswith("(this spec)") and got["plan"][0][1] > 0


def test_a_kept_shape_is_read_back_whole_and_a_bad_one_is_rebuilt(tiny_llama, fresh_shapes, monkeypatch):
    built = shape.load_shape(tiny_llama)
    text = (tiny_llama / "config.json").read_text()
    kept = shape._shape_file(text)
    assert kept.is_file() and kept.parent.parent.parent == Path(shape.db.workspace())
    shape._shape_cached.cache_clear()

    def no_build(folder):
        raise AssertionError("built again although the shape was kept")

    monkeypatch.setattr(shape, "_build_shape", no_build)
    again = shape.load_shape(tiny_llama)
    assert again == built and again.linears == built.linears and again.param_sizes == built.param_sizes
    assert again.lora_params(8) == built.lora_params(8) > 0
    # a damaged file (a disk that filled up mid-write elsewhere) is built again and rewritten, never a wrong plan
    kept.write_text('{"layers": 6')
    shape._shape_cached.cache_clear()
    monkeypatch.setattr(shape, "_build_shape", lambda folder: replace(built, layers=99))
    assert shape.load_shape(tiny_llama).layers == 99
    assert json.loads(kept.read_text())["layers"] == 99
    # another config text (an edited config.json) is another file
    assert shape._shape_file(text.replace('"num_hidden_layers": 6', '"num_hidden_layers": 4')) != kept
