"""Synthetic math page: make SOLAR-style data (seeds -> rephrased pairs) as a job, inspect every pair, export
Synth. Math-Instruct / Synth. Math-Alignment, and save weighted mixes (the paper's SFT v1–v4, DPO v1–v3)."""

from __future__ import annotations

import html
import io
from pathlib import Path

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from backend import data, registry, runner, uploads
from backend.specs import SynthMathSpec, explain
from backend.synth import pipeline, seeds
from backend.synth.seeds import CATEGORIES, SeedError
from backend.words import plural
from pages.common import job_status, making_said, submit, via_app, worker_banner
from pages.figures import PALETTE, length_histogram_figure, word_diff_html



@st.cache_data(max_entries=16, show_spinner="Reading the seed file…")
def read_seed_upload(path: str, name: str) -> tuple[int, str]:
    """How many seeds an uploaded file holds, or what is wrong with it, naming the file as the user uploaded it:
    unread until the job ran, a malformed file failed the job naming the stored '<content hash>-name.jsonl'. The
    stored name holds a hash of the content, so the path keys the cache. A read that failed for a reason that is not
    the file's (data.ReaderFailed) is raised, so never cached."""
    try:
        return seeds.count_seeds(path, name), ""
    except SeedError as exc:  # why, then what to do, once
        return 0, seeds.upload_refused(exc)


def _parquet(path: str) -> bytes:
    buf = io.BytesIO()
    pd.read_json(path, lines=True).to_parquet(buf)
    return buf.getvalue()


def length_gap_sentence(g: dict) -> str:
    """The chosen-vs-rejected length gap in one sentence, with the sign test's verdict (pipeline.length_gap)."""
    if not g["pairs"]:
        return "No exported pair yet to compare chosen and rejected lengths."
    n, p = g["pairs"], g["sign_test_p"]
    verdict = ("no pair differs in length" if p is None else
               f"**systematic** (sign test p = {p:.2g})" if p < 0.05 else
               f"not distinguishable from chance (sign test p = {p:.2g})")
    return (f"Chosen answers are longer than rejected ones in {g['longer']} of {n} pairs "
            f"({g['longer'] / n:.0%}), shorter in {g['shorter']}, as long in {g['same']}; on average "
            f"{g['mean_diff']:+.1f} words ({g['chosen_words']:.1f} vs {g['rejected_words']:.1f}): {verdict}.")


def synth_name_taken(spec: SynthMathSpec) -> str:
    """Why a run of `spec` would be refused for its name ("" when free): a data set holds NAME-pairs, -instruct or
    -alignment, or a queued or running job will make them."""
    making = next((j for j in runner.active_jobs() if j.kind == "synth-math" and runner.planned_name(j) == spec.name),
                  None)
    if making:
        return making_said(making, "make", "making", f"{spec.name}-pairs", "its progress is shown below",
                           "choose another name to make another data set")
    try:
        pipeline.check_synth_free(spec)
    except pipeline.DatasetError as exc:
        return str(exc).replace("Nothing was made: choose", "Choose").replace(
            " (--name, or Name on the Synthetic math page)", "")
    return ""


def free_synth_name(base: str = "synth-math") -> str:
    """The first of synth-math, synth-math-2, … whose data sets are all free and that no queued or running job will
    make, as the Name's first value (a name a queued job makes was offered, then refused by synth_name_taken)."""
    making = {runner.planned_name(j) for j in runner.active_jobs() if j.kind == "synth-math"}
    for i in range(1, 1000):
        name = base if i == 1 else f"{base}-{i}"
        if name not in making and not any(pipeline.get_dataset(f"{name}-{k}")
                                          for k in ("pairs", "instruct", "alignment")):
            return name
    return base


class _PairsChanged(Exception):
    """The pairs changed (a rejection by hand in another session, or the CLI) while a statistic of them was computed:
    not cached under the revision read before, which it no longer describes."""


@st.cache_data(max_entries=32, show_spinner=False)
def _of_revision(what: str, pairs_id: int, flagged: bool | None, revision: str):
    """pipeline.WHAT(pairs_id, include_flagged=flagged), computed once per revision of the pairs
    (pipeline.pairs_revision: a rejection or undo changes it) instead of on every rerun (1–2 s at 100k pairs)."""
    out = _compute(what, pairs_id, flagged)
    if pipeline.pairs_revision(pairs_id) != revision:
        raise _PairsChanged
    return out


