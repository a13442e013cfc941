"""lm-evaluation-harness (EleutherAI's lm-eval 0.4.13) on any registered model, as an evaluation task.

    python -m backend eval MODEL --tasks lm-eval:dus_truthfulqa_mini lm-eval:dus_gsm8k_mini     # offline
    python -m backend eval MODEL --tasks lm-eval:h6 --limit 100                                  # needs the internet

Three kinds of names after `lm-eval:`
  local tasks   task YAMLs under backend/lm_eval_tasks/ with their data files beside them (loaded through
                lm-eval's TaskManager(include_path=…)); they run offline: the Hub is switched off while they run.
  presets       h6: the six Open LLM Leaderboard (v1) tasks the SOLAR paper reports (arXiv 2312.15166, Table 2),
                each with the leaderboard's few-shot count and metric, plus their average.
  hub tasks     any task lm-eval registers (arc_easy, gsm8k, mmlu, …); lm-eval downloads its data from the Hugging
                Face Hub, which needs the internet (or the data already in the local Hugging Face cache).

The model runs through lm-eval's own HF model class (HFLM). In an evaluation job it wraps the model the job has
already loaded (float32 on the CPU, bfloat16 on CUDA; backend/evaldevice.py), so a 10.7B model is not held twice.
Scores are fractions in [0, 1], as lm-eval reports them; the published numbers in PAPER_H6 are percentages. The
leaderboard ran an older, pinned harness; lm-eval 0.4.13's versions of the same tasks may differ in details.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"

# Open LLM Leaderboard v1 ("H6"), as the SOLAR paper reports it: (lm-eval task, few-shot, metric).
# lm-eval's truthfulqa_mc2 reports mc2 under the name "acc"; gsm8k's "#### n" strict match is exact_match.
H6 = (("arc_challenge", 25, "acc_norm"), ("hellaswag", 10, "acc_norm"), ("mmlu", 5, "acc"),
      ("truthfulqa_mc2", 0, "acc"), ("winogrande", 5, "acc"), ("gsm8k", 5, "exact_match"))
PRESETS = {"h6": H6}
# Groups the leaderboard scored as the plain mean of their subjects: it ran MMLU as its 57 hendrycksTest-* tasks and
# averaged their accuracies (src/leaderboard/read_evals.py: np.mean over the matching results), while lm-eval 0.4's
# `mmlu` group weights each subject by its size (_mmlu.yaml, weight_by_size: True; lm-eval issue #1525: about a point
# apart without --limit, equal with a --limit that every subject reaches). In a preset these are scored the
# leaderboard's way, beside PAPER_H6; `lm-eval:mmlu` alone stays lm-eval's own figure.
SUBJECT_MEAN = {"mmlu"}

# Published H6 scores (percent) to show beside ours, keyed like run_lm_eval's preset metrics. Only numbers checked
# against a source are here: the Open LLM Leaderboard results in the model-index of the Hugging Face model card of
# upstage/SOLAR-10.7B-Instruct-v1.0 (the same numbers as the paper's Table 2). The card's GSM8K entry, the H6
# average, and the rows for SOLAR 10.7B (base), Mistral 7B, Llama 2 70B and the other models of Table 2 could not
# be checked here, so they are left out rather than quoted from memory.
PAPER_H6: dict[str, dict[str, float]] = {
    "SOLAR-10.7B-Instruct-v1.0": {"arc_challenge/acc_norm": 71.08, "hellaswag/acc_norm": 88.16, "mmlu/acc": 66.21,
                                  "truthfulqa_mc2/acc": 71.43, "winogrande/acc": 83.58},
}
PAPER_H6_SOURCE = ("Hugging Face model card of upstage/SOLAR-10.7B-Instruct-v1.0, model-index (Open LLM Leaderboard); "
                   "SOLAR 10.7B paper, arXiv 2312.15166, Table 2")


class LmEvalError(ValueError):
    pass


@dataclass
class LmEvalResult:
    scores: dict[str, float]  # metric -> value in [0, 1]; stderr values as METRIC_stderr
    n: int  # items scored (all tasks of a preset together)
    details: dict = field(default_factory=dict)  # per task: items, few-shot, lm-eval version
    samples: dict = field(default_factory=dict)  # task -> lm-eval's per-item records, when asked for


@lru_cache(maxsize=1)
def _local_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASK_DIR), include_defaults=False)


@lru_cache(maxsize=1)
def _hub_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()  # indexes lm-eval's ~15k task YAMLs: seconds, so built once per process


def local_tasks() -> list[str]:
    return list(_local_manager().all_tasks)


def expand(name: str) -> list[tuple[str, int | None, str | None]]:
    """A preset's (task, few-shot, headline metric) list, or the single task with its own defaults."""
    return list(PRESETS.get(name, ((name, None, None),)))


