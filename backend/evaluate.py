"""Evaluation jobs: every model on the same tasks, scores stored per model and task, with where each set came from.

    python -m backend eval SmolLM2-135M-Instruct SmolLM2-135M-Instruct-dus-m8 --tasks perplexity synth-math qa

Tasks:
  perplexity            held-out text (default data/heldout-text.txt: facts no built-in training set mentions), or
                        perplexity:FILE (a .txt, rows with a text column, or a conversation or instruction layout
                        backend/data.py reads for continued pretraining, not preference pairs: each row's text
                        as continued pretraining reads it); token-weighted over the texts, its standard error
                        (the row perplexity_stderr, the tables' ±) a bootstrap over the texts, as lm-eval bootstraps
                        its perplexity (it gives its token-weighted word/byte perplexities none; evalscore.py says how)
  synth-math            exact final answer on data/eval-math.jsonl: word problems outside the training generator's
                        problem space (data/make_builtin.py says why no question can equal a training question)
  qa[:FILE]             closed-book QA with abstention (backend/qa.py): accuracy, abstention rate, hallucination
                        rate and precision, per item kind (answerable / unanswerable / math)
  mc:FILE               multiple choice by log-likelihood (ARC / HellaSwag / MMLU / TruthfulQA / Winogrande style):
                        JSONL rows {"question": str, "choices": [str, …], "answer": index}; acc and acc_norm,
                        each log-likelihood as lm-eval's HFLM computes it (choice_logprob)
  gsm8k:FILE            generation accuracy on GSM8K-format rows {"question", "answer": "… #### n"}
  lm-eval:TASK          lm-evaluation-harness (backend/lmeval.py when present)

Every score row records its source, a fingerprint of the items (none for a Hub lm-eval task, whose items are not
read here), how the task was run (settings: limit, token cap, samples, prompt format, the model's own decoding
settings), and the n-gram overlap of those items with the training data of the model's whole lineage
(backend/heldout.py; not for lm-eval tasks), plus the score on the non-overlapping items only.
Items are all read and validated before any model loads; a task that fails stores nothing and fails the job.
A resumed job keeps the (model, task) scores its earlier run stored and scores only the rest; a model none of
whose tasks is left is not loaded.
On CUDA models run in bfloat16 with sdpa and a batch fitted to free memory (backend/evaldevice.py).

The work is in three modules: backend/evaltasks.py reads and checks each task's items (task_set), backend/evalscore.py
scores them on a loaded model (score_task) and says how (settings), backend/evaljob.py runs the job (run_eval) and
stores the scores. This module is their import point: `from backend.evaluate import run_eval` as before. A test that
replaces a function (monkeypatch) replaces it where it is looked up: `evaljob.score_task`, `evalscore.generate`.
"""

from __future__ import annotations

from backend import evaldevice, heldout, qa, registry
from backend.evaljob import NONE_MADE, Progress, _load, missing_models, run_eval, stored_by_job, stored_name
from backend.evalscore import (MAX_LENGTH, MC_CONTEXT, SAMPLING, SET_BY_GENERATE, SYSTEM_HINT, UNSET_MAX_LENGTH,
                               answer_task, choice_logprob, context_length, decoding_extras, generate, mc_items,
                               multiple_choice, perplexity, perplexity_items, qa_task, run_lm_eval, score_task,
                               settings)
from backend.evaltasks import (FILE_TASKS, EvalError, EvalFailed, TaskSet, _stratified, check_task, read_jsonl,
                               task_set)

__all__ = ["EvalError", "EvalFailed", "FILE_TASKS", "MAX_LENGTH", "MC_CONTEXT", "NONE_MADE", "Progress", "SAMPLING",
           "SET_BY_GENERATE", "SYSTEM_HINT", "TaskSet", "UNSET_MAX_LENGTH", "_load", "_stratified", "answer_task",
           "check_task", "choice_logprob", "context_length", "decoding_extras", "evaldevice", "generate", "heldout",
           "mc_items", "missing_models", "multiple_choice", "perplexity", "perplexity_items", "qa", "qa_task",
           "read_jsonl", "registry", "run_eval", "run_lm_eval", "score_task", "settings", "stored_by_job",
           "stored_name", "task_set"]
