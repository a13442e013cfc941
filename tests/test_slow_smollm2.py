"""Slow tests on the real built-in SmolLM2-135M-Instruct (about a minute on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend import registry
from backend.specs import UpscaleSpec
from backend.upscale import run_upscale

pytestmark = pytest.mark.slow

SAMPLE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris, a city on the Seine known for the Eiffel "
                                     "Tower, the Louvre museum and its cafes."},
    {"role": "user", "content": "How many legs does a spider have?"},
    {"role": "assistant", "content": "A spider has eight legs. Insects have six, which is one way to tell them "
                                     "apart."},
]


def loss_on(folder: Path, text: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


def test_builtin_dus_m8_scores_below_its_base_before_training():
    base = registry.import_builtin()
    assert (base.num_layers, base.hidden_size, base.num_parameters) == (30, 576, 134_515_008)
    result = run_upscale(UpscaleSpec(base=base.name, m=8))
    up = registry.get(result["model"])
    assert up.num_layers == 44 and up.parents == [base.name]
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(base.path).apply_chat_template(SAMPLE, tokenize=False)
    base_loss, up_loss = loss_on(Path(base.path), text), loss_on(Path(up.path), text)
    print(f"loss on chat text: base {base_loss:.3f}, DUS m=8 {up_loss:.3f}")
    # SOLAR's observation: the up-scaled model first scores below its base (continued pretraining recovers it)
    assert up_loss > base_loss + 0.1
    # and cached decoding equals uncached on the real 44-layer model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(up.path, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(up.path)("12 times 7 is", return_tensors="pt").input_ids
    a = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
    b = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
