"""All tables in one place (SQLModel's "code structure" advice).

A `ModelRecord` is a registered model folder with its lineage; a `Job` is one unit of work (a typed spec stored as
JSON) that the runner executes in its own process.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(when: datetime) -> datetime:
    """`when` with its UTC zone (SQLite hands datetimes back without it)."""
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


MODEL_KINDS = ("base", "upscaled", "trained", "merged")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")


class ModelRecord(SQLModel, table=True):
    __tablename__ = "models"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str  # folder holding config.json + safetensors (a standard Hugging Face layout)
    kind: str = "base"  # one of MODEL_KINDS
    # Lineage: names of the parent models and how this one was made (the spec that rebuilds it).
    parents: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    recipe: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    source: str = ""  # where a base model came from: builtin, folder, gguf, hub id
    # Architecture facts, read from config.json and the safetensors headers (no weights loaded).
    architecture: str = ""
    model_type: str = ""
    num_layers: int = 0
    hidden_size: int = 0
    # 64 bits: PostgreSQL's INTEGER (SQLModel's for int) stops at 2**31 - 1, and SOLAR 10.7B has 10.7e9 parameters
    # in 21 GB; there a model of 2 GiB could not be registered ("integer out of range"). SQLite's are 64 bits anyway.
    num_parameters: int = Field(default=0, sa_type=BigInteger)
    dtype: str = ""
    size_bytes: int = Field(default=0, sa_type=BigInteger)
    created: datetime = Field(default_factory=utcnow)
    # the job whose run registered it (DUS_JOB_ID); None for a foreground command or a row of an older version. A
    # job killed between registering its model and writing its result is then known done (runner.resume)
    job_id: int | None = None


class Job(SQLModel, table=True):
    __tablename__ = "jobs"

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # upscale, cpt, sft, dpo, merge, synth-math, eval
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = Field(default="queued", index=True)  # one of JOB_STATUSES
    progress: float = 0.0  # 0..1
    message: str = ""  # the latest progress line, for the page
    error: str = ""
    log_path: str = ""
    after: int | None = Field(default=None, index=True)  # run only once this job has succeeded
    needs: list[int] = Field(default_factory=list, sa_column=Column(JSON))  # and once all of these have (recipes)
    # and once these have ended, however they ended (a recipe's evaluation: it scores the models its stages made,
    # and one failed stage does not cancel the scores of the others)
    waits: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    run_dir: str = ""  # training jobs: checkpoints, metrics.jsonl, spec.json (stable, so resume finds them)
    pid: int | None = None
    # The machine whose worker claimed it: only that machine signals its process or judges it dead. A server
    # default too, so rows inserted by an older version sharing the database stay valid.
    host: str = Field(default="", sa_column_kwargs={"server_default": ""})
    # On a Ray cluster (host "ray:ADDRESS"): the Ray Job's submission id, by which it is watched and stopped.
    cluster_ref: str = Field(default="", sa_column_kwargs={"server_default": ""})
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created: datetime = Field(default_factory=utcnow)
    started: datetime | None = None
    finished: datetime | None = None
    # the seconds of the runs before this one (`started` and `finished` are the latest run's, rewritten when a resumed
    # job is claimed): a job resumed twice showed its last 44 s of hours in all
    seconds_before: float = 0.0


class WorkerBeat(SQLModel, table=True):
    """A worker's heartbeat in the shared database: with workers on several machines, a machine whose workers all
    fell silent has its running jobs marked interrupted by the others (its process ids mean nothing elsewhere)."""

    __tablename__ = "worker_beats"

    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(index=True)
    pid: int
    seen: datetime = Field(default_factory=utcnow)
    workspace: str = ""  # the workspace's marker file (backend/cluster/ray_jobs.py workspace_marker): shared or not
    space: str = ""  # the kernel and pid namespace the worker runs in (storage/db.py process_space)


class JobMetric(SQLModel, table=True):
    """One logged value of a job (loss, learning_rate, rewards/margins, eval_loss...) at a training step."""

    __tablename__ = "job_metrics"
    # One series of some jobs by step (a chart's curve, the Compare tab, the recovery view: backend/recipe/tables.py
    # curves) and the distinct names of their metrics (runner.metric_names) read from this index alone; with job_id's
    # own index only, each read visited every row of the jobs (a 50,000-step run logs 200,000). job_id's index stays:
    # with the row id it holds, it serves the Monitor's read of the rows logged since its last look (backend/curves.py).
    # An older database gets it when opened (storage/db.py _upgrade).
    __table_args__ = (Index("ix_job_metrics_job_id_name_step", "job_id", "name", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(index=True, foreign_key="jobs.id")
    step: int
    name: str
    value: float
    time: datetime = Field(default_factory=utcnow)


class DatasetRecord(SQLModel, table=True):
    """A registered data set: synthetic pairs, an exported SFT / DPO file, or a named weighted mix."""

    __tablename__ = "datasets"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    kind: str  # synth-pairs, sft, dpo, mix
    path: str = ""  # the file (JSONL); a mix has none
    rows: int = 0
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # seeds, rephraser, counts…
    created: datetime = Field(default_factory=utcnow)


class SynthPair(SQLModel, table=True):
    """One seed and its rephrasing, with the verification verdict. Indexed for paging through 100k pairs."""

    __tablename__ = "synth_pairs"

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(index=True, foreign_key="datasets.id")
    seed_id: str
    category: str = Field(index=True)
    level: int = Field(index=True)
    status: str = Field(index=True)  # verified, failed, flagged
    reason: str = ""
    rejected_by_hand: bool = Field(default=False, index=True)
    question: str  # the seed's
    solution: str
    answer: str
    new_question: str = ""  # the rephrased
    new_solution: str = ""
    new_answer: str = ""
    q_words: int = 0
    a_words: int = 0
    new_q_words: int = 0
    new_a_words: int = 0
    overlap: float = 0.0  # contamination: largest n-gram overlap with the benchmark file


class EvalScore(SQLModel, table=True):
    """One model's score on one task (the compare page's table is these rows)."""

    __tablename__ = "eval_scores"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, index=True)
    model: str = Field(index=True)
    task: str = Field(index=True)
    metric: str  # accuracy, perplexity, acc_norm, hallucination_rate…
    value: float
    n: int = 0
    # source, fingerprint (sha256 of the items), overlap with the lineage's training data, the score on the
    # non-overlapping items only ("clean"), device plan (backend/evaluate.py)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    overlap_share: float = 0.0  # share of the items that overlap the lineage's training data (the page's badge)
    # one evaluation of one (model, task): its rows and generations share it, and the readers show only the newest
    # run's (backend/scoretable.py newest_run), never one run's metric beside another's ("" in older databases)
    run: str = ""
    created: datetime = Field(default_factory=utcnow)


class Generation(SQLModel, table=True):
    """One generated answer with its length and verdict: the raw material of the length / hallucination plots."""

    __tablename__ = "generations"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, index=True)
    model: str = Field(index=True)
    task: str = Field(index=True)
    prompt_id: str
    prompt: str
    reference: str
    output: str
    tokens: int
    words: int
    answered: bool  # a final answer could be extracted
    correct: bool
    hallucination: bool  # a confident wrong final answer (verdict == "wrong")
    run: str = ""  # the evaluation run it belongs to (EvalScore.run)
    consistency: float | None = None  # share of k samples that agree with the greedy answer (SelfCheck-style)
    # backend/qa.py's rules (or a judge): correct / wrong / abstained / empty / cut off;
    # item kind: answerable / unanswerable / math
    verdict: str = Field(default="", index=True)
    item_kind: str = ""
    overlap: float = 0.0  # share of the item's n-grams found in the model's lineage's training data
    judge_verdict: str = ""  # the judge's verdict when one graded (then it is also `verdict`); "" = the rules
    truncated: bool = False  # the reply used every max_new_tokens without ending (backend/evaluate.generate)


class ChatTranscript(SQLModel, table=True):
    """One side-by-side round: the prompt, the settings, and every model's answer with its timings."""

    __tablename__ = "chat_transcripts"

    id: int | None = Field(default=None, primary_key=True)
    prompt: str
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    answers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # model -> text, tokens, timings
    # Blind arena: the models in the order they were shown (left to right), shuffled every round, and whether their
    # names were hidden until the vote. Rounds from before the blind arena have [] and blind=False.
    positions: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    blind: bool = False
    created: datetime = Field(default_factory=utcnow)
    # set by the vote that takes the round, in its transaction (arena.vote_round): of two tabs voting at once, one
    # writes its votes. Rounds voted before this column hold False; their votes rows say they are voted.
    voted: bool = False