def _compute(what: str, pairs_id: int, flagged: bool | None):
    if what == "counts":
        return pipeline.counts(pairs_id)
    fn = {"length_gap": pipeline.length_gap, "length_histograms": pipeline.length_histograms,
          "exported_digest": pipeline.exported_digest}[what]
    return fn(pairs_id, include_flagged=flagged)


def of_pairs(what: str, pairs_id: int, flagged: bool | None, revision: str):
    """counts (flagged None), length_gap, length_histograms or exported_digest of these pairs as they are at
    `revision` (_of_revision)."""
    try:
        return _of_revision(what, pairs_id, flagged, revision)
    except _PairsChanged:  # shown as computed now; cached on a later rerun, under the revision read then
        return _compute(what, pairs_id, flagged)


@st.cache_data(max_entries=32, show_spinner=False)
def _holds(name: str, stamp: tuple, pairs_id: int, exported: str) -> bool:
    """pipeline.holds_export, read again only when the file or the pairs an export takes (`exported`) change."""
    d = pipeline.get_dataset(name)
    try:
        return d is not None and pipeline.holds_export(d, pairs_id)
    except OSError:  # the file is gone: it holds nothing an export would write
        return False


def missing_exports(rec) -> list:
    """The Instruct / Alignment sets exported from these pairs whose file is gone (deleted or moved by hand)."""
    names = [f"{rec.name.removesuffix('-pairs')}-{k}" for k in ("instruct", "alignment")]
    return [d for d in map(pipeline.get_dataset, names)
            if d is not None and d.provenance.get("pairs") == rec.name and not Path(d.path).is_file()]


def stale_exports(rec, revision: str) -> list[tuple]:
    """The Instruct / Alignment sets exported from these pairs that no longer hold exactly the pairs an export
    would write now (pairs rejected or restored by hand since), each with the count an export would write. Row
    counts alone missed one pair rejected and another restored: the files held the rejected pair, unsaid."""
    out = []
    for k in ("instruct", "alignment"):
        d = pipeline.get_dataset(f"{rec.name.removesuffix('-pairs')}-{k}")
        if d is None or d.provenance.get("pairs") != rec.name:
            continue
        flagged = bool(d.provenance.get("include_flagged"))
        path = Path(d.path)
        if not path.is_file():  # said apart (missing_exports): no rejection made it stale
            continue
        stamp = (path.stat().st_mtime_ns, path.stat().st_size)
        if not _holds(d.name, stamp, rec.id, of_pairs("exported_digest", rec.id, flagged, revision)):
            out.append((d, of_pairs("length_gap", rec.id, flagged, revision)["pairs"]))
    return out


def delete_control() -> None:
    """Delete any registered data set (pipeline.delete_dataset), as the Models page deletes a model: the models
    trained on it are named first and the tick confirms for this data set only; a job or mix still using it is
    refused with its name."""
    recs = {d.name: d for d in pipeline.list_datasets()}
    if done := st.session_state.pop("_deleted_dataset", None):
        st.success(done)
    if not recs:
        return
    with st.expander("Delete a data set"):
        gone = st.selectbox("Data set", list(recs), key="delete_dataset")
        _, models, _ = pipeline.dataset_users(gone, recs[gone].path)
        st.write(f"Removes **{gone}** from the registry, with its files under the workspace's datasets folder that "
                 "no other data set uses; a file registered from elsewhere is kept.")
        if models:
            st.warning(f"{len(models)} model(s) were trained on it: " + ", ".join(f"`{m.name}`" for m in models)
                       + ". They stay and keep naming it; their training-overlap check will say 'unknown'.")
        if st.session_state.get("_confirm_dataset_for") != gone:  # a tick confirms this data set only
            st.session_state["confirm_dataset"] = False
        st.session_state["_confirm_dataset_for"] = gone
        label = f"Yes, delete {gone}" + (f" although {len(models)} model(s) were trained on it" if models else "")
        sure = st.checkbox(label, key="confirm_dataset")
        if st.button("Delete", disabled=not sure, key="delete_dataset_button"):
            try:  # force: the tick above confirmed the models named
                st.session_state["_deleted_dataset"] = pipeline.delete_dataset(gone, force=True)
            except (ValueError, OSError) as exc:  # a job or a mix uses it
                st.error(str(exc))
            else:
                for key in ("delete_dataset", "_confirm_dataset_for", "pairs_set"):
                    if st.session_state.get(key) == gone:  # a picker left on a name no longer offered
                        del st.session_state[key]
                st.rerun()


