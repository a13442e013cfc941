"""The answer to "fewer hallucinations, or just shorter answers?" in one sentence (`sentence`), with its numbers, how
far its interval can be trusted, and what the token limit left out or may have caused; from the result of
backend/analysis.py compare.

    from backend.analysis import compare
    compare(records, "A", "B")["sentence"]  # compare calls sentence on its result
"""

from __future__ import annotations

from backend.answerstats import CUT_OFF_LARGE, FEW_ITEMS, RAISE_CAP, cap_remedy

# what an item left out for an empty reply means: no cap brings it back, and it is no answer of any length
EMPTY_NOTE = ("an empty reply (the model ended it at once) is neither an answer nor an abstention and has no length, "
              "so it is in neither rate; the QA table's empty rate counts them")


def _pts(x: float) -> str:
    return str(round(100 * x)).replace("-", "−")  # round(): −0.001 reads "0" (a ".0f" format printed "−0")


def _points(x: float) -> str:
    return f"{_pts(x)} point" + ("" if _pts(x) in ("1", "−1") else "s")


def _ci(lo: float, hi: float) -> str:
    return f"{_pts(lo)} to {_pts(hi)}"


def _interval(lo: float, hi: float) -> str:
    """The bootstrap interval in words; a zero-width one (every resample gave the same gap: the gap is the same on
    every item) is said to be that, not printed as "95 % CI 100 to 100"."""
    return f"95 % CI {_ci(lo, hi)}" if lo != hi else "the same on every item, so no interval"


def _cut_off_note(res: dict) -> str:
    """What the token limit and empty replies did to the comparison, as a sentence to append: for "hallucination"
    the items left out (`judged_items`); for "correct", the items left out for an empty reply, and, where a cut-off
    reply counts as not correct, each model's cut-off share when one reaches CUT_OFF_LARGE — a gap between a model
    that finishes and one the cap stops may be the cap's. A higher cap is advised only for cut-off replies."""
    left = res["left_out"]
    n_empty = left.get("n_empty", 0)
    if res["outcome"] == "hallucination":
        if not left["n"]:
            return ""
        why = [f"{RAISE_CAP} to judge {'the cut-off ones' if n_empty else 'them'}"] if left["n"] > n_empty else []
        return f" {left['message']}; " + "; ".join(why + [EMPTY_NOTE] * bool(n_empty)) + "."
    empty = f" {left['message']}; {EMPTY_NOTE}." if n_empty else ""
    share = {m: c / left["n_shared"] for m, c in left["by_model"].items()}
    if max(share.values()) < CUT_OFF_LARGE:
        return empty
    shares = ", ".join(f"{m} {100 * v:.0f} %" for m, v in share.items())
    # a model cut off at each cap tried (compare's never_ended) needs training, not a higher cap
    remedy = cap_remedy([m for m, v in share.items() if v], res.get("never_ended") or {})
    return empty + (f" Cut off by the token limit, and so counted as not correct: {shares} of the "
                    f"{left['n_shared']} items, so this may measure the token cap rather than the models: "
                    f"{remedy}.")


def within_bins_text(strat: dict, bold: bool = False) -> str:
    """length_controlled's gap within length bins as `compare` and the Compare page print it, with the items and
    bins it is over; below MIN_ITEMS (answerstats) "n/a (only k of n items fall in length bins both models fill)":
    a gap of +0.000 [+0.000, +0.000] over one bin of cut-off replies read as "length explains it all"."""
    if strat.get("length_note"):
        return f"n/a ({strat['length_note']})"
    gap, (lo, hi) = strat["length_controlled_diff"], strat["length_controlled_ci"]
    if gap is None or lo is None:
        return "n/a (too few answers)"
    num = f"**{gap:+.3f}**" if bold else f"{gap:+.3f}"
    cut = ", cut-off replies left out" if strat.get("cut_off_in_bins") else ""
    return (f"{num} [{lo:+.3f}, {hi:+.3f}] ({strat['items_compared']} of {strat['n_items']} items in the "
            f"{strat['bins_compared']} bins both models fill{cut})")


