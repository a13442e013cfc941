"""Numbers as a math question writes them, read into exact values: digits ("1,000", "2 1/2", "3/4", "50%", TeX
"\\frac{3}{4}") and words ("twenty-five", "two hundred and five", "3 million", "two thirds", "a half"). The tokens and
the number readers backend/synth/quantities.py builds its quantities from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
UNIT = {w: i for i, w in enumerate(_UNITS)}
TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10)))
SCALES = {"thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}
# the words that multiply the number before them, and whose "and a half" is half of them (the module's docstring)
MULTIPLIERS = {"hundred": 100, **SCALES, "dozen": 12}
# a fraction's denominator in words ("two thirds", "a quarter"); "second" is left out: "two seconds" is a time
DENOMINATORS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
                 "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7,
                 "eighth": 8, "eighths": 8, "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10, "twelfth": 12,
                 "twelfths": 12, "hundredth": 100, "hundredths": 100, "thousandth": 1000, "thousandths": 1000}

_NUM = (r"(?<![\d.])(?P<a>\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
        r"(?:\s+(?P<mn>\d+)\s*/\s*(?P<md>\d+)|\s*/\s*(?P<d>\d+))?(?P<pct>\s*%)?")
_TOKEN = re.compile(rf"{_NUM}|(?P<word>[a-z]+)|(?P<minus>-)|(?P<punct>[^\sa-z\d-])")
_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}|\\[dt]?frac\s*(\d)\s*(\d)")


@dataclass
class Tok:
    kind: str  # num, word, minus, punct
    text: str
    start: int
    end: int
    value: Fraction | None = None
    whole: bool = False  # a whole number written plainly: it may begin a run ("3 million", "2 thirds")
    percent: bool = False
    parts: tuple[Fraction, ...] = ()



def normalise(text: str) -> str:
    text = text.lower().replace("\u2212", "-").replace("\u2013", "-").replace("{,}", ",").replace("\\%", "%")
    text = text.replace("\\$", "$").replace("\\!", "").replace("¢", " cents ")
    text = re.sub(r"\bper\s+cent\b", "percent", text)
    return _TEX_FRAC.sub(lambda m: f" {m[1] or m[3]}/{m[2] or m[4]} ", text)


def tokens(text: str) -> list[Tok]:
    out: list[Tok] = []
    for m in _TOKEN.finditer(text):
        if m["word"]:
            out.append(Tok("word", m["word"], m.start(), m.end()))
        elif m["minus"]:
            out.append(Tok("minus", "-", m.start(), m.end()))
        elif m["punct"]:
            out.append(Tok("punct", m["punct"], m.start(), m.end()))
        else:
            out.extend(_number_tokens(m, text))
    return out


def _number_tokens(m: re.Match, text: str) -> list[Tok]:
    a = m["a"]
    value = Fraction(a.replace(",", ""))
    pct = bool(m["pct"])
    plain = "," not in a and "." not in a
    if m["mn"] is not None:
        num, den = int(m["mn"]), int(m["md"])
        if plain and 0 < num < den:  # "2 1/2": a mixed number
            return [Tok("num", m[0], m.start(), m.end(), (value + Fraction(num, den)) / (100 if pct else 1),
                         percent=pct)]
        first = Tok("num", a, m.start(), m.start("a") + len(a), value, whole=plain)  # "2 12/4": two numbers
        rest = re.search(r"\d+\s*/\s*\d+.*", m[0][len(a):], re.S)
        start = m.start() + len(a) + rest.start()
        return [first, _fraction_token(num, den, m[0][len(a) + rest.start():], start, m.end(), pct)]
    if m["d"] is not None:
        return [_fraction_token(value, int(m["d"]), m[0], m.start(), m.end(), pct)] if plain else [
            Tok("num", a, m.start(), m.start() + len(a), value), Tok("num", m["d"], m.start("d"), m.end("d"),
                                                                      Fraction(int(m["d"])))]
    parts: tuple[Fraction, ...] = ()
    bracketed = m.start() > 0 and text[m.start() - 1] in "([{" and text[m.end():m.end() + 1] in ")]}"
    if "," in a and bracketed:  # "(100,200)": a point, which a rephrasing may write "(100, 200)"
        parts = tuple(Fraction(p) for p in a.split(","))
    return [Tok("num", m[0], m.start(), m.end(), value / 100 if pct else value, whole=plain and not pct,
                 percent=pct, parts=parts)]


def _fraction_token(num, den, text: str, start: int, end: int, pct: bool) -> Tok:
    num, den = Fraction(num), int(den)
    if den == 0:
        return Tok("num", text, start, end, num)
    value = num / den / (100 if pct else 1)
    # "12/4" may be a division a rephrasing writes "12 divided by 4"; a proper fraction is one quantity
    parts = (num, Fraction(den)) if num >= den else ()
    return Tok("num", text, start, end, value, percent=pct, parts=parts)


def word(toks: list[Tok], i: int) -> str:
    return toks[i].text if 0 <= i < len(toks) and toks[i].kind == "word" else ""


def cardinal(toks: list[Tok], i: int) -> tuple[Fraction, int, bool] | None:
    """A number in words (or digits followed by a scale: "3 million", "2 dozen") from toks[i]: (value, the index
    after it, whether it was the single word "one"). English grammar decides what joins: "twenty five" is 25,
    "two hundred and five" 205, but "one two" is 1 and 2, "five and six" 5 and 6."""
    total, current, last, j, words = Fraction(0), None, None, i, []
    t = toks[i]
    if t.kind == "num":
        if not (t.whole and word(toks, i + 1) in (*SCALES, "hundred", "dozen")):
            return None
        current, last, j = t.value, "unit", i + 1
    elif t.text == "a" and word(toks, i + 1) in (*SCALES, "hundred", "dozen"):
        current, last, j = Fraction(1), "unit", i + 1
    while j < len(toks):
        w = word(toks, j)
        if w in UNIT and (last in (None, "hundred", "scale") or (last == "tens" and 0 < UNIT[w] < 10)):
            current, last = (current or 0) + UNIT[w], "unit"
        elif w in TENS and last in (None, "hundred", "scale"):
            current, last = (current or 0) + TENS[w], "tens"
        elif w == "hundred" and last == "unit":
            current, last = current * 100, "hundred"
        elif w in SCALES and last in ("unit", "tens", "hundred"):
            total, current, last = total + current * SCALES[w], None, "scale"
        elif w == "dozen" and last in ("unit", "tens", "hundred"):
            current, last = current * 12, "dozen"
            words.append(w)
            j += 1
            break
        elif toks[j].kind == "minus" and last == "tens" and word(toks, j + 1) in UNIT:
            j += 1  # "twenty-five"
            continue
        elif w == "and" and last in ("hundred", "scale") and (word(toks, j + 1) in UNIT or
                                                              word(toks, j + 1) in TENS):
            j += 1  # "two hundred and five"
            continue
        else:
            break
        words.append(w)
        j += 1
    if last is None:
        return None
    return total + (current or 0), j, words == ["one"]


def fraction_after(toks: list[Tok], j: int) -> tuple[Fraction, int] | None:
    """"a half", "one third", "three quarters", "2 fifths" from toks[j]: (value, the index after it)."""
    if j >= len(toks):
        return None
    if word(toks, j) == "a" and word(toks, j + 1) in DENOMINATORS:
        return Fraction(1, DENOMINATORS[word(toks, j + 1)]), j + 2
    got = cardinal(toks, j) if toks[j].kind == "word" or toks[j].whole else None
    if toks[j].kind == "num" and toks[j].whole and got is None:
        got = (toks[j].value, j + 1, False)
    if got is None or got[0] <= 0:
        return None
    k = got[1] + (got[1] < len(toks) and toks[got[1]].kind == "minus")  # "three-fourths"
    if word(toks, k) in DENOMINATORS:
        return got[0] / DENOMINATORS[word(toks, k)], k + 1
    return None