def _unknown(name: str) -> LmEvalError:
    return LmEvalError(
        f"lm-eval task {name!r} is unknown. Local tasks (offline, backend/lm_eval_tasks/): "
        f"{', '.join(local_tasks())}; presets: {', '.join(PRESETS)}. Any task lm-eval registers (arc_easy, gsm8k, "
        "mmlu, …) also works, but downloads its data from the Hugging Face Hub, which needs the internet.")


def resolve(name: str):
    """The TaskManager that knows `name`, and whether it is local; a clear error for a name nobody knows."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmEvalError("lm-evaluation-harness is not installed: .venv/bin/pip install lm-eval==0.4.13 "
                          "(requirements.txt pins it).") from None
    if name in local_tasks():
        return _local_manager(), True
    hub = _hub_manager()
    if name not in hub.all_tasks:
        raise _unknown(name)
    return hub, False


@contextmanager
def offline():
    """Switch the Hugging Face Hub off for datasets and huggingface_hub, which read these flags at import time."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    env = {k: os.environ.get(k) for k in keys}
    flags = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    os.environ.update({k: "1" for k in keys})
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = flags


def _load_tasks(manager, name: str, local: bool):
    """lm-eval Task / Group objects for `name`, with their data loaded; data errors say what to do."""
    try:
        loaded = manager.load([name])
    except Exception as exc:  # only data loading happens here: a Hub data set offline, a missing local file
        where = ("its data files under backend/lm_eval_tasks/data" if local else
                 "its data set from the Hugging Face Hub. Hub tasks need the internet (or the data already in the "
                 "local Hugging Face cache, with HF_DATASETS_OFFLINE=1); the local tasks "
                 f"({', '.join(local_tasks())}) run offline")
        raise LmEvalError(f"lm-eval task {name!r}: could not load {where} ({type(exc).__name__}: {exc}).") from None
    top = loaded.get("groups", {}).get(name) or loaded["tasks"].get(name)
    if top is None:  # a tag: several tasks with no score of their own
        raise LmEvalError(f"lm-eval name {name!r} is a tag for {', '.join(sorted(loaded['tasks']))}: give one of "
                          "these task names (or a group) instead.")
    return [top]


def _clean(key: str) -> str | None:
    """lm-eval's "metric,filter" keys -> flat names: acc, acc_norm, exact_match, exact_match_flexible_extract."""
    metric, _, filt = key.partition(",")
    if not filt:
        return None  # "alias", "samples" and other non-metric fields
    stderr = metric.endswith("_stderr")
    base = metric.removesuffix("_stderr")
    name = base if filt in ("none", "strict-match") else f"{base}_{filt.replace('-', '_')}"
    return f"{name}_stderr" if stderr else name


def _flat(row: dict) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        name = _clean(key)
        if name and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def subject_mean(res: dict, metric: str) -> tuple[float, float | None, int]:
    """(the unweighted mean of `metric` over a group's leaf tasks, its standard error, how many): the leaves are
    the tasks lm-eval counted items for (`n-samples`); the error of a mean of independent subjects,
    sqrt(sum se_i^2) / k."""
    rows = [_flat(res["results"][leaf]) for leaf in res.get("n-samples", {}) if leaf in res["results"]]
    values = [r[metric] for r in rows if metric in r]
    if not values:
        raise LmEvalError(f"lm-eval reported no {metric!r} for the subjects of this group.")
    errors = [r.get(f"{metric}_stderr") for r in rows if metric in r]
    se = (sum(e * e for e in errors) ** 0.5 / len(values)) if all(isinstance(e, float) for e in errors) else None
    return sum(values) / len(values), se, len(values)


