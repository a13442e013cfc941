"""One typed spec per kind of work. The page builds it, the CLI reads it from YAML, the runner stores it as JSON and
the tests construct it; validation lives here, once. Checks that need the model (such as the valid range of m for
its depth) live in the method's plan function and name the valid range.

The kinds' classes live in spec_base.py (the shared base), spec_models.py (upscale, import, push, merge) and
spec_train.py (cpt, sft, dpo); synthetic math and evaluation are here, with the table of kinds. Every name is
imported from here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from backend.data_reading import not_a_regular_file
from backend.spec_base import Resources, _Spec, _valid_name, parse_size  # noqa: F401
from backend.spec_models import MERGE_DEFAULTS, ImportSpec, MergeSpec, PushSpec, SliceRange, UpscaleSpec  # noqa: F401
from backend.spec_train import CptSpec, DataSource, DpoSpec, LoraSpec, PerfOptions, SftSpec, _TrainSpec  # noqa: F401

class SynthMathSpec(_Spec):
    """SOLAR's synthetic math data: seeds rephrased; verified pairs become Synth. Math-Instruct (question ->
    answer, both rephrased) and Synth. Math-Alignment (prompt: rephrased question, chosen: rephrased answer,
    rejected: original answer)."""
    kind: Literal["synth-math"] = "synth-math"
    seeds: str = Field("generator", description="'generator' or a MATH / GSM8K .jsonl/.json file")
    num_seeds: int | None = Field(200, ge=1, le=10_000_000, description="generator: problems to make; files: at "
                                                                        "most this many")
    categories: list[str] = Field(default_factory=list, description="generator categories (default all)")
    levels: list[int] = Field(default_factory=list, description="1, 2, 3 (default all)")
    rephraser: str = Field("rules", description="rules | model:NAME | openai:BASE_URL")
    api_model: str | None = Field(None, description="openai: the model name the server serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the key")
    temperature: float = Field(0.0, ge=0, le=2)
    batch_size: int = Field(8, ge=1)
    benchmark: str | None = Field(None, description="contamination check: a benchmark file (e.g. GSM8K test)")
    ngram: int = Field(8, ge=3, le=30, description="contamination: n-gram length in words")
    overlap_threshold: float = Field(0.5, gt=0, le=1, description="flag pairs sharing this share of n-grams")
    include_flagged: bool = Field(False, description="export contamination-flagged pairs too")
    seed: int = 0
    name: str = Field("synth-math", description="prefix of the registered data sets")
    out: str | None = Field(None, description="folder for the files; default $DUS_WORKSPACE/datasets/NAME")

    _name = field_validator("name")(_valid_name)

    @field_validator("rephraser")
    @classmethod
    def _rephraser(cls, v: str) -> str:
        if v != "rules" and not v.startswith(("model:", "openai:")):
            raise ValueError(f"rephraser {v!r}: use rules, model:NAME or openai:BASE_URL.")
        return v

    @model_validator(mode="after")
    def _api(self) -> "SynthMathSpec":
        if self.rephraser.startswith("openai:") and not self.api_model:
            raise ValueError("an openai: rephraser needs api_model (--api-model on the command line), the model "
                             "name the server serves.")
        if any(level not in (1, 2, 3) for level in self.levels):
            raise ValueError("levels are 1, 2 or 3 (--level on the command line).")
        return self


# The forms a task takes, by kind: the field's help and the error for an unknown kind both read this one list (the
# error once left out qa:FILE and perplexity:FILE, which the help offered). "[:FILE]": the file is optional.
EVAL_TASK_FORMS = {"perplexity": "perplexity[:FILE]", "synth-math": "synth-math", "qa": "qa[:FILE]", "mc": "mc:FILE",
                   "gsm8k": "gsm8k:FILE", "lm-eval": "lm-eval:TASK"}
EVAL_TASK_KINDS = tuple(EVAL_TASK_FORMS)
EVAL_TASK_HELP = ", ".join(EVAL_TASK_FORMS.values())
# The kinds whose replies are generated and stored as answers (Generation rows), which `compare` and the Compare
# page's length section read: evalscore.score_task stores answers for these and only these. perplexity, mc (the
# log-likelihood of each choice) and lm-eval store scores only: "evaluate with --tasks mc:FILE first" could not help.
EVAL_ANSWER_KINDS = ("synth-math", "qa", "gsm8k")
EVAL_ANSWER_HELP = ", ".join(EVAL_TASK_FORMS[k] for k in EVAL_ANSWER_KINDS)
# why a scores-only kind has no answers, in the refusal that names it
SCORES_ONLY = {"perplexity": "it scores the likelihood of a text", "mc": "multiple choice is scored by the "
               "log-likelihood of each choice", "lm-eval": "lm-evaluation-harness tasks store their scores only"}


class EvalSpec(_Spec):
    """Evaluate models on the same tasks; generations are kept for the length / hallucination analysis."""
    kind: Literal["eval"] = "eval"
    models: list[str] = Field(min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["perplexity", "synth-math"],
                             description=EVAL_TASK_HELP)
    limit: int = Field(40, ge=1, description="items per task")
    max_new_tokens: int = Field(96, ge=8)
    samples: int = Field(1, ge=1, le=10, description="k > 1: k-1 extra sampled answers for a consistency score")
    perplexity_window: int = Field(256, ge=8, description="perplexity: tokens the model reads at once, at most its "
                                   "context length; a longer text rolls on in further windows, every token scored "
                                   "(lm-eval's loglikelihood_rolling, which reads the whole context length: wider "
                                   "windows give a lower perplexity, and take longer)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (bfloat16 + sdpa) when present")
    batch_size: int | None = Field(None, ge=1, description="generation batch; default: fitted to free GPU "
                                                           "memory, 8 on the CPU")
    ngram: int = Field(8, ge=3, le=30, description="held-out check: n-gram length in words")
    overlap_threshold: float = Field(0.3, gt=0, le=1, description="an item overlaps training data when this share "
                                                                  "of its n-grams is in the lineage's training sets")
    judge_url: str | None = Field(None, description="qa: grade replies with an OpenAI-compatible server "
                                                    "(http://host:port/v1); default: the rules")
    judge_model: str | None = Field(None, description="qa judge: the model name the server serves")
    judge_key_env: str = Field("OPENAI_API_KEY", description="qa judge: environment variable holding the key")
    judge_timeout: float = Field(60.0, gt=0, le=600, description="qa judge: seconds per request")
    skip_missing: bool = Field(False, description="leave out, and name, the models not registered when the job "
                                                  "starts (a recipe's evaluation: a stage that failed made none)")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one task.")
        for task in v:
            kind, _, arg = task.partition(":")
            if kind not in EVAL_TASK_KINDS:
                raise ValueError(f"task {task!r}: choose one of {EVAL_TASK_HELP} ([:FILE]: a file is optional).")
            if ":" in EVAL_TASK_FORMS[kind].replace("[:", "") and not arg:
                raise ValueError(f"task {task!r} needs a file or task name after the colon.")
            if kind in ("mc", "gsm8k", "qa") and arg and not (path := Path(arg).expanduser()).is_file():
                # refused here, not queued to fail in the worker after the models were checked
                said = not_a_regular_file(path, "a JSON Lines file") or f"{arg} does not exist."  # or: a named pipe
                raise ValueError(f"task {task!r}: {said}")
        twice = sorted({t for t in v if v.count(t) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}.")  # shown as "tasks: listed twice: …"
        return v

    @model_validator(mode="after")
    def _judge(self) -> "EvalSpec":
        if self.judge_url and not self.judge_url.startswith(("http://", "https://")):
            raise ValueError(f"judge_url {self.judge_url!r}: give the server's base URL (--judge-url on the command "
                             "line), such as "
                             "http://127.0.0.1:8000/v1.")
        if self.judge_url and not self.judge_model:
            raise ValueError("judge_model: a judge needs the model name its server serves (--judge-model on the "
                             "command line).")
        return self

    def per_model(self) -> list["EvalSpec"]:
        """The same evaluation as one spec per model: independent jobs that run side by side on free slots or
        cluster nodes. Scores are stored per (model, task), so the tables read the same either way."""
        return [self.model_copy(update={"models": [m]}) for m in self.models]


TRAIN_KINDS = ("cpt", "sft", "dpo")
SPECS: dict[str, type[_Spec]] = {"upscale": UpscaleSpec, "import": ImportSpec, "cpt": CptSpec, "sft": SftSpec,
                                 "dpo": DpoSpec, "synth-math": SynthMathSpec, "merge": MergeSpec,
                                 "eval": EvalSpec, "push": PushSpec}


def spec_from_dict(data: dict) -> _Spec:
    kind = data.get("kind")
    if kind not in SPECS:
        raise ValueError(f"kind {kind!r} is not a kind of work{did_you_mean_kind(kind)}; choose one of: "
                         f"{', '.join(SPECS)}.")
    return SPECS[kind].model_validate(data)


def did_you_mean_kind(kind, kinds=None) -> str:
    """" (did you mean 'sft'?)" for `kind: SFT` or `kind: synth_math` (kinds are lower case, with hyphens), as
    _did_you_mean does for a field's name; "" when no kind is close. `kinds`: those to choose from (default: every
    kind of work)."""
    import difflib

    if not isinstance(kind, str):
        return ""
    kinds = list(SPECS if kinds is None else kinds)
    typed = kind.strip().lower().replace("_", "-")
    close = [typed] if typed in kinds else difflib.get_close_matches(typed, kinds, n=1, cutoff=0.65)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_spec(path: Path) -> _Spec:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}")
    except UnicodeDecodeError as exc:  # it said "'utf-8' codec can't decode byte 0x83 …" without naming the file
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): a "
                         "spec is a YAML file; save it as UTF-8.") from None
    except IsADirectoryError:  # said "[Errno 21] Is a directory: …"
        raise ValueError(f"{path} is a folder: give the spec's YAML file (e.g. {Path(path) / 'spec.yaml'}).") from None
    except FileNotFoundError:  # said "[Errno 2] No such file or directory: …"
        raise ValueError(f"{path}: no such file (from {Path.cwd()}); check the path, or write a spec with a job "
                         "command's --save-spec FILE.") from None
    except OSError as exc:  # not allowed to read it, and the like: the reason, without its [Errno N]
        raise ValueError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{path}: a spec is a mapping with a 'kind' field (one of: {', '.join(SPECS)}).")
    return spec_from_dict(data)


def explain(exc: ValidationError) -> str:
    """One line per problem, naming the field once: what pages and the CLI show instead of pydantic's dump. A
    message that starts with its field's name already (check_name's "name 'a/b': …") is not prefixed again. A field
    the spec does not have (a typo in a YAML file) gets the nearest field's name."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "upscale")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += _did_you_mean(exc.title, err["loc"])
        msg = _source_in_file_form(err) or msg
        lines.append(f"{loc}: {msg}" if loc and not msg.startswith((f"{loc} ", f"{loc}:")) else msg)
    return "\n".join(lines)


