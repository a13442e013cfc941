"""The Compare page's last section, "Answer length and hallucination": does a model hallucinate less, or only answer
shorter? A regression of hallucination on model and answer length, a paired bootstrap, McNemar's test and a check
within length bins for two models (backend/analysis.py), the cut-off and empty replies that leave items out, and
the length boxes and accuracy by length of the charted models."""

from __future__ import annotations

from collections import Counter, defaultdict

import pandas as pd
import streamlit as st
from sqlmodel import func, select

from backend import analysis, answerstats, scorenotes, specs, tasknames
from pages.common import MISSING
from pages.compare_pick import answer_pair, warn
from pages.figures import (bin_coincide_note, by_bin_figure, curves_coincide_note, hallucination_length_figure,
                           length_box_figure)
from storage import db
from storage.models import Generation


def same_items(recs: list[analysis.Record], models: list[str]) -> tuple[list[analysis.Record], str]:
    """The answers the accuracy-by-length chart pools, and a sentence on which: all of them when every model
    answered the same items; else only the items every model answered (a model scored on 6 items beside models
    scored on 30 gave bins of 1–3 answers that swung 0 → 0.67 → 0), or, when no item is shared, each model's own."""
    count = Counter(r.model for r in recs)
    shared = analysis.shared_items(recs, models)
    if all(c == len(shared) for c in count.values()):
        return recs, (f"All {len(models)} models on the same {len(shared)} items; " if len(models) > 1 else "") + (
            "n = answers in the bin.")
    per_model = ", ".join(f"{m} {count[m]}" for m in models)
    if not shared:
        return recs, (f"The models were scored on different items ({per_model}) and share none: each line is over "
                      "its own items, so the lines are not comparable; n = answers in the bin.")
    return ([r for per in shared.values() for r in per.values()],
            f"The models were scored on different numbers of items ({per_model}): the chart uses only the "
            f"{len(shared)} items every one of them answered; n = answers in the bin.")


@st.cache_resource(max_entries=16, show_spinner=False)
def task_records(url: str, task: str, version: tuple) -> tuple[analysis.Record, ...]:
    """The latest answer of every model to every item of `task`, as analysis records. Cached per database and
    data version (the task's newest row id and count), so reruns of the page do not reload 20k rows; a resource,
    not data: a data cache unpickled a copy of 66,000 records (0.3 s) on every rerun. Read-only: a tuple of frozen
    records, shared between sessions."""
    return tuple(analysis.task_records(task))


@st.cache_data(max_entries=32, show_spinner=False)
def compared(url: str, task: str, version: tuple, ma: str, mb: str, outcome: str, n_bins: int):
    """The regression, paired bootstrap, McNemar and the binned check for two models (cached like the records). The
    binned check only when the comparison has a verdict: with every item cut off it has no answers to bin."""
    pair = [r for r in task_records(url, task, version) if r.model in (ma, mb)]
    res = analysis.compare(pair, ma, mb, outcome=outcome)
    strat = analysis.length_controlled(pair, ma, mb, n_bins=n_bins, boots=500, outcome=outcome) if res["ok"] else None
    return res, strat, analysis.length_curves(pair, [ma, mb], n_bins=n_bins, outcome=outcome)


def _judged(left: dict, outcome: str, counts: bool = False) -> str:
    """What the caption adds for the items left out (analysis.judged_items): cut off (hallucination), empty (both)."""
    if not left["n"]:
        return ""
    what = [w for w, on in (("left cut off", outcome == "hallucination" and any(left["by_model"].values())),
                            ("replied empty", left.get("n_empty"))) if on]
    text = " and neither " + " nor ".join(what)
    if not counts:
        return text
    per = [f"{m} {c}" + (f" {w}" if len(what) > 1 else "") for w, key in (("cut off", "by_model"),
                                                                       ("empty", "empty_by_model"))
           if w != "cut off" or outcome == "hallucination" for m, c in left.get(key, {}).items() if c]
    return f"{text} ({left['n']} of {left['n_shared']} left out: {', '.join(per)})"


