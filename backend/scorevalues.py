"""One score as every table of scores reads it (backend/scoretable.py's models × tasks table and charts, the notes
under it in backend/tablenotes.py, the recipe's paper tables): which metric heads a task, the score on every item or
on the non-overlapping ones only, its standard error, 95 % interval and item count, the column it heads, when a
hallucination rate says nothing, which tasks the average takes, and how a huge score is written. Pure functions of
the stored rows (`latest`: scoretable.latest_scores)."""

from __future__ import annotations

import math

from storage.models import EvalScore

HIGHER_IS_BETTER = {"accuracy", "acc", "acc_norm", "acc,none", "exact_match", "exact_match_flexible_extract",
                    "h6_average"}


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics (those an average over tasks may include); lm-eval preset rows are named
    TASK/METRIC (arc_challenge/acc_norm), judged by their metric."""
    return metric in HIGHER_IS_BETTER or metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER


# byte_perplexity after perplexity: our perplexity task stores both and the token perplexity heads it where one
# tokenizer scored every model (headline switches to bytes where not); an lm-eval wikitext-style task stores
# word_perplexity, byte_perplexity and bits_per_byte only, and was headed by whichever came first (lm-eval's word
# perplexity): its byte perplexity heads it on purpose, the one that compares across tokenizers, as ours does
PREFERRED_METRIC = ["accuracy", "acc", "perplexity", "byte_perplexity", "exact_match", "acc_norm"]
QA_METRICS = ("accuracy", "abstention_rate", "hallucination_rate", "cut_off_rate", "empty_rate", "precision")
# shares of items with a 0/1 outcome, whose spread over n items gives a standard error; precision (correct over
# answered) is not one of them: its denominator is not n
SHARES = {"accuracy", "acc", "acc_norm", "exact_match", "hallucination_rate", "abstention_rate", "cut_off_rate",
          "empty_rate"}
STDERR = "_stderr"  # lm-eval's standard error of TASK/METRIC is the row TASK/METRIC_stderr (backend/lmeval.py)
MOSTLY_CUT_OFF = 0.5  # over this share of replies cut off by the token limit or empty, a hallucination rate is mute
AVERAGE = "average (accuracy tasks)"
# under this table and the recipe's tables
PLUS_MINUS = "± : standard error (95 % interval ≈ score ± 1.96 × that error)."


def _rank(metric: str) -> int:
    """Which of a task's metrics heads it (lower first). A preset's own average (lm-eval:h6's h6_average, what the
    paper calls H6) comes first: its tasks' TASK/METRIC rows all ranked alike, so the first stored, ARC's
    acc_norm, headed "lm-eval:h6" and stood for H6 in the average over tasks."""
    if metric.endswith("_average") and "/" not in metric:
        return -1
    return PREFERRED_METRIC.index(metric) if metric in PREFERRED_METRIC else len(PREFERRED_METRIC)


def headline(latest: dict) -> dict[tuple[str, str], EvalScore]:
    """The score that heads each (model, task): the best-ranked metric (_rank); for a perplexity task whose models
    tokenize its texts differently (tokenizers), every model's byte perplexity where each has one, as lm-eval's
    wikitext reports per word and byte: a perplexity per token of another tokenizer is not like for like (a
    tokenizer of longer tokens has fewer, each harder to guess). The switch is decided over the models in `latest`:
    give it those of the table or chart shown (of_models), or one imported model of another tokenizer turns every
    view's column to bytes."""
    primary: dict[tuple[str, str], EvalScore] = {}
    for (model, task, metric), r in latest.items():
        if "[" in metric or metric.endswith(STDERR):  # per-kind QA metrics live in their own table; a standard
            continue  # error stands beside its score, never as one (it ranked with any unlisted lm-eval metric)
        if (model, task) not in primary or _rank(metric) < _rank(primary[(model, task)].metric):
            primary[(model, task)] = r
    for task in tokenizers(primary):
        keys = [k for k in primary if k[1] == task]
        if all((m, task, PER_BYTE) in latest for m, _ in keys):  # rows stored before it have none: token perplexity
            primary |= {(m, task): latest[(m, task, PER_BYTE)] for m, _ in keys}  # stays, and the notes say so
    return primary


PER_BYTE = "byte_perplexity"  # lm-eval's: e ^ (the texts' summed loss / their UTF-8 bytes)


def of_models(latest: dict, models) -> dict:
    """The rows of `latest` of the given models only: a view of some models (a merge beside its candidates, the
    charted models) decides its headline (headline's byte perplexity switch) over them alone."""
    keep = set(models)
    return {k: r for k, r in latest.items() if k[0] in keep}