class Vote(SQLModel, table=True):
    """A pairwise judgement from the side-by-side chat: outcome a, b, tie or bad (both bad)."""

    __tablename__ = "votes"

    id: int | None = Field(default=None, primary_key=True)
    transcript_id: int = Field(index=True, foreign_key="chat_transcripts.id")
    model_a: str = Field(index=True)
    model_b: str = Field(index=True)
    outcome: str
    tokens_a: int = 0
    tokens_b: int = 0
    # Style covariates of each answer (Chatbot Arena's style control): markdown headers, list items, bold spans.
    headers_a: int = 0
    headers_b: int = 0
    lists_a: int = 0
    lists_b: int = 0
    bold_a: int = 0
    bold_b: int = 0
    # Screen positions (0 = leftmost) of model_a and model_b, for the position-bias check; -1 when not recorded.
    position_a: int = -1
    position_b: int = -1
    # Names were hidden when the vote was cast. The leaderboard counts blind votes only (as Chatbot Arena counts only
    # anonymous battles); votes from before the blind arena were cast with names shown, hence the default.
    blind: bool = False
    created: datetime = Field(default_factory=utcnow)


class RecipeStage(SQLModel, table=True):
    """One stage of one recipe run: the job that made (or the earlier job whose output is reused for) a model,
    keyed by the hash of the stage's spec and its inputs' fingerprints (backend/recipe)."""

    __tablename__ = "recipe_stages"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)  # one `recipe run` = one run id (the recipe_runs row)
    recipe: str = Field(index=True)  # the recipe's name
    stage: str  # the stage's name in the recipe (sft-v3, cand1, …)
    kind: str  # upscale, cpt, sft, dpo, merge, synth-math, eval
    output: str = ""  # the registered model (or data set prefix) the stage makes
    hash: str = Field(index=True)
    job_id: int | None = Field(default=None, index=True)
    reused: bool = False  # the job is an earlier run's: nothing was rerun
    info: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # label, table, inputs, fingerprints


