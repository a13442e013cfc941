"""Compare page: merge candidates, evaluate models on the same tasks, and compare them — a models × tasks table
like the paper's, charts, a merge-candidate view, and answer length against hallucination (is a lower rate only
shorter answers?)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from pydantic import ValidationError
from sqlmodel import func, select

from backend import analysis, qatable, registry, runner, scorenotes, scoretable, tasknames
from backend.recipe import tables
from backend.specs import MERGE_DEFAULTS, EvalSpec, MergeSpec, explain
from pages.common import LAUNCHED, MISSING, drop_deleted, job_status, submit, via_app, worker_banner
from pages import compare_length
from pages.compare_pick import (ancestry, merge_defaults, merge_name_refused, merge_weights, no_bar_note,
                                no_chart_note, no_radar_note, pick_models, show_notes)
from pages.figures import NAME_CHARS, bar_figure, name_width, radar_figure, short_name
from storage import db
from storage.models import EvalScore


def score_table(df: pd.DataFrame, key: str, labels: dict[str, str]) -> None:
    """A models × tasks table with the name pinned at the left (the scores scroll beside it) and the lineage
    last: with 82-character merge names a page-wide table showed no score at all. Longer names are cut in the
    middle, as on the charts' axes, so two merges of the same candidates still differ in what shows. A task read
    from a file heads its columns by its stem (`labels`: tasknames.task_labels), its whole path on hover."""
    heads = {c: tasknames.relabel(c, labels) for c in df.columns}
    shown = df.assign(model=[short_name(m, NAME_CHARS) for m in df["model"]]).rename(columns=heads)
    whole = {heads[c]: f"{c} (Export CSV heads it so). " for c in df.columns if heads[c] != c}  # hover: the path
    errors = {c: st.column_config.NumberColumn(help=whole.get(c, "") + f"Standard error of {c.removesuffix(' ±')}, "
                                               "as lm-eval's (its own where it reported one; else √(p(1−p)/(n−1)) over "
                                               "the n items); the 95 % interval is the score ± 1.96 × this. At a score "
                                               "of 0 or 1 it reads 0, which is no certainty: 0 of n items still allows "
                                               "a true rate up to about 3/n (the rule of three).")
              for c in shown.columns if c.endswith(" ±")}
    # a perplexity of 3.2e17 (an up-scaled model before training) printed all 18 digits: such a column in
    # scientific notation, as the printed tables write it (scoretable.number_text; the note under the table says so)
    huge = {c: st.column_config.NumberColumn(format="scientific", help=whole.get(c)) for c in shown.columns
            if c not in errors and pd.api.types.is_float_dtype(shown[c]) and (shown[c].abs() >= scoretable.HUGE).any()}
    st.dataframe(shown, hide_index=True, key=key, placeholder=MISSING, column_config={
        **{c: st.column_config.Column(help=text) for c, text in whole.items()}, **errors, **huge,
        "model": st.column_config.TextColumn(pinned=True, width=name_width(shown["model"]),
                                             help=f"Names over {NAME_CHARS} characters are cut in the middle; Export "
                                             "CSV has them whole."),
        "made from": st.column_config.TextColumn(width="medium")})


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_scores(url: str, version: tuple) -> dict:
    """scoretable.latest_scores, once per database and scores version (the table's newest id, row count and newest
    creation time: an evaluation adds rows, a deletion drops some, and SQLite gives a row added after the newest was
    deleted that one's id again); 150 models' rows and their details took 0.5 s on every click.
    Shared read-only between sessions, as the records below."""
    return scoretable.latest_scores()


def scores_now() -> dict:
    with db.session() as s:
        version = tuple(s.exec(select(func.max(EvalScore.id), func.count(EvalScore.id),
                                      func.max(EvalScore.created))).one())  # SQLite reuses a deleted newest id
    return cached_scores(db.database_url(), version)


via_app(__file__)
st.title("Merge & compare")
worker_banner()
model_records = registry.list_models()  # read once per rerun: the names, the merge's preselection, the table
names = [r.name for r in model_records]
if len(names) < 1:
    st.info("No models yet: import or build one first.")
    st.stop()

def lineage_order(recs: list) -> list[str]:
    """The models in the paper's order, the order of their making: by lineage depth (a base, then what was up-scaled
    from it, then continued pretraining, SFT, DPO, a merge of those), then by registration within a depth (`recs`
    come oldest first), so the models × tasks table reads base → up-scaled → cpt → sft → dpo → merge, as the Recipe
    tables keep stage order; sorted by name it read cpt, dpo, sft, sft, upscaled, base."""
    parents = {r.name: [p for p in (r.parents or []) if p != r.name] for r in recs}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset = frozenset()) -> int:
        if name not in depth:  # a parent that is not registered (deleted, or a Hub id) counts as a root
            known = [p for p in parents.get(name, []) if p in parents and p not in seen]
            depth[name] = 1 + max((depth_of(p, seen | {name}) for p in known), default=-1)
        return depth[name]

    made = {r.name: i for i, r in enumerate(recs)}
    return sorted(made, key=lambda n: (depth_of(n), made[n]))


def tokenizer_fields(method: str, cands: list[str], base: str | None) -> dict:
    """Where the merged model's tokenizer, chat template and generation config come from: mergekit's default (the
    base when there is one, else the first candidate), another model, or the template most of them share (mergekit's
    `chat_template: auto`), with a warning when the choice leaves a merge of chat models without a template."""
    from backend.merge import template_lost

    c1, c2 = st.columns(2)
    options = ([None] if base else []) + cands
    source = c1.selectbox("Tokenizer, chat template and generation config from", options,
                          format_func=lambda o: f"the base, {base} (mergekit's default)" if o is None else
                          o + (" (mergekit's default)" if not base and o == cands[0] else ""),
                          key=f"merge_tok_{method}_{'_'.join(cands)}_{base}",
                          help="config.json always comes from mergekit's default (the base, else the first model)")
    auto = c2.checkbox("Chat template: the most common (auto)", value=False, key="merge_template_auto",
                       help="the chat template most of the models share, base included (mergekit's "
                            "`chat_template: auto`), instead of the tokenizer source's own")
    source = None if source == (cands[0] if not base else None) else source
    donor = source or base or cands[0]
    lost = None if auto else template_lost(donor, registry.resolve(donor)[0],
                                           {m: registry.resolve(m)[0] for m in cands})
    if lost:
        st.warning(lost[0].upper() + lost[1:])
    return {"tokenizer_source": source} | ({"chat_template": "auto"} if auto else {})


with st.expander("Merge candidates"):
    st.caption("SOLAR's final step: two candidates merged by Average(a, b) or SLERP. Task arithmetic, TIES and DARE "
               "need the base the candidates were trained from. Models must share architecture and shapes.")
    if mgone := drop_deleted("merge_models", names):  # said, and a click of this run merges nothing
        st.warning(f"{mgone}. Check the candidates, then click Merge again.")
    # a row of its own (in a third of the width names were cut, "SmolLM2-135M-Instruct-dus…", and the second hidden),
    # and the same arguments for every method: `max_selections=2` for SLERP gave the widget another identity, so
    # Streamlit reset it to the default pair and the user's pick was lost; SLERP's two are checked below instead
    cands = st.multiselect("Candidates", names, default=merge_defaults(model_records), key="merge_models",
                           help="SLERP merges exactly two; the other methods two or more. Models must share "
                                "architecture, width and depth.")
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox("Method", list(MERGE_DEFAULTS), key="merge_method",  # the methods: mergekit's defaults
                          help="mergekit 0.1.5's definitions; average is its linear")
    fields: dict = {}
    bad_weights = False
    if MergeSpec.reads(method, "t"):  # slerp
        fields["t"] = c3.slider("t (0 = first, 1 = second)", 0.0, 1.0, 0.5, 0.05, key="merge_t")
    else:
        # a key a count (its default changes nothing once drawn): a form opened with none chosen kept "0.5" for two
        ws = c3.text_input("Weights (one per candidate)", ", ".join(["0.5"] * max(len(cands), 2)),
                           key="merge_w" if len(cands) <= 2 else f"merge_w_{len(cands)}")
        try:
            fields["weights"] = [float(x) for x in ws.split(",") if x.strip()]
        except ValueError:  # no merge then: the spec's default (equal) weights are not what was typed
            st.error("Weights: numbers separated by commas.")
            bad_weights = True
    if MergeSpec.reads(method, "base"):  # task arithmetic, ties, dare: a task vector per model, which λ scales
        fields["base"] = c1.selectbox("Base", names, key="merge_base")
        fields["lambda"] = c3.number_input("λ (scales the merged task vector)", value=1.0, step=0.1,
                                           key="merge_lambda")
    if MergeSpec.reads(method, "density"):  # ties, dare: drop entries
        fields["density"] = c2.slider("Density", 0.05, 1.0, MergeSpec.model_fields["density"].default, 0.05,
                                      key="merge_density", help="share of each task vector kept; mergekit's "
                                      "default: 1 (every entry)")
        fields["rescale"] = c2.checkbox("Rescale kept entries (‖delta‖₁ / ‖kept‖₁)", value=MERGE_DEFAULTS[method][1],
                                        key=f"merge_rescale_{method}")
    if MergeSpec.reads(method, "seed"):  # dare: at random
        fields["seed"] = c3.number_input("Seed of the drop mask", 0, 2**31 - 1, 0, key="merge_seed")
    if MergeSpec.reads(method, "weights"):  # all but slerp
        fields["normalize"] = c1.checkbox("Normalize by the weights' sum", value=MERGE_DEFAULTS[method][0],
                                          key=f"merge_normalize_{method}",
                                          help="mergekit's default: on for average (linear) and ties")
    if len(cands) >= 2:
        fields.update(tokenizer_fields(method, cands, fields.get("base")))
    mspec = None
    lineage_of = ancestry(model_records)
    related = [(a, b) for a in cands for b in cands if b in lineage_of.get(a, set())]
    if related:  # allowed (a model with its own ancestor), but rarely meant: SOLAR merges two sibling candidates
        st.warning("; ".join(f"{a} is made from {b}" for a, b in related) + ": this merge mixes a model with its "
                   "own ancestor. SOLAR merges candidates trained side by side from one model.")
    refused = None  # a pair the merge refuses (30 vs 32 layers), said now, not only after the click
    if len(cands) >= 2:
        from backend.merge.plan import MergeError, check_registered  # the runner's check, from the registry rows

        try:
            check_registered(MergeSpec.model_construct(models=cands, base=fields.get("base")))
        except MergeError as exc:
            refused = str(exc)
            st.error(f"{refused} Choose other candidates.")
    if method == "slerp" and len(cands) > 2:  # said, none dropped: the widget kept the pick when slerp was chosen
        st.error(f"SLERP merges exactly two models, and {len(cands)} are chosen: remove {len(cands) - 2} of "
                 f"{', '.join(cands)}, or choose another method to merge them all.")
    elif len(cands) < 2:  # not an error yet: the user has not chosen (with one model registered, cannot)
        st.info("Choose two candidates to merge" + ("." if len(names) >= 2 else
                                                   ": only one model is registered — train or import another."))
    else:
        try:
            mspec = None if bad_weights else MergeSpec(models=cands, method=method, **fields)
        except ValidationError as exc:
            st.error(explain(exc))
    if mspec is not None:
        mname = st.text_input("Name", mspec.default_name(), key=f"merge_name_{method}_{'_'.join(cands)}")
        try:
            mspec = MergeSpec(**{**mspec.model_dump(), "name": mname})  # model_copy would skip the name's check
        except ValidationError as exc:
            st.error(explain(exc))
            mspec = None
    if mspec is not None:
        if taken := merge_name_refused(mspec.name):  # a model or a queued job has the name: said before the click
            st.info(taken)
        b1, b2 = st.columns(2)
        if b1.button("Merge", type="primary", key="merge", disabled=bool(taken or refused), help=taken or refused) \
                and not mgone and not refused and not taken:
            job_id = submit(mspec, "merge_job")
            if job_id is not None:
                st.session_state.setdefault("merge_jobs", []).append(job_id)
                st.rerun()  # drawn before the job was queued, Merge stayed on beside the merge making its name
        b2.download_button("Save spec (YAML)", mspec.to_yaml(), file_name=f"{mspec.name}.yaml", key="merge_spec",
                           help="Rerun it with `python -m backend run FILE`.")
    for job_id in st.session_state.get("merge_jobs", []):  # every merge launched here, not only the last
        job_status(job_id)


def check_each_task(espec: EvalSpec) -> list[str]:
    """runner.check_before_queueing's refusals, every task's (its check stops at the first): with two bad task
    files only the first one's error showed, and the second came up only after the first was fixed. The models'
    checks come first, once; then each task alone. Distinct messages, in the tasks' order."""
    errors: list[str] = []
    for one in [espec.model_copy(update={"tasks": []})] + [espec.model_copy(update={"tasks": [t]})
                                                            for t in espec.tasks]:
        try:
            runner.check_before_queueing(one)
        except ValueError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
            if not one.tasks:  # a model the registry lacks: every task's check would say it again
                break
    return errors