def show(charted: list[str], order: dict[str, int], lineage_of: dict[str, set[str]], model_records: list,
         scored_tasks=()) -> None:
    """The section. `charted`: the models the page's charts draw (its pick), in the table's order; `order`: every
    scored model's place in lineage order; `lineage_of`: each model's ancestors; `model_records`: the registered
    models, oldest first (the newest with answers is Model B by default); `scored_tasks`: the tasks of the table
    above, so that a task is named here as there (tasknames.task_labels)."""
    st.subheader("Answer length and hallucination")
    st.caption("A hallucination is a wrong answer (an abstention is not one). Fewer hallucinations, or just shorter "
               "answers? Per item, hallucination is regressed on model, answer length (log tokens) and question kind "
               "(logistic regression); if the model's effect vanishes once length is in, length explains the gap. An "
               "empty reply (the model ended it at once) is no answer of length 0: the items either model replied "
               "empty to are left out of the comparison. Lengths on this section's charts are in tokens (the "
               "generated ones; words only for answers stored without a token count): a reply cut off by the token "
               "limit is as long as the limit, whatever text it decoded to.")
    with db.session() as s:  # the task list first, then only that task's rows (200k rows took seconds to load)
        gen_tasks = sorted(s.exec(select(Generation.task).distinct()).all())
    if not gen_tasks:
        st.info(f"No answers stored yet: evaluate on a task with answers ({specs.EVAL_ANSWER_HELP}); perplexity, "
                "mc and lm-eval store scores only.")
        return
    labels = tasknames.task_labels({*scored_tasks, *gen_tasks})
    gtask = st.selectbox("Task", gen_tasks, key="gen_task", format_func=lambda t: labels.get(t, t))
    if (name := labels.get(gtask, gtask)) != gtask:
        st.caption(f"{name} is {gtask}.")
    with db.session() as s:
        version = tuple(s.exec(select(func.max(Generation.id), func.count()).where(Generation.task == gtask)).one())
    url = db.database_url()
    every_rec = task_records(url, gtask, version)
    # the charts and warnings: the picked models' answers (all with few models); none of them answered this task:
    # every model's. Model A and B: any model with answers (below)
    in_charts = set(charted)
    recs = tuple(r for r in every_rec if r.model in in_charts) or every_rec
    gen_models = sorted({r.model for r in recs})
    cut_share, all_cut = _unanswered_warnings(recs, gen_models)
    n_bins = st.slider("Length bins", 2, 6, 3, key="n_bins")
    # Model A and B from every model with answers here, in the table's order: from the charts' pick (the newest
    # model's lineage, 8 at most) the base and the Average merges could not be chosen, and the question the section
    # asks is the final model's against its base (answer_pair: by default)
    answered = sorted({r.model for r in every_rec}, key=lambda m: (order.get(m, len(order)), m))
    if len(answered) < 2:
        st.info(f"Only {answered[0]} has answers on {name}: evaluate another model on it (Evaluate above, task "
                f"{gtask}) to compare the two.")
    else:
        have = set(answered)
        newest = next((r.name for r in reversed(model_records) if r.name in have), None)
        _pair(url, (gtask, name), version, answered, answer_pair(answered, lineage_of, newest), n_bins, charted,
              every_rec, cut_share, all_cut)
    _length_charts(recs, gen_models, charted, n_bins)


def _unanswered_warnings(recs: tuple, gen_models: list[str]) -> tuple[dict[str, float], dict[str, list]]:
    """The warnings on replies cut off by the token limit and empty ones, with what each model cut off on every
    reply needs; returns the cut-off shares and those models (analysis.never_ended)."""
    cut_share = analysis.cut_shares(recs)  # one pass: a pass per model took seconds at 150 models
    # the models cut off on every reply here: "a higher Max new tokens" cannot help one that never ends a reply (an
    # untrained or freshly up-scaled model), and its other runs, at other caps, may show it does not
    all_cut = analysis.never_ended([m for m, v in cut_share.items() if v == 1]) if 1 in cut_share.values() else {}
    if any(cut_share.values()):  # a cut-off reply is no hallucination: a model that rambles is stopped, not wrong
        some = [m for m, v in cut_share.items() if v and m not in all_cut]
        cut_text = ("These replies are neither correct nor hallucinations: the hallucination comparison below leaves "
                    "out every item either model's reply was cut off on, and with the outcome correct they count as "
                    "not correct; the accuracy by length at the bottom leaves them out, and the length boxes draw "
                    "them at the token limit, where they were stopped. "
                    + (f"To let {', '.join(some) if all_cut else 'them'} finish, {analysis.RAISE_CAP}. "
                       if some else "")
                    + answerstats.cut_off_summary(all_cut))
        cut_head = "Cut off by the token limit before stating an answer: "  # past MANY models, counted by share
        warn(cut_head + ", ".join(f"{m} {v:.0%}" for m, v in cut_share.items() if v) + ". " + cut_text, gen_models,
             cut_head + scorenotes.shares_text(cut_share) + ". " + cut_text)
        if all_cut:  # what each needs, a row a model: the advice as paragraphs, one per remedy, made a 20-line warning
            with st.expander(f"What each model cut off on every reply needs ({len(all_cut)})"):
                st.dataframe(pd.DataFrame(answerstats.cut_off_rows(all_cut, shares=cut_share)), hide_index=True,
                             key="cut_off_advice")
    empty_share = analysis.empty_shares(recs)  # an up-scaled model before continued pretraining ends many at once
    if any(empty_share.values()):
        empty_text = (". An empty reply is no answer, neither an abstention nor a hallucination: the comparison below "
                      "leaves out every item either model replied empty on, while the length boxes and accuracy by "
                      "length at the bottom show them as answers of 0 words. To get answers, "
                      f"{analysis.CONTINUE_PRETRAINING}.")
        head = "Empty replies (the model ended them at once): "
        warn(head + ", ".join(f"{m} {v:.0%}" for m, v in empty_share.items() if v) + empty_text, gen_models,
             head + scorenotes.shares_text(empty_share) + empty_text)
    return cut_share, all_cut