def _source_in_file_form(err: dict) -> str | None:
    """A training data source written in a spec file as the command line's --data string (`data: mix:sft-v1`,
    `- book.txt@0.5`): what it is and how a spec file writes it, with its own values, for pydantic's "Input should
    be a valid list / dictionary or instance of DataSource". None for any other error. SOURCE@WEIGHT is split as
    the CLI's --data splits it (at the last @)."""
    loc, text = err["loc"], err.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), None)
    if not isinstance(text, str) or field not in ("data", "eval_data") or err["type"] not in (
            "list_type", "model_type", "dict_type", "model_attributes_type"):
        return None
    source, _, weight = text.rpartition("@") if "@" in text else (text, "", "")
    try:
        entry = {"source": source, **({"weight": float(weight)} if weight else {})}
    except ValueError:  # not a weight after the @: the whole text is the source
        entry = {"source": text}
    mapping = yaml.safe_dump(entry, default_flow_style=True, allow_unicode=True).strip()
    said = f"{text!r} is the command line's --{field.replace('_', '-')} form; a spec file writes a source as a mapping"
    if loc[-1] != field:  # one entry of the data list
        return f"{said}: `- {mapping}` under `{field}:`."
    if field == "data":
        return f"{said}, in a list (one per source of the mix): `data: [{mapping}]`."
    return f"{said}: `{field}: {mapping}`."