latest = scores_now()
with st.expander("Evaluate", expanded=False):
    e1, e2 = st.columns(2)
    scored = {m for m, _, _ in latest}  # all registered models by default made one click queue 150 jobs
    # nor those an evaluation queued or running will score: while `eval … --queue` ran, the form offered them again
    # and one click queued the same evaluations twice
    evals = [j for j in runner.active_jobs() if j.kind == "eval"]
    pending = {m for j in evals for m in j.spec.get("models", [])}
    # those of the evaluations queued from this session: after the user's own click, not "already" (another tab, CLI)
    mine = {m for j in evals if j.id in st.session_state.get(LAUNCHED, ()) for m in j.spec.get("models", [])}
    # the newest two of those, as a user just back from training expects: every unscored model, the 135M built-in
    # among them, made a first evaluation on a CPU take many times as long as the models just made
    unscored = [m for m in names if m not in scored | pending]  # names: oldest first
    if egone := drop_deleted("eval_models", names):  # said, and a click of this run queues nothing
        st.warning(f"{egone}. Check the models, then click Evaluate again.")
    emodels = e1.multiselect("Models", names, default=unscored[-2:],
                             key="eval_models", help="Preselected: the two newest models with no scores yet and no "
                             "evaluation queued or running (none when every model has some); add others here.")
    tasks = e2.multiselect("Tasks", ["perplexity", "synth-math", "qa"], default=["perplexity", "synth-math"],
                           key="eval_tasks", help="Built-in sets share no text with the built-in training sets, by "
                           "construction; qa is closed-book QA with known answers and abstention, and its answerable "
                           "questions ask the capitals builtin:facts-corpus states: a model trained on it is tested "
                           "on what it was taught (the table's overlap note says so).")
    files = st.text_input("More tasks (space-separated): qa:FILE.jsonl mc:FILE.jsonl gsm8k:FILE.jsonl "
                          "perplexity:FILE lm-eval:TASK", key="eval_more")
    e3, e4, e5 = st.columns(3)
    # the spec's defaults, as `eval` and a recipe's evaluation take them: the page's 20 items scored other items
    # than "the same evaluation" from the command line
    default = EvalSpec.model_fields
    limit = e3.number_input("Items per task", 1, 10_000, default["limit"].default, key="eval_limit")
    max_new = e4.number_input("Max new tokens", 8, 1024, default["max_new_tokens"].default, key="eval_max_new")
    samples = e5.number_input("Samples for consistency (k)", 1, 10, default["samples"].default, key="eval_samples")
    if limit < analysis.MIN_ITEMS:
        st.warning(f"{limit} items per task: the answer-length comparison at the foot of this page needs at least "
                   f"{analysis.MIN_ITEMS} items both models answered, so it will not compare these. Set Items per "
                   f"task to {analysis.MIN_ITEMS} or more for it ({analysis.MIN_CLUSTERS} or more for intervals "
                   "clustered by item).")
    j1, j2, j3 = st.columns(3)
    device = j1.selectbox("Device", ["auto", "cpu", "cuda"], key="eval_device",
                          help="auto: CUDA in bfloat16 with a batch fitted to free memory when present")
    judge_url = j2.text_input("qa judge URL (optional)", key="eval_judge_url",
                              placeholder="http://127.0.0.1:8000/v1", help="An OpenAI-compatible server that "
                              "grades replies against the references; empty: the rules below grade them")
    judge_model = j3.text_input("qa judge model", key="eval_judge_model")
    with st.expander("Advanced: batch size, held-out check, perplexity window"):  # CLI and YAML had them
        a1, a2, a3, a4 = st.columns(4)
        spec_fields = EvalSpec.model_fields  # the spec's defaults and descriptions, as the CLI's
        advanced = dict(
            batch_size=a1.number_input("Generation batch", 1, 1024, spec_fields["batch_size"].default,
                                       key="eval_batch", placeholder="auto",
                                       help=spec_fields["batch_size"].description),
            overlap_threshold=a2.number_input("Overlap threshold", 0.01, 1.0,
                                              spec_fields["overlap_threshold"].default, 0.05, key="eval_overlap",
                                              help=spec_fields["overlap_threshold"].description),
            ngram=a3.number_input("Overlap n-gram (words)", 3, 30, spec_fields["ngram"].default, key="eval_ngram",
                                  help=spec_fields["ngram"].description),
            perplexity_window=a4.number_input("Perplexity window (tokens)", 8, 1_000_000,
                                              spec_fields["perplexity_window"].default, key="eval_ppl_window",
                                              help=spec_fields["perplexity_window"].description))
    if busy := [m for m in emodels if m in pending]:  # a second click queued the same evaluations again
        st.info((f"The evaluation launched here scores {', '.join(busy)}: its progress is shown below; evaluate "
                 if mine.issuperset(busy) else
                 f"An evaluation queued or running already scores {', '.join(busy)} (Jobs page): evaluate ")
                + f"{'it' if len(busy) == 1 else 'them'} again only for other tasks or settings; a model's newer run "
                "of a task replaces its older one.")
    if not emodels:  # not an error: with every model scored, none is preselected
        waiting = sorted(pending - scored)
        st.info("Choose the models to evaluate" + (
            ": every registered model has scores already (a model evaluated again on a task replaces its earlier run "
            "of that task)." if scored.issuperset(names) else
            f": every model without scores has an evaluation queued or running ({', '.join(waiting)}: see the Jobs "
            "page)." if waiting and scored | pending >= set(names) else "."))
    else:
        try:
            espec = EvalSpec(models=emodels, tasks=tasks + files.split(), limit=limit, max_new_tokens=max_new,
                             samples=samples, device=device, judge_url=judge_url.strip() or None,
                             judge_model=judge_model.strip() or None, **advanced)
            fan = st.toggle("One job per model", value=len(emodels) > 1, key="eval_fan_out",
                            disabled=len(emodels) < 2, help="Independent jobs run side by side on the worker's free "
                            "slots (--slots) or across a Ray cluster's nodes; the scores are the same as one job's.")
            b1, b2 = st.columns(2)
            if b1.button("Evaluate", type="primary", key="evaluate") and not egone:
                # every model and task file once, before the first job: a bad one said so once per model, and the
                # jobs of the models before it stayed queued
                with st.spinner("Checking the models and tasks…"):  # lm-eval's task index: ~10 s the first time
                    refused = check_each_task(espec)
                if refused:
                    st.error("Not queued: " + refused[0] if len(refused) == 1 else
                             "Not queued:\n" + "\n".join(f"- {e}" for e in refused))
                else:
                    st.session_state["eval_jobs"] = [
                        j for i, one in enumerate(espec.per_model() if fan else [espec])
                        if (j := submit(one, f"eval_job_{i}")) is not None]
            b2.download_button("Save spec (YAML)", espec.to_yaml(), file_name="eval.yaml", key="eval_spec",
                               help="Rerun it with `python -m backend run FILE` (`--queue`: through the worker).")
        except ValidationError as exc:
            st.error(explain(exc))
    for job_id in st.session_state.get("eval_jobs", []):
        job_status(job_id)