via_app(__file__)
st.title("Synthetic math")
st.caption("SOLAR (arXiv 2312.15166, §3): seed problems are rephrased; the rephrased question → rephrased answer "
           "pairs are **Synth. Math-Instruct**; {prompt: rephrased question, chosen: rephrased answer, rejected: "
           "original answer} tuples are **Synth. Math-Alignment**. Only pairs whose final answer survives the "
           "rephrasing are kept.")
worker_banner()

with st.expander("Make a data set", expanded=not pipeline.list_datasets("synth-pairs")):
    c1, c2, c3 = st.columns(3)
    seed_kind = c1.radio("Seeds", ["built-in generator", "MATH / GSM8K file"], key="seed_kind")
    seed_file = None
    if seed_kind != "built-in generator":
        up = c1.file_uploader("Seed file (.jsonl / .json)", type=[s[1:] for s in uploads.SEED_SUFFIXES],
                              key="seed_upload")
        if up is not None:
            try:  # saved under a generated name: the name the browser sends never chooses the path
                seed_file, written = uploads.store_upload(up.getvalue(), up.name, uploads.SEED_SUFFIXES)
            except ValueError as exc:
                c1.error(str(exc))
            else:
                try:
                    count, problem = read_seed_upload(str(seed_file), up.name)
                except data.ReaderFailed as exc:  # not the file's fault: kept, to be read again (as the Train page)
                    c1.warning(f"{exc} {up.name} is kept (press R to read it again).")
                    seed_file = None
                else:
                    if problem:  # the file's own fault: no job for it ("Make pairs" stays off), and it is not kept
                        c1.error(problem)
                        uploads.discard_refused(seed_file, written)  # not kept in workspace/uploads for good
                        seed_file = None
                    else:
                        c1.caption(f"{up.name}: {plural(count, 'seed problem')}.")
    from_file = seed_kind != "built-in generator"
    num = c1.number_input("Number of seeds", 1, 1_000_000, 200, key="num_seeds",
                          help="The generator makes this many; from a file, at most this many records are used.")
    if from_file:  # the generator's levels (1–3) and categories mean nothing for a file: MATH has levels 1–5,
        levels, cats = [], []  # and a 1–3 filter silently dropped its levels 4 and 5
        c2.caption("Every record of the file is used (all levels and types), up to the number of seeds.")
    else:
        levels = c2.multiselect("Levels", [1, 2, 3], default=[1, 2, 3], key="levels")
        # full width below the columns: in the middle third, two of the eight chosen categories showed, the rest
        # hidden behind a fade, so the default read as "arithmetic and fractions"
        cats = st.multiselect("Categories", list(CATEGORIES), default=list(CATEGORIES), key="categories")
    kind = c3.radio("Rephraser", ["rules (offline)", "registered model", "OpenAI-compatible server"], key="reph_kind")
    extra: dict = {}
    if kind == "registered model":
        names = [r.name for r in registry.list_models()]
        extra["rephraser"] = "model:" + c3.selectbox("Model", names, key="reph_model") if names else "rules"
        extra["temperature"] = c3.slider("Temperature", 0.0, 1.5, 0.0, 0.1, key="reph_temp")
    elif kind == "OpenAI-compatible server":
        extra["rephraser"] = "openai:" + c3.text_input("Base URL", "http://127.0.0.1:8000/v1", key="reph_url")
        extra["api_model"] = c3.text_input("Model served", key="reph_api_model") or None
        extra["api_key_env"] = c3.text_input("Key from environment variable", "OPENAI_API_KEY", key="reph_key")
    bench = st.text_input("Contamination check: benchmark file (optional, e.g. a GSM8K test split .jsonl)",
                          key="benchmark")
    name = st.text_input("Name", free_synth_name(), key="synth_name",
                         help="The run registers NAME-pairs, NAME-instruct and NAME-alignment.")
    spec = None
    if from_file and seed_file is None:  # no spec of the generator's seeds stands in for a missing or bad file
        st.info("Upload a readable seed file to make pairs or save the spec.")
    else:
        try:
            spec = SynthMathSpec(seeds=str(seed_file) if seed_file else "generator", num_seeds=num, levels=levels,
                                 categories=cats, benchmark=bench or None, name=name, **extra)
        except ValidationError as exc:
            st.error(explain(exc))
    # a name taken was refused only after the click ("Not queued: … already named"), and "synth-math", the
    # default, is taken after the first run: said here, and Make pairs waits for a free name
    taken = synth_name_taken(spec) if spec else ""
    if taken:
        st.info(taken)
    b1, b2 = st.columns(2)
    if spec and b1.button("Make pairs", type="primary", key="make_pairs", disabled=bool(taken)):
        submit(spec, "synth_job")
    if spec:
        b2.download_button("Save spec (YAML)", spec.to_yaml(), file_name=f"{spec.name}.yaml", key="synth_spec")
    if "synth_job" in st.session_state:
        job_status(st.session_state["synth_job"])

