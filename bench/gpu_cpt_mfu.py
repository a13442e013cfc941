"""GPU benchmark: tokens/s and model-FLOPs utilisation of continued pretraining, TinyLlama 1.1B shape (22 layers)
and its DUS up-scaled version (m=5 -> 34 layers), sequence 2048, bf16, random tokens.

    python bench/gpu_cpt_mfu.py                       # on a CUDA machine; --peak 989e12 is the H100/H200 bf16 peak
    python bench/gpu_cpt_mfu.py --tiny --steps 3      # exercise the code path on a CPU (no meaningful numbers)

Two paths per depth, same model and data: DUS Studio's training configuration (`train_entry.make_config`, the
one every cpt job uses) through trl's SFTTrainer, and a plain bf16 PyTorch loop (AdamW, fused where available) as
the peer. MFU counts 6·N·tokens plus attention (12·L·d·s per token) over the datasheet peak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_model(layers: int, tiny: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=512) if tiny else \
        dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
             vocab_size=32000)
    cfg = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=4096, tie_word_embeddings=False,
                      attn_implementation="sdpa", **shape)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return LlamaForCausalLM(cfg).to(dtype)


def flops_per_token(model, seq: int) -> float:
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq


def plain_loop(model, batch: int, seq: int, steps: int) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=torch.cuda.is_available())
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            torch.cuda.synchronize() if device == "cuda" else None
            t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if device == "cuda" else None
    return batch * seq * steps / (time.perf_counter() - t0)


def studio_trainer(model, batch: int, seq: int, steps: int) -> float:
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from trl import SFTTrainer

    from backend.specs import CptSpec, DataSource
    from backend.train_entry import make_config

    spec = CptSpec(model="bench", data=[DataSource(source="builtin:facts-corpus")], max_steps=steps + 2,
                   batch_size=batch, max_length=seq, eval_fraction=0.0, save_steps=10**9, logging_steps=1)
    rows = Dataset.from_dict({"input_ids": torch.randint(0, model.config.vocab_size, (batch * (steps + 2) * 2, seq))
                              .tolist()})
    times: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        # the data is already token ids: the trainer's collator only needs a pad and an eos token
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
            {"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>")), pad_token="<pad>", eos_token="<eos>",
            unk_token="<unk>")
        args = make_config(spec, Path(tmp), False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok, callbacks=[Clock()])
        trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times.append(time.perf_counter())
    measured = times[2:]  # skip two warm-up steps
    return batch * seq * (len(measured) - 1) / (measured[-1] - measured[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--peak", type=float, default=989e12, help="datasheet bf16 dense peak, FLOP/s")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes, to check the script on a CPU")
    a = ap.parse_args()
    if a.tiny:
        a.batch, a.seq = 2, 64
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}; batch {a.batch} x seq {a.seq}; {a.steps} timed steps; peak {a.peak:.3g} FLOP/s")
    print(f"{'layers':>6} {'path':22} {'tokens/s':>10} {'MFU':>7}")
    for layers in (22, 34):
        for label, fn in (("plain bf16 loop", plain_loop), ("dus-studio trl config", studio_trainer)):
            model = make_model(layers, a.tiny)
            fpt = flops_per_token(model, a.seq)
            tps = fn(model, a.batch, a.seq, a.steps)
            print(f"{layers:6d} {label:22} {tps:10.0f} {tps * fpt / a.peak:7.1%}", flush=True)
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