if not latest:
    st.info("No scores yet: run an evaluation above (the built-in model and one up-scaled from it make a start).")
    st.stop()
records = {r.name: r for r in model_records}
st.subheader("Models × tasks")
clean_only = st.toggle("Score only non-overlapping items", key="clean_only",
                       help="Leave out the items whose n-grams appear in the training data of the model's lineage "
                            "(every parent's training sets), and score the rest.")
order = {m: i for i, m in enumerate(lineage_order(model_records))}
# in lineage order (base → up-scaled → cpt → sft → dpo → merge), not by name; models no longer registered last, by name
by_lineage = lambda r: (order.get(r["model"], len(order)), r["model"])  # noqa: E731
score_rows = sorted(scoretable.table_rows(latest, records, clean=clean_only), key=by_lineage)
table = pd.DataFrame(score_rows)
# one note a line: run together, the notes of many models' blanked or 0 ± 0 cells made one paragraph nobody read;
# past scorenotes.MANY models a note counts them, every name in an expander (114 models: notes of 10,000 characters)
# a task read from a file by its stem wherever the page names it (a bar's title was cut off inside its path)
labels = tasknames.task_labels(task for _, task, _ in latest)
show_notes(scorenotes.table_notes(latest, score_rows, clean_only, labels), [
    "Each score records its set's source and fingerprint; the built-in sets (held-out text, eval-math, qa) share no "
    "8-gram with the built-in training sets (qa asks, in other words, the facts builtin:facts-corpus states)."])