def sentence(res: dict) -> str:
    """The answer to "fewer hallucinations, or just shorter answers?" in one sentence, with its numbers, then,
    below FEW_ITEMS items, how rough its interval is (`_few_items_note`), then what the token limit left out or may
    have caused (`_cut_off_note`)."""
    if not res["ok"]:
        return res["message"]
    raw = res["raw"]  # no interval to trust or doubt where _answer says there is nothing to explain
    plain = res["rate_a"] == res["rate_b"] in (0, 1) or raw["low"] == raw["high"] == 0
    return _answer(res) + ("" if plain else _few_items_note(raw["n"])) + _cut_off_note(res)


def _few_items_note(n: int) -> str:
    """Below FEW_ITEMS shared items, how far to trust the "95 %" interval: 0/1 outcomes are too coarse for any
    bootstrap there (the expanded interval covered 82–84 % at 10 items, 92–95 % at 20, on simulated pairs)."""
    if n >= FEW_ITEMS:
        return ""
    return (f" With {n} shared items the interval is rough: on simulated pairs a 95 % interval over 10 items covered "
            f"the true gap only about 83 % of the time; {FEW_ITEMS} or more items make it trustworthy.")


def _answer(res: dict) -> str:
    """The verdict of `sentence`. Degenerate data says what it is: no event on either side, an event on every
    answer, or events on exactly the same items — not a difference with a zero-width interval."""
    a, b, raw, adj = res["model_a"], res["model_b"], res["raw"], res.get("adjusted")
    noun = "hallucinates" if res["outcome"] == "hallucination" else "errs (wrong, abstained or cut off)"
    past = "hallucinated" if res["outcome"] == "hallucination" else "erred"
    n = f"{raw['n']} shared items"
    if res["rate_a"] == res["rate_b"] == 0:
        return f"Neither {a} nor {b} {past} on the {n}: nothing to explain."
    if res["rate_a"] == res["rate_b"] == 1:
        return f"Both {a} and {b} {past} on every one of the {n}: nothing to explain."
    if raw["low"] == raw["high"] == 0:
        return (f"{a} and {b} {past} on exactly the same {round(res['rate_a'] * raw['n'])} of the {n}: no "
                "difference to explain.")
    if raw["low"] <= 0 <= raw["high"]:
        head = (f"{a} and {b} show no clear difference: {a} − {b} = {_points(raw['diff'])} "
                f"({_interval(raw['low'], raw['high'])}, {n})")
        sign = 1
    else:
        sign = 1 if raw["diff"] > 0 else -1  # > 0: B has the lower rate
        better, worse = (b, a) if sign > 0 else (a, b)
        lo, hi = sorted((sign * raw["low"], sign * raw["high"]))
        head = f"{better} {noun} {_points(sign * raw['diff'])} less than {worse} ({_interval(lo, hi)}, {n})"
    if adj is None:
        return f"{head}; the length effect could not be estimated: {res['length_message']}."
    d, (lo, hi) = sign * adj["diff"], sorted((sign * adj["low"], sign * adj["high"]))
    tail = f"; with answer length held fixed the gap is {_points(d)} ({_ci(lo, hi)})"
    if raw["low"] <= 0 <= raw["high"]:
        return f"{head}{tail}."
    mean_a, mean_b = f"{res['mean_tokens_a']:.0f}", f"{res['mean_tokens_b']:.0f}"
    # the shorter model as the sentence prints the lengths: on a tie A counted as shorter, and "shorter answers
    # explain most of it (10 vs 10 tokens on average)" named a length gap the numbers beside it did not show
    shorter = None if mean_a == mean_b else b if res["mean_tokens_b"] < res["mean_tokens_a"] else a
    better = b if sign > 0 else a
    lengths = f"{mean_a} vs {mean_b} tokens on average"
    if lo <= 0 <= hi and lo <= sign * raw["diff"] <= hi:
        why = (f": length and model cannot be told apart on these items ({lengths}), more items with overlapping "
               "lengths would settle it")
    elif lo <= 0 <= hi:
        why = (f": shorter answers explain most of it ({lengths})" if shorter == better else
               f": answer length explains most of it ({lengths})")
    elif hi < 0:
        why = f": at the same length the order reverses ({lengths})"
    elif d < sign * raw["diff"] / 2:
        why = f": length explains part of it, not all ({lengths})"
    else:
        why = f": not just shorter answers, the gap stays at the same length ({lengths})"
    return f"{head}{tail}{why}."