def _did_you_mean(title: str, loc: tuple) -> str:
    """"; did you mean 'learning_rate'?" for an unknown field `loc[-1]` of the model named `title` (a
    ValidationError's title is its model's class name), or "" when no field's name is close: `learnig_rate: Extra
    inputs are not permitted` left the user to find the spelling in the docs. difflib's ratio of 0.65 keeps
    `model_name` → 'model' and `warmup` → 'warmup_ratio' but not `colour` → 'lora' (0.6)."""
    import difflib

    model = next((c for c in _backend_models(BaseModel) if c.__name__ == title), None)
    fields = _fields_at(model, loc[:-1]) if model else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.65)
    return f"; did you mean {close[0]!r}?" if close else ""


def _backend_models(root: type[BaseModel]):
    """The pydantic models this project defines (specs, their parts, recipes), found by walking the subclasses."""
    for c in root.__subclasses__():
        if c.__module__.startswith("backend."):
            yield c
        yield from _backend_models(c)


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names (as a YAML file spells them: aliases such as merge's `lambda`) of the model nested at `path`
    in `model` (`("lora",)`: LoraSpec's); list positions in the path are skipped."""
    for part in path:
        if isinstance(part, int):
            continue
        info = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _model_in(info.annotation) if info else None
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation) -> type[BaseModel] | None:
    """The model a field holds: `LoraSpec | None` and `list[DataSource]` hold LoraSpec and DataSource."""
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