score_table(table, "scores_table", labels)
exported = scoretable.export_table(score_rows)  # the rows, not the frame: pandas made a missing error NaN
d1, d2, d3 = st.columns(3)
d1.download_button("Export CSV", table.to_csv(index=False), "scores.csv", key="export_scores",
                   help="Standard errors in their own ± columns, so every score column stays numeric.")
d2.download_button("Export Markdown", tables.to_markdown(exported), "scores.md", key="export_scores_md",
                   help="Each score as lm-eval prints it: value ± standard error.")
d3.download_button("Export LaTeX", tables.to_latex(exported), "scores.tex", key="export_scores_tex",
                   help="Each score as lm-eval prints it: value ± standard error.")
qa_table = [{**r, "task": labels.get(r["task"], r["task"])} for r in qatable.qa_rows(latest, clean=clean_only)]
if qa_table:
    st.subheader("Closed-book QA: known answers and abstention")
    st.caption("Hallucination rate = wrong ÷ all; an abstention is not a hallucination, nor is a reply cut off by "
               "the token limit before it answered (cut-off rate), nor an empty reply, which the model ended at "
               "once (empty rate: an up-scaled model does this before continued pretraining; it said nothing, so it "
               "is no abstention either). Precision = correct ÷ (correct + wrong). "
               "Unanswerable questions ask about places and people no training set mentions.")
    st.dataframe(pd.DataFrame(qa_table), hide_index=True, key="qa_table", placeholder=MISSING)
    if before := sorted({f"{r['model']} ({r['task']})" for r in qa_table if r.get("empty_rate") is None}):
        st.caption(f"{', '.join(before)}: scored before empty replies were told apart (no empty rate): their "
                   "abstention rate counts the replies the model ended at once. Evaluate them again to separate them.")
    with st.expander("How answers are classified"):
        from backend import qa as qa_rules

        st.markdown("\n".join(f"{i}. **{v}** — {rule}" for i, (v, rule) in enumerate(qa_rules.RULES, 1))
                    + "\n\n**Answer matching:** " + qa_rules.NORMALISATION)
        st.markdown("**Abstention phrases:** " + ", ".join(f"`{p}`" for p in qa_rules.ABSTAIN_PHRASES))
        st.markdown("**Judge prompt** (when a judge URL is given):")
        st.code(qa_rules.JUDGE_PROMPT, language=None)