UNLIKE_TOKENIZERS = "not like for like: tokenizers differ"  # a bar chart's subtitle for unlike_tokenizers' tasks


def unlike_tokenizers(primary: dict) -> set[str]:
    """The perplexity tasks whose models tokenize the texts differently and are still headed by a perplexity per
    token (a model's score predates the byte perplexity): not like for like, as tablenotes.tokenizer_note says."""
    return {task for task in tokenizers(primary)
            if not all(r.metric == PER_BYTE for (_, t), r in primary.items() if t == task)}


def tokenizers(primary: dict) -> dict[str, list[list[str]]]:
    """Per perplexity task whose scores came from more than one tokenizer, the models of each (the vocabulary's
    sha256 in the row's details, evalscore.tokenizer_id; rows stored before it name none, and are not told
    apart)."""
    found: dict[str, dict[str, list[str]]] = {}
    for (model, task), r in sorted(primary.items()):
        if r.metric in ("perplexity", PER_BYTE) and (tid := (r.details or {}).get("tokenizer")):
            found.setdefault(task, {}).setdefault(tid, []).append(model)
    return {task: list(by.values()) for task, by in found.items() if len(by) > 1}


def value(r: EvalScore, metric: str | None = None, clean: bool = False) -> float | None:
    """The stored score, or with `clean` the score on the items that do not overlap the lineage's training data."""
    metric = metric or r.metric
    if not clean:
        return r.value
    c = (r.details or {}).get("clean")
    if _unreadable(r):  # the items that overlap an unreadable training set are not known: no clean score
        return None
    if c is None:
        return None if (r.details or {}).get("overlap") else r.value  # not measurable (lm-eval): as stored
    return c.get(metric)


def item_count(r: EvalScore, clean: bool = False) -> int:
    """How many items stand behind the score: the row's n, or with `clean` the non-overlapping items' (0: not
    recorded, as in rows written before n was)."""
    c = (r.details or {}).get("clean") if clean else None
    return int(c.get("n", r.n)) if c else r.n


def stderr(latest: dict, r: EvalScore, clean: bool = False) -> float | None:
    """The score's standard error, as lm-eval prints it beside each value ("Value ± Stderr"): lm-eval's own
    TASK/METRIC_stderr row where one is stored; else, for a share of 0/1 outcomes p over n items, lm-eval's
    mean_stderr (lm_eval/api/metrics.py: sample standard deviation / √n = √(p(1−p)/(n−1))); a perplexity's is its
    own row, a bootstrap over texts (evalscore.perplexity_stderr). None where it is not defined: averages, a
    perplexity stored before its bootstrap, an lm-eval row without its own (a preset's n
    counts every task of the preset), fewer than 2 items, no score."""
    v = value(r, clean=clean)
    if v is None:
        return None
    if (own := latest.get((r.model, r.task, r.metric + STDERR))) is not None:
        return value(own, clean=clean)  # with `clean`, the clean items' own (a perplexity's), not the whole set's
    n = item_count(r, clean)
    if r.task.startswith("lm-eval:") or r.metric.rsplit("/", 1)[-1] not in SHARES or n < 2:
        return None
    return math.sqrt(v * (1 - v) / (n - 1))


Z95 = 1.96  # a 95 % normal interval: value ± 1.96 standard errors
RULE_OF_THREE = 3.0  # 0 events in n: the 95 % upper bound on their rate is about 3/n (Hanley & Lippman-Hand 1983)


def _share(metric: str | None) -> bool:
    """Whether the metric is a share of items (SHARES), so in [0, 1]; no metric given counts as one."""
    return metric is None or metric.rsplit("/", 1)[-1] in SHARES


def zero_error(v: float | None, se: float | None, n: int, metric: str | None = None) -> bool:
    """Whether a standard error of 0 says nothing: lm-eval's √(p(1−p)/(n−1)) is 0 at a share p of 0 or 1 however few
    the items, and "0 ± 0" from 5 items read as certainty. Only for a share (SHARES) when the metric is given: the
    rule of three bounds a rate of events, not a BLEU or F1 of 0."""
    return _share(metric) and se == 0 and v in (0.0, 1.0) and n > 0