def make_lm(folder: Path | None = None, *, model=None, tokenizer=None, device: str | None = None,
            batch_size: int | str | None = None):
    """lm-eval's HFLM around an already loaded model, or loaded from `folder` (float32 on CPU, bfloat16 on CUDA)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    if model is not None:
        cuda = model.device.type == "cuda"
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size or ("auto" if cuda else 8))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    return HFLM(pretrained=str(folder), device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
                batch_size=batch_size or ("auto" if cuda else 8))


def run_lm_eval(folder: Path | None, task: str, limit: int | None, *, model=None, tokenizer=None,
                device: str | None = None, batch_size: int | str | None = None, max_new_tokens: int | None = None,
                keep_samples: bool = False) -> LmEvalResult:
    """Run an lm-eval task or preset on a model; `limit` items per task (per subtask for groups such as mmlu).

    `batch_size`: None picks lm-eval's "auto" (fitted to GPU memory) on CUDA and 8 on the CPU.
    `max_new_tokens` caps generation in the local tasks (lm-eval's max_gen_toks, default 256); lm-eval's own tasks
    keep their YAML's generation settings, so their scores stay comparable with published ones.
    """
    from lm_eval import __version__ as lm_eval_version
    from lm_eval import simple_evaluate

    plan = [(name, shots, metric, *resolve(name)) for name, shots, metric in expand(task)]  # all names, before work
    lm = make_lm(folder, model=model, tokenizer=tokenizer, device=device, batch_size=batch_size)
    scores: dict[str, float] = {}
    details: dict = {"lm_eval": lm_eval_version, "tasks": {}}
    samples: dict = {}
    total = 0
    for name, shots, metric, manager, local in plan:
        with offline() if local else nullcontext():
            objs = _load_tasks(manager, name, local)
            res = simple_evaluate(model=lm, tasks=objs, num_fewshot=shots, limit=limit, task_manager=manager,
                                  log_samples=keep_samples, bootstrap_iters=1000,
                                  gen_kwargs={"max_gen_toks": max_new_tokens} if max_new_tokens and local else None)
        row = _flat(res["results"][name])
        n = sum(v["effective"] for v in res["n-samples"].values())
        total += n
        details["tasks"][name] = {"n": n, "num_fewshot": res.get("n-shot", {}).get(name, shots), "local": local,
                                  "metric": metric}
        if keep_samples:
            samples.update(res.get("samples", {}))
        if len(plan) == 1:
            scores = row
            continue
        if name in SUBJECT_MEAN:
            group, (mean, se, k) = row.get(metric), subject_mean(res, metric)
            row = {metric: mean, **({f"{metric}_stderr": se} if se is not None else {})}
            details["tasks"][name]["average"] = (f"unweighted mean of {k} subjects, as the Open LLM Leaderboard "
                                                 f"(v1) scored it; lm-eval's size-weighted group figure: {group}")
        if metric not in row:
            raise LmEvalError(f"lm-eval task {name!r} reported {sorted(row)}, not {metric!r}.")
        scores[f"{name}/{metric}"] = row[metric]
        if f"{metric}_stderr" in row:
            scores[f"{name}/{metric}_stderr"] = row[f"{metric}_stderr"]
    if len(plan) > 1:
        heads = [scores[f"{name}/{metric}"] for name, _, metric, *_ in plan]
        scores[f"{task}_average"] = sum(heads) / len(heads)
    if not scores:
        raise LmEvalError(f"lm-eval task {task!r} reported no numeric metric.")
    return LmEvalResult(scores, total, details, samples)