h6 = {(m, r.metric): r.value for (m, task, _), r in latest.items() if task == "lm-eval:h6"}
if h6:
    from backend import lmeval

    st.subheader("Open LLM Leaderboard (H6), beside the published numbers")
    cols6 = [f"{t}/{metric}" for t, _, metric in lmeval.H6] + ["h6_average"]
    rows6 = [{"model": m, **{c: h6.get((m, c)) for c in cols6}} for m in sorted({m for m, _ in h6})]
    rows6 += [{"model": f"{name} (published, %)", **{c: vals.get(c) for c in cols6}}
              for name, vals in lmeval.PAPER_H6.items()]
    st.dataframe(pd.DataFrame(rows6), hide_index=True, key="h6_table", placeholder=MISSING)
    st.caption("Ours are fractions (lm-eval), the published ones percent. Source: " + lmeval.PAPER_H6_SOURCE
               + ". Only numbers checked against that source are shown.")

# the models the charts draw, in the table's order (name_colors): every one up to scorenotes.MANY, else those picked
# (by default the newest model's lineage): 114 models made 2,000 px bars and a legend that squeezed its plot
charted = pick_models(list(table["model"]) if "model" in table else [], lineage_of,
                      next((r.name for r in reversed(model_records) if r.name in set(table["model"])), None))