def interval95(v: float | None, se: float | None, n: int,
               metric: str | None = None) -> tuple[float, float] | None:
    """The 95 % interval a bar's whisker draws: score ± 1.96 standard errors, cut at 0 and, for a share, at 1 (19 of
    20 correct reached 1.048); where that error is 0 at a share of 0 or 1 (zero_error), the rule of three's (J. A.
    Hanley, A. Lippman-Hand, "If nothing goes wrong, is everything all right?", JAMA 249(13), 1983): 0 of n items
    still allows a true rate up to about 3/n, n of n one down to 1 − 3/n. The stored error stays lm-eval's (the
    exported numbers are its); only the whisker is wider. None without an error (an average, a perplexity stored
    before its bootstrap)."""
    if v is None or se is None:
        return None
    if zero_error(v, se, n, metric):
        reach = min(RULE_OF_THREE / n, 1.0)
        return (0.0, reach) if v == 0 else (1.0 - reach, 1.0)
    high = v + Z95 * se
    return max(v - Z95 * se, 0.0), min(high, 1.0) if _share(metric) else high


def items_behind(r: EvalScore, clean: bool = False) -> int:
    """The items behind this one score: item_count, but a preset's TASK/METRIC row (lm-eval:h6) counts its own
    task's items (lm-eval's per-task n in the row's details), not the whole preset's, whose 3/n was far too small."""
    task, slash, _ = r.metric.rpartition("/")
    own = (((r.details or {}).get("lm_eval") or {}).get("tasks") or {}).get(task) or {}
    return int(own["n"]) if slash and own.get("n") else item_count(r, clean)


def headline_score(latest: dict, r: EvalScore, clean: bool = False) -> dict:
    """One (model, task)'s headline as both the table (scoretable._task_cells) and its bar and radar charts
    (scoretable.chart_rows) show it: the score, its standard error and the items behind them, all over the
    non-overlapping items with `clean`. The charts had read the stored score beside a table of clean ones."""
    return {"model": r.model, "task": r.task, "metric": r.metric, "value": value(r, clean=clean),
            "stderr": stderr(latest, r, clean), "n": items_behind(r, clean)}


def score_column(task: str, metric: str) -> str:
    """The models × tasks table's column of a task's headline score: "qa (accuracy)", or the task alone where its
    metric is named alike ("perplexity", not "perplexity (perplexity)"). Its error's column adds " ±"; the bar
    charts (scoretable.chart_rows) and the notes under the table name it so too."""
    return task if metric == task else f"{task} ({metric})"


def _unreadable(r: EvalScore) -> dict:
    """The lineage's training sources the overlap check could not read (a data set deleted since, a file gone, an
    offline Hub id; backend/heldout.py training_index), with why."""
    return ((r.details or {}).get("overlap") or {}).get("unchecked") or {}


def too_few_answers(cut: float | None, empty: float | None) -> bool:
    """Whether replies cut off by the token limit and empty ones (their shares; None: not stored) leave too few
    answers for a hallucination rate: over MOSTLY_CUT_OFF, its 0 would read as the best. One rule for every table."""
    return (cut or 0.0) + (empty or 0.0) > MOSTLY_CUT_OFF


def _unanswered(latest: dict, model: str, task: str, clean: bool) -> tuple[float | None, float | None]:
    """The stored cut-off and empty shares of a model on a task (None where not stored)."""
    rows = (latest.get((model, task, m)) for m in ("cut_off_rate", "empty_rate"))
    return tuple(value(x, clean=clean) if x is not None else None for x in rows)


def averaged_tasks(primary: dict, clean: bool = False) -> tuple[list[str], dict[str, list[str]]]:
    """The accuracy-like tasks every model with any has a score on (the average's tasks), and each other one with
    the models that lack it. An average over whatever tasks a model had put a model's 0.125 over qa and
    synth-math beside another's 0 over synth-math alone. With `clean`, a score unknown on the non-overlapping
    items counts as missing."""
    have: dict[str, set[str]] = {}
    for (model, task), r in primary.items():
        if higher_is_better(r.metric):
            tasks = have.setdefault(model, set())
            if value(r, clean=clean) is not None:
                tasks.add(task)
    every = set.union(set(), *have.values())
    shared = set.intersection(*have.values()) if have else set()
    return sorted(shared), {t: sorted(m for m, ts in have.items() if t not in ts) for t in sorted(every - shared)}


HUGE = 1e6  # a score from here up is written as "3.2e17": a perplexity of an up-scaled or random model before training


def number_text(v: float) -> str | float:
    """A score as every printed table writes it: "3.2e17" for one of HUGE or more (the digits that mean anything;
    "3.2e+17" or "320000000000000000" read as noise in a column of 12.3456), "∞" for an infinite one (the loss
    overflowed exp: no token got a probability that counts); others as they were (the float). The stored value is
    exact: Export CSV and `scores --json` keep it."""
    if not isinstance(v, float) or math.isnan(v) or abs(v) < HUGE:
        return v
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    mantissa, _, power = f"{v:.1e}".partition("e")
    return f"{mantissa.removesuffix('.0')}e{int(power)}"