delete_control()
pair_sets = pipeline.list_datasets("synth-pairs")
if not pair_sets:
    st.info("No synthetic pairs yet: make a data set above.")
    st.stop()

set_names = [d.name for d in pair_sets]
seen = st.session_state.get("_pair_sets_seen")
if seen is not None and (fresh := [n for n in set_names if n not in seen]):
    st.session_state["pairs_set"] = fresh[-1]  # a data set just made is shown; the picker would keep the old one
st.session_state["_pair_sets_seen"] = set_names
chosen = st.selectbox("Pairs", set_names, index=len(pair_sets) - 1, key="pairs_set")
rec = pipeline.get_dataset(chosen)
revision = pipeline.pairs_revision(rec.id)  # the statistics below are cached by it: a rejection changes it
tally = of_pairs("counts", rec.id, None, revision)
m = st.columns(5)
for col, (label, key) in zip(m, [("pairs", None), ("verified", "verified"), ("failed", "failed"),
                                 ("flagged", "flagged"), ("rejected by hand", "rejected")]):
    col.metric(label, rec.rows if key is None else tally.get(key, 0))
st.caption(f"Rephraser `{rec.provenance.get('rephraser')}` · seeds `{rec.provenance['settings']['seeds']}` · "
           f"file `{rec.path}`")
# the warnings sit in one container drawn on every run: shown, then gone after an export, they moved the tabs below
# to another place on the page, and the browser drew them afresh on their first tab, away from the export's result
notes = st.container()
# a pair rejected by hand leaves the exported files as they were, and training reads those files: "rejected by
# hand 1" stood above Synth. Math-Instruct / -Alignment that still held the pair, with nothing said
if gone := missing_exports(rec):
    notes.warning(f"{' and '.join(f'`{d.name}` ({d.path})' for d in gone)}: the exported file is gone (deleted or "
                  "moved outside DUS Studio), so a training job reading it fails: export again on the Export tab.")
stale = stale_exports(rec, revision)
if stale:
    d, now = stale[0]
    trained = sorted({m.name for x, _ in stale for m in pipeline.dataset_users(x.name, x.path)[1]})
    held = (f"hold {plural(d.rows, 'pair')}: exported before the latest rejections (or undos) by hand, an export "
            f"now would write {plural(now, 'pair')}" if now != d.rows else  # a count with its noun, not a bare 5
            f"hold {plural(d.rows, 'pair')}, but not the ones an export would write now: exported before the latest "
            "rejections and undos by hand")
    notes.warning(f"{' and '.join(f'`{x.name}`' for x, _ in stale)} {held}. Training reads the exported files: "
                  + ("make them again on the Export tab to leave the rejected pairs out." if not trained else
                     f"{', '.join(f'`{m}`' for m in trained)} {'was' if len(trained) == 1 else 'were'} trained on "
                     "them as they are, so they are not exported again (the Export tab says why); the rejections "
                     "count for a new synthetic-math run under another name, or once those models are deleted."))