# the table's own scores, errors and item counts (the clean ones with the toggle): the bars had drawn the stored
# scores under a table of clean ones
# headed as the charted models decide (scoretable.headline: byte perplexity only where their tokenizers differ)
in_charts = scoretable.of_models(latest, charted)
every_chart = scoretable.chart_rows(latest, clean=clean_only)
charts = {task: rows for task, rows in scoretable.chart_rows(in_charts, clean=clean_only).items() if rows}
scope = "non-overlapping items only" if clean_only else ""
# a task still headed by perplexities per token of different tokenizers: the table's note says so, the bar too
unlike = scoretable.unlike_tokenizers(scoretable.headline(in_charts))
cols = st.columns(2)
scored_on = {}  # task -> the models with a score for it (drawn, or in the chart note's "no clean score")
for model, task in scoretable.headline(latest):
    scored_on.setdefault(task, set()).add(model)
for i, (task, rows) in enumerate(sorted(charts.items())):
    why = "; ".join(filter(None, [scope, scoretable.UNLIKE_TOKENIZERS if rows[0]["task"] in unlike else ""]))
    cols[i % 2].plotly_chart(bar_figure(rows, tasknames.relabel(task, labels), models=charted, subtitle=why,
                                        source=task), key=f"bar_{task}")
    # a charted model with no score for this task had no bar, and nothing said why
    if missing := no_bar_note(rows, charted, scored_on.get(rows[0]["task"], set())):
        cols[i % 2].caption(missing)
