"""The training job's parts (what `accelerate launch` runs on every process is backend/train_entry.py, whose main()
puts them together): `model` loads the model and tokenizer and builds trl's config and trainer, `rows` loads the
training and held-out rows and says what max_length cuts, `metrics` logs every value (metrics.jsonl and the job's
rows), `resume` goes on from the run folder's last checkpoint."""

import torch

CUDA = torch.cuda.is_available()