def _pair(url: str, task: tuple[str, str], version: tuple, answered: list[str], pair: tuple[str, str], n_bins: int,
          charted: list[str], every_rec: tuple, cut_share: dict[str, float], all_cut: dict[str, list]) -> None:
    """Model A against Model B (`pair`: the defaults) on `task` (the task and its name as shown): the verdict, the
    regression, the paired numbers and the plot of the rate against answer length."""
    (gtask, name), (a1, a2, a3) = task, st.columns(3)
    chosen = (f"Every model with answers on {name} ({len(answered)}), not only the charted ones: the length boxes "
              "and accuracy by length at the bottom draw those. Default: ")
    ma = a1.selectbox("Model A", answered, index=answered.index(pair[0]), key="lc_a",
                      help=chosen + "the base of the newest model (its lineage's root), the regression's reference.")
    mb = a2.selectbox("Model B", answered, index=answered.index(pair[1]), key="lc_b",
                      help=chosen + "the newest model.")
    outcome = a3.radio("Outcome", ["hallucination", "correct"], horizontal=True, key="lc_outcome",
                       help="correct: the rate compared is of answers that are not correct (wrong, abstained or cut "
                            "off; items with an empty reply are left out).")
    if ma == mb:
        st.warning("Choose two different models.")
        return
    res, strat, curves = compared(url, gtask, version, ma, mb, outcome, n_bins)
    rate = analysis.RATE_LABEL[outcome]  # every number below is of this rate
    if not res["ok"] and (unseen := [m for m in (ma, mb) if m not in cut_share]):  # not charted: not looked at
        if ended_too := [m for m, v in analysis.cut_shares(r for r in every_rec if r.model in unseen).items()
                         if v == 1]:
            all_cut = {**all_cut, **analysis.never_ended(ended_too)}
    st.markdown(f"**{res['sentence']}**")
    if not res["ok"] and (ended := {m: c for m, c in all_cut.items() if m in (ma, mb)}):
        # the advice is in the table under the cut-off warning: said once, referred to here (it was repeated)
        tabled = [m for m in ended if m in cut_share]
        if tabled:
            st.caption(f"{' and '.join(tabled)}: cut off on every reply; what to do is in the table under the "
                       "cut-off warning above.")
        if untabled := {m: c for m, c in ended.items() if m not in cut_share}:  # not charted: not in that table
            st.caption(f"{' and '.join(untabled)}, not in the charts, cut off on every reply too; what to do:")
            st.dataframe(pd.DataFrame(answerstats.cut_off_rows(untabled)), hide_index=True, key="cut_off_pair")
    if res["ok"]:
        _verdict_numbers(res, strat, ma, mb, outcome, rate)
    left = curves["left_out"]
    if curves["n_items"]:
        st.plotly_chart(hallucination_length_figure(curves, rate, models=charted), key="hall_length")
        st.caption(f"The plot: the {curves['n_items']} items both models answered"
                   + _judged(left, outcome, counts=True) + "." + (f" {same}" if (same := curves_coincide_note(curves))
                                                                   else ""))
    else:  # no item to draw: a figure of bare axes said nothing
        st.caption(f"No plot of {rate} against answer length: there is no item both models answered"
                   + _judged(left, outcome, counts=True) + ".")