class RecipeRun(SQLModel, table=True):
    """A recipe as it was run: its YAML, so a run can be shown, compared and resumed."""

    __tablename__ = "recipe_runs"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    text: str = ""  # the recipe YAML after presets and sweeps were expanded
    created: datetime = Field(default_factory=utcnow)


def _server_defaults(*tables: type[SQLModel]) -> None:
    """Give every column whose field has a plain default (a number, text, flag, empty list or dict) that default in
    the database too. The ORM always sends every value, but an older DUS Studio sharing the database (a worker not
    yet upgraded, on another machine) inserts rows without the columns it does not know: without a server default
    those rows break NOT NULL. A database upgraded in place (storage/db.py `_upgrade`) and a fresh one get the same
    defaults this way. Times and ids have no such default: every version has always written them."""
    import json

    import sqlalchemy as sa

    for cls in tables:
        for name, field in cls.model_fields.items():
            col = cls.__table__.c.get(name)
            if col is None or col.primary_key or col.server_default is not None:
                continue
            value = field.get_default(call_default_factory=True)
            if isinstance(value, (list, dict)):
                value = json.dumps(value)  # JSON's text, which SQLite and PostgreSQL's json type both take
            if isinstance(value, (bool, int, float, str)):
                col.server_default = sa.DefaultClause(sa.literal(value))


_server_defaults(ModelRecord, Job, WorkerBeat, JobMetric, DatasetRecord, SynthPair, EvalScore, Generation,
                 ChatTranscript, Vote, RecipeStage, RecipeRun)