tab_pairs, tab_lengths, tab_export, tab_mix = st.tabs(["Pairs", "Lengths", "Export", "Mixes"])

with tab_pairs:
    f1, f2, f3, f4 = st.columns([2, 1, 2, 2])
    cat_f = f1.multiselect("Category", list(CATEGORIES) + ["word_problem"], key="f_cat", placeholder="All")
    lvl_f = f2.multiselect("Level", [1, 2, 3], key="f_lvl", placeholder="All")
    state_f = f3.multiselect("Status", ["verified", "failed", "flagged", "rejected"], key="f_state", placeholder="All")
    search = f4.text_input("Search questions", key="f_search")
    page_size = 10

    def query(page: int):
        return pipeline.query_pairs(rec.id, categories=cat_f, levels=lvl_f, states=state_f, search=search, page=page,
                                    page_size=page_size)

    page = st.session_state.get("f_page", 1) - 1  # the page asked for (the widget below holds it)
    total, rows = query(page)
    pages = max(1, -(-total // page_size))
    if page >= pages:  # a narrower filter has fewer pages: show its last one
        page = pages - 1
        st.session_state["f_page"] = pages
        total, rows = query(page)
    st.number_input(f"Page (of {pages}; {plural(total, 'pair')} match{'es' if total == 1 else ''})", 1, pages,
                key="f_page")
    if not total:
        st.info("No pair matches these filters: clear a filter or the search to see pairs again.")
    for p in rows:
        badge = {"verified": ":green-badge[verified]", "failed": ":red-badge[failed]",
                 "flagged": ":orange-badge[flagged]"}[p.status]
        badge += " :gray-badge[rejected by hand]" if p.rejected_by_hand else ""
        with st.container(border=True):
            st.markdown(f"{badge} · {p.category} · level {p.level} · answer `{p.answer}`"
                        + (f" · rephrased answer `{p.new_answer}`" if p.new_answer else "")
                        + (f" — _{p.reason}_" if p.reason and p.reason != pipeline.HAND_REJECTED else ""))
            left, right = st.columns(2)
            # Only a verified pair not rejected by hand enters Synth. Math-Alignment as rejected/chosen.
            used = p.status == "verified" or (p.status == "flagged" and st.session_state.get("inc_flagged"))
            # a pair rejected by hand since the export the banner calls stale is in those files still: "not exported"
            # read as if it were gone from them
            left_out = " (left out of the next export)" if stale and p.rejected_by_hand else " (not exported)"
            roles = (" (rejected)", " (chosen)") if used and not p.rejected_by_hand else ("", left_out)
            if p.new_question or p.new_solution:
                q_old, q_new = word_diff_html(p.question, p.new_question)
                a_old, a_new = word_diff_html(p.solution, p.new_solution)
            else:  # no rephrasing came back: a diff against nothing struck the whole original through
                q_old, a_old = html.escape(p.question), html.escape(p.solution)
                q_new, a_new = "_(no rephrasing)_", ""
            left.markdown(f"**Original**{roles[0]}  \n{q_old}\n\n{a_old}", unsafe_allow_html=True)
            right.markdown(f"**Rephrased**{roles[1]}  \n{q_new}\n\n{a_new}", unsafe_allow_html=True)
            if p.rejected_by_hand:
                if st.button("Undo rejection", key=f"undo_{p.id}"):
                    pipeline.reject_by_hand(p.id, undo=True)
                    st.rerun()
            elif st.button("Reject this pair", key=f"reject_{p.id}"):
                pipeline.reject_by_hand(p.id)
                st.rerun()

with tab_lengths:
    hist = of_pairs("length_histograms", rec.id, bool(st.session_state.get("inc_flagged")), revision)
    st.caption("The pairs the export writes: verified" + (" and contamination-flagged" if
               st.session_state.get("inc_flagged") else "") + ", without failed or hand-rejected ones.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(length_histogram_figure(hist, [("q_words", "original question", PALETTE[0]),
                                                   ("new_q_words", "rephrased question", PALETTE[1])],
                                            "Question length", pipeline.LENGTH_BIN), key="h_q")
    c2.plotly_chart(length_histogram_figure(hist, [("a_words", "rejected (original answer)", PALETTE[4]),
                                                   ("new_a_words", "chosen (rephrased answer)", PALETTE[2])],
                                            "Answer length: chosen vs rejected (DPO length bias)", pipeline.LENGTH_BIN),
                    key="h_a")
    st.markdown(length_gap_sentence(of_pairs("length_gap", rec.id, bool(st.session_state.get("inc_flagged")),
                                             revision)))
    st.caption("If chosen answers are systematically longer than rejected ones, DPO can learn 'longer is better' "
               "rather than 'correct is better'.")