# a task none of the picked models is scored on
if charted and (gone := tasknames.relabel(no_chart_note(every_chart, charts), labels)):
    st.caption(gone)
radar = scoretable.radar_scores(charts)
drew_radar = bool(radar) and len(on_radar := {t for v in radar.values() for t in v}) >= 3
if drew_radar:
    named = {m: {labels.get(t, t): v for t, v in by_task.items()} for m, by_task in radar.items()}
    st.plotly_chart(radar_figure(named, models=charted, subtitle=scope), key="radar")
    if unlined := no_radar_note(radar, charted, set().union(*(scored_on.get(t, set()) for t in on_radar))):
        st.caption(unlined)  # a charted model scored on none of its tasks had no line, and nothing said why
if charts:
    st.caption(scoretable.chart_note(latest, charts, clean_only, radar=drew_radar, labels=labels))

compare_length.show(charted, order, lineage_of, model_records, {task for _, task, _ in latest})


def merge_views(merged: list) -> None:
    """Each merge beside the candidates it was made from, one collapsed expander a merge headed by its name and
    method, under the charts: drawn open one under another, with a few merges the views pushed the bars, the radar
    and the answer-length plots past 1,000 px down the page (9,600 px with many). One merge is drawn open."""
    st.subheader("Merge candidates")
    st.caption("Each merge beside the candidates it was made from, as in the paper's merge table"
               + (": open one to see its table." if len(merged) > 1 else "."))
    for mrec in merged:
        # its own rows, headed as its models decide (scoretable.headline): a model of another tokenizer elsewhere in
        # the table turned this view's perplexity to byte perplexity too; only its tasks
        mine = scoretable.of_models(latest, mrec.parents + [mrec.name])
        view = pd.DataFrame(sorted(scoretable.table_rows(mine, records, clean=clean_only), key=by_lineage)
                            ).dropna(axis=1, how="all")
        head = f"**{mrec.name}** — {mrec.recipe.get('method')}" + (
            f" t={mrec.recipe.get('t')}" if mrec.recipe.get("method") == "slerp" else
            merge_weights(mrec.recipe, len(mrec.parents)))
        with st.expander(head, expanded=len(merged) == 1):
            if mrec.recipe.get("method") == "slerp":  # nearly parallel candidates: SLERP is the average, said here
                from backend.merge import slerp_note  # imports torch: only when a SLERP is shown

                if note := slerp_note(mrec.path):
                    st.caption(note)
            score_table(view, f"merge_view_{mrec.name}", labels)
            # a candidate with no scores was simply absent: "beside the candidates it was made from" showed the merge
            # beside one of its two, and nothing said the other was never evaluated (or is gone)
            unscored = [p for p in mrec.parents if p not in set(view["model"])]
            if unscored:
                st.caption("Not in this table: " + "; ".join(
                    f"`{p}` (deleted)" if p not in records else f"`{p}`, no scores yet (Evaluate above)"
                    for p in unscored) + ".")


if merged := [r for r in records.values() if r.kind == "merged" and r.name in table["model"].values]:
    merge_views(merged)  # last: the charts above are what most visits come for
