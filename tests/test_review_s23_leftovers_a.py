"""Left over from review 22, pinned by a test that fails without its fix (AppTest and the CLI in-process on tiny
workspaces; seconds each).

1. The Synthetic math page computed the Lengths and Export tabs' statistics (length_gap, length_histograms,
   exported_digest, counts) on every rerun: 1–2 s at 100k pairs though the pairs had not changed. They are cached by
   pipeline.pairs_revision, which a rejection or undo by hand changes, so a changed pair is never shown stale.
"""

from __future__ import annotations


import pytest
import streamlit as st

from backend.specs import SynthMathSpec
from backend.synth import pipeline
from tests.test_pages import app, metric

STATS = ("length_gap", "length_histograms", "exported_digest", "counts")


# ---------------------------------------------------------------- 1. the synth page's statistics, by revision

@pytest.fixture
def pairs(workspace):
    """A run 'lg' of 6 verified pairs, exported (lg-instruct, lg-alignment), and no statistic cached from another
    test's workspace."""
    pipeline.run_synth_math(SynthMathSpec(num_seeds=6, name="lg"))
    st.cache_data.clear()
    rec = pipeline.get_dataset("lg-pairs")
    assert pipeline.counts(rec.id) == {"verified": 6, "rejected": 0}
    yield rec
    st.cache_data.clear()


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the page computes each statistic."""
    seen = dict.fromkeys(STATS, 0)
    for name in STATS:
        def counted(*a, _real=getattr(pipeline, name), _name=name, **k):
            seen[_name] += 1
            return _real(*a, **k)
        monkeypatch.setattr(pipeline, name, counted)
    return seen


def gap_pairs(at) -> int:
    """The pairs the Lengths tab's sentence counts ("… in K of N pairs")."""
    text = next(m.value for m in at.markdown if m.value.startswith("Chosen answers are"))
    return int(text.split(" pairs ")[0].rsplit(" of ", 1)[1])


def test_a_rerun_computes_no_statistic_of_pairs_that_did_not_change(pairs, calls):
    at = app("synth.py")
    first = dict(calls)
    assert first["length_gap"] >= 1 and first["length_histograms"] == 1 and first["counts"] == 1
    assert first["exported_digest"] == 1  # lg-instruct and lg-alignment take the same pairs: one digest
    at.run()
    at.run()
    assert not at.exception, at.exception
    assert calls == first  # every rerun computed all four again (the Lengths and Export tabs ~1 s at 100k pairs)
    assert gap_pairs(at) == 6 and metric(at, "rejected by hand") == "0" and not stale_warnings(at)


def stale_warnings(at) -> list[str]:
    return [w.value for w in at.warning if "exported before the latest rejections" in w.value]


def test_a_rejection_on_the_page_or_elsewhere_is_shown_at_once(pairs, calls):
    at = app("synth.py")
    _, shown = pipeline.query_pairs(pairs.id, page_size=10)
    at.button(key=f"reject_{shown[0].id}").click().run()
    assert not at.exception, at.exception
    # the rejection changed the revision: counted afresh, the export said stale with what it would write now
    assert gap_pairs(at) == 5 and metric(at, "rejected by hand") == "1"
    assert any("hold 6 pairs" in w and "an export now would write 5 pairs." in w for w in stale_warnings(at))
    before = dict(calls)
    at.run()
    assert calls == before  # and cached again under the new revision
    at.button(key=f"undo_{shown[0].id}").click().run()
    assert gap_pairs(at) == 6 and metric(at, "rejected by hand") == "0" and not stale_warnings(at)
    # another session (or `python -m backend datasets reject`) rejects two: the next rerun of this page shows it
    pipeline.reject_by_hand(shown[1].id)
    pipeline.reject_by_hand(shown[2].id)
    at.run()
    assert gap_pairs(at) == 4 and metric(at, "rejected by hand") == "2"
    assert any("an export now would write 4 pairs." in w for w in stale_warnings(at))


def test_a_statistic_computed_while_the_pairs_changed_is_not_kept_for_the_old_revision(pairs, monkeypatch):
    """The pairs were rejected by another session between the page reading their revision and computing the length
    gap: that gap (5 pairs) describes the new pairs, so it is not cached under the old revision, which the undo
    brings back (the page then said 5 of 6 pairs)."""
    real, hit = pipeline.length_gap, []
    _, shown = pipeline.query_pairs(pairs.id, page_size=10)

    def rejected_meanwhile(*a, **k):
        if not hit:
            hit.append(1)
            pipeline.reject_by_hand(shown[0].id)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "length_gap", rejected_meanwhile)
    at = app("synth.py")
    assert hit and gap_pairs(at) == 5  # shown as computed, after the rejection
    pipeline.reject_by_hand(shown[0].id, undo=True)  # the revision read before the rejection, again
    at.run()
    assert gap_pairs(at) == 6


def test_the_revision_changes_with_each_rejection_and_comes_back_with_the_undo(pairs):
    other = pipeline.run_synth_math(SynthMathSpec(num_seeds=3, name="other"))
    assert other["verified"] == 3
    first = pipeline.pairs_revision(pairs.id)
    assert first == pipeline.pairs_revision(pairs.id)
    assert first != pipeline.pairs_revision(pipeline.get_dataset("other-pairs").id)
    _, shown = pipeline.query_pairs(pairs.id, page_size=10)
    pipeline.reject_by_hand(shown[0].id)
    one = pipeline.pairs_revision(pairs.id)
    pipeline.reject_by_hand(shown[1].id)
    two = pipeline.pairs_revision(pairs.id)
    pipeline.reject_by_hand(shown[0].id, undo=True)
    only_second = pipeline.pairs_revision(pairs.id)
    assert len({first, one, two, only_second}) == 4  # one rejected pair told from another, as a count would not
    pipeline.reject_by_hand(shown[1].id, undo=True)
    assert pipeline.pairs_revision(pairs.id) == first
    # another run's rejection leaves these pairs' revision (and their cached statistics) as they were
    _, theirs = pipeline.query_pairs(pipeline.get_dataset("other-pairs").id, page_size=10)
    pipeline.reject_by_hand(theirs[0].id)
    assert pipeline.pairs_revision(pairs.id) == first