with tab_export:
    inc = st.checkbox("Include contamination-flagged pairs", key="inc_flagged")
    if st.button("Make Synth. Math-Instruct and Synth. Math-Alignment", type="primary", key="export"):
        try:
            out = pipeline.export(rec.name, include_flagged=inc)
        except (ValueError, OSError) as exc:  # a name taken by another kind of data set, an unwritable folder
            st.error(f"Not exported: {exc}")
        else:  # said after a rerun: the page's top, drawn before this click, still said the export was stale
            st.session_state["_exported"] = (
                f"{plural(out['rows'], 'pair')} → `{out['instruct']}` (SFT) and `{out['alignment']}` (DPO) in "
                f"`{out['folder']}`. Train on them with `dataset:{out['instruct']}` / `dataset:{out['alignment']}`.")
            st.rerun()
    if done := st.session_state.pop("_exported", None):
        st.success(done)
    for d in [pipeline.get_dataset(f"{rec.name.removesuffix('-pairs')}-{k}") for k in ("instruct", "alignment")]:
        if d is None or not Path(d.path).exists():
            continue
        c1, c2, c3 = st.columns([2, 1, 1])
        c1.write(f"`{d.name}` · {d.kind} · {plural(d.rows, 'row')}")
        # callables: the file is read (and converted) only when a download is asked for, not on every rerun
        c2.download_button("JSONL", lambda p=d.path: Path(p).read_bytes(), file_name=Path(d.path).name,
                           key=f"dl_jsonl_{d.name}")
        c3.download_button("Parquet", lambda p=d.path: _parquet(p), file_name=Path(d.path).with_suffix(".parquet").name,
                           key=f"dl_parquet_{d.name}", disabled=d.rows == 0)
    repo = st.text_input("Push both to a Hub data set repo (owner/name; needs internet and HF_TOKEN)",
                         key="hub_repo")
    if st.button("Push to the Hub", key="push", disabled=not repo):
        try:
            st.success(pipeline.push_to_hub(rec.name, repo))
        except (ValueError, OSError) as exc:
            st.error(str(exc))

with tab_mix:
    st.caption("A mix is a named, weighted list of sources that any training job takes as `mix:NAME`. The paper's "
               "SFT ablations: v1 Alpaca-GPT4; v2 + OpenOrca; v3 + Synth. Math-Instruct; v4 = v1 + Synth. "
               "Math-Instruct. DPO: v1 UltraFeedback Clean; v2 + Synth. Math-Alignment. Here the built-in "
               "Alpaca / OpenOrca / preference sets stand in for the originals; point the sources at the real "
               "files when you have them.")
    presets = pipeline.paper_mixes(rec.name)
    st.dataframe(pd.DataFrame([{"mix": k, "for": v[0], "sources": ", ".join(f"{s} ×{w:g}" for s, w in v[1])}
                               for k, v in presets.items()]), hide_index=True)
    if st.button("Save the paper's mixes", key="save_presets"):
        try:
            pipeline.save_paper_mixes(rec.name)
            st.success("Saved sft-v1 … sft-v4, dpo-v1, dpo-v2.")
        except (ValueError, data.ReaderFailed) as exc:  # a member's bad row (data.check_mix), or a failed read
            st.error(str(exc))
    saved = pipeline.list_datasets("mix")
    if saved:
        st.write("Saved mixes: " + ", ".join(f"`mix:{d.name}` ({d.provenance['for']})" for d in saved))
