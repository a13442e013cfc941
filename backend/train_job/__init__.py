"""The training job's parts (what `accelerate launch` runs on every process is backend/train_entry.py, whose main()
puts them together): `model` loads the model and tokenizer and builds trl's config and trainer, `rows` loads the
training and held-out rows and says what max_length cuts, `metrics` logs every value (metrics.jsonl and the job's
rows), `resume` goes on from the run folder's last checkpoint."""

import torch

CUDA = torch.cuda.is_available()


def weights_dtype(cuda: bool | None = None) -> torch.dtype:
    """The dtype a training loads its model in (model.load_model), and so saves it in: bf16 on CUDA, float32 on a
    CPU. The space its output folder needs is counted in it (outputs.weights_bytes)."""
    return torch.bfloat16 if (CUDA if cuda is None else cuda) else torch.float32