def _verdict_numbers(res: dict, strat: dict, ma: str, mb: str, outcome: str, rate: str) -> None:
    """The regression's table and the paired numbers of a comparison with a verdict."""
    lm, mc, raw = res["model"], res["mcnemar"], res["raw"]
    if lm["table"]:
        st.dataframe(pd.DataFrame(lm["table"])[["fit", "term", "coef", "odds_ratio", "low", "high",
                                                 "pvalue"]].round(4), hide_index=True, key="lc_coefs",
                     placeholder=MISSING)
        judged = _judged(lm["left_out"], outcome)
        st.caption(f"Logistic regression of {outcome} on the {lm['n_items']} items both models answered"
                   f"{judged}; reference model {ma}; odds ratios with 95 % intervals, {lm.get('cov', '')}. "
                   + " ".join(n[:1].upper() + n[1:] + "." for n in lm["notes"]))  # capitalize() lowered names
    fmt = lambda lo, hi: f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None else "(too few answers)"  # noqa: E731
    st.markdown(
        f"{rate.capitalize()} A − B: raw **{res['rate_a'] - res['rate_b']:+.3f}** "
        f"{fmt(raw['low'], raw['high'])} (paired bootstrap over {raw['n']} shared items)"
        + ("" if outcome == "hallucination" else " — wrong, abstained or cut off") + ";  \n"
        f"accuracy, McNemar: only {ma} right on {mc['only_a_correct']}, only {mb} on {mc['only_b_correct']}, "
        f"p = {mc['pvalue']:.3g} ({'exact binomial' if mc['exact'] else 'chi-square'});  \n"
        f"model-free length check (within {str(strat['bins']) + ' ' if strat['bins'] else ''}bins of answer length "
        f"in {strat['unit']}): "
        f"{rate} gap {analysis.within_bins_text(strat, bold=True)}"
        + f"; mean answer length {res['mean_tokens_a']:.0f} vs {res['mean_tokens_b']:.0f} tokens.")


def _length_charts(recs: tuple, gen_models: list[str], charted: list[str], n_bins: int) -> None:
    """The length boxes and accuracy by length bin of the charted models, over the items every one answered: the
    boxes of every reply (a cut-off one at the token limit it ran to), the accuracy of the replies that stated an
    answer (analysis.by_length_bin leaves cut-off ones out, and the caption counts them)."""
    # one unit on the page: tokens, as the length model and the plot of hallucination against length (words only for
    # rows stored without token counts); in words a reply cut off at the cap that decoded to blank text was drawn as
    # an answer of 0 words, in a "0 words" bin that read as empty replies
    unit = analysis.length_unit(recs)
    c1, c2 = st.columns(2)
    pooled, which = same_items(recs, gen_models)
    # the boxes over the same items as the accuracy chart: a model scored on 12 items beside models scored on 8 had
    # a box over its 12 next to their 8, lengths of different questions
    shared_lengths = defaultdict(list)
    for r, n in zip(pooled, analysis.lengths(pooled, unit).tolist()):
        shared_lengths[r.model].append(n)
    c1.plotly_chart(length_box_figure(dict(shared_lengths), models=charted, unit=unit), key="len_box")
    kept, cut = analysis.stated(pooled)
    box_words = [f"Only the {len(pooled) // len(gen_models)} items every model answered, as in the chart beside it."
                 ] if len(pooled) != len(recs) else []
    if cut:
        box_words.append("Replies cut off by the token limit are drawn at the length they ran to.")
    if box_words:
        c1.caption(" ".join(box_words))
    place = {m: i for i, m in enumerate(charted)}  # in the charts' order, as their legends; past MANY, counted
    counts = (", ".join(f"{m} {cut[m]}" for m in sorted(cut, key=lambda m: (place.get(m, len(place)), m)))
              if len(cut) <= scorenotes.MANY else f"{sum(cut.values())} replies of {len(cut)} models")
    cut_words = (f" Left out: the replies cut off by the token limit before an answer ({counts}): they stated none, "
                 "so they are neither right nor wrong at any length.") if cut else ""
    if not kept:  # every reply cut off: no bin has an answer
        c2.caption(f"No accuracy by answer length: every reply here was cut off by the token limit before an answer "
                   f"({counts}).")
        return
    bin_rows = analysis.by_length_bin(pooled, n_bins, unit)
    edges = analysis.bin_edges(kept, n_bins, unit)  # by_length_bin's: over the replies it bins
    if len(edges) - 1 < n_bins:  # quantiles that tie merge: 3 bins asked, 2 drawn, without a word
        which += (f" {len(edges) - 1} length bin{'s' if len(edges) > 2 else ''}, not {n_bins}: many answers have "
                  "the same length, so some bins' edges coincide.")
    acc_fig = by_bin_figure(bin_rows, "accuracy", models=charted, unit=unit)
    acc_fig.update_traces(mode="lines+markers+text", textposition="top center", textfont_size=10)  # n on each point
    c2.plotly_chart(acc_fig, key="bin_acc")
    if gone := [m for m in gen_models if m in cut and not any(r["model"] == m for r in bin_rows)]:
        cut_words += f" {scorenotes.who(gone)}: no line, every reply cut off."
    same = bin_coincide_note(bin_rows, "accuracy")
    c2.caption(which + cut_words + (f" {same}" if same else ""))
