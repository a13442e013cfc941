"""The quantities a math question states, as exact values, whatever the notation: the changed-number check of a
rephrased question (rephrase.check_question) compares them.

One quantity is one value: "2 1/2" is 5/2 (not 2, 1 and 2), "3/4" is 3/4, "50%" and "50 percent" are 1/2,
"50 cents" is 1/2 (dollars), "$1.50" and "1 dollar and 50 cents" are 3/2, "-3" after "=" is -3, "twenty-five" is 25
(not 20 and 5), "two and a half" and "two and one half" are 5/2, "three quarters" is 3/4, "half" 1/2, "a dozen" 12,
"half a dozen" 6, "a dozen and a half" 18, "3 million" 3000000, "3 below zero" -3, "a pair" 2, "3 dimes" 3/10
(dollars, as cents are), "twice" and "doubled" 2. A multiplier (hundred, thousand, million, billion, dozen) takes a
half one way: after it, the half is of it ("a dozen and a half" 18, "a hundred and a half" 150, "a million and a
half" 1500000), before it, it multiplies the whole ("one and a half dozen" 18, "3 and a half million" 3500000,
"half a million" 500000, "2.5 million" 2500000). Reading parts as numbers let a changed quantity through:
"2 1/2 cups" → "1 1/2 cups" holds only the parts 1 and 2 of the original, and "3/4 and 2/5" → "3/5 and 2/4" the same
four digits. "one" counts ("one apple", "eats one", "one of the 5") unless it stands for a thing or a person ("no
one", "which one", "the one who"); "once" counts ("once a week", "only once") unless it joins a clause ("once he
buys") or means now ("at once").

`stated(text)`: the values a rephrased question writes; `changed(original, rephrased)`: those of them no faithful
rephrasing writes (what the check refuses). `allowed(text)`: the values a rephrasing of `text` may write,
its quantities plus the few other spellings of the same quantity the notation leaves open: "12 - 3" may be
rewritten "12 + (-3)" (so 3 and -3), "2x + -6" as "2x - 6", a division "12/4" as "12 divided by 4" (12, 4 and 3; a
proper fraction such as 3/4 stays 3/4 alone), the point "(100,200)" as "(100, 200)".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_UNIT = {w: i for i, w in enumerate(_UNITS)}
_TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10)))
_SCALES = {"thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}
# the words that multiply the number before them, and whose "and a half" is half of them (the module's docstring)
_MULTIPLIERS = {"hundred": 100, **_SCALES, "dozen": 12}
# a fraction's denominator in words ("two thirds", "a quarter"); "second" is left out: "two seconds" is a time
_DENOMINATORS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4,
                 "fourths": 4, "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7,
                 "eighth": 8, "eighths": 8, "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10, "twelfth": 12,
                 "twelfths": 12, "hundredth": 100, "hundredths": 100, "thousandth": 1000, "thousandths": 1000}
_MULTIPLES = {"twice": 2, "double": 2, "doubled": 2, "doubles": 2, "doubling": 2, "thrice": 3, "triple": 3,
              "tripled": 3, "triples": 3, "tripling": 3, "quadruple": 4, "quadrupled": 4, "halved": Fraction(1, 2)}
# "a pair" is 2 (and "one pair" the same quantity); "3 pairs of socks" may become "6 socks"
_PAIRS = ("pair", "pairs", "couple", "couples")
# coins in dollars, as cents are: "3 dimes" is 30 cents (3/10); "a quarter" is 1/4 both as a coin and as a fraction
_COINS = {"dime": Fraction(1, 10), "dimes": Fraction(1, 10), "nickel": Fraction(1, 20), "nickels": Fraction(1, 20),
          "penny": Fraction(1, 100), "pennies": Fraction(1, 100)}
# "-5 degrees" is "5 degrees below zero": the words between a number and "below zero"
_TEMPERATURE = {"degree", "degrees", "c", "f", "celsius", "fahrenheit", "centigrade", "°"}
# A lone "one" stands for a thing or a person, not a count, after these ("no one", "each one", "which one", "the
# one who", "the other one") and before these ("one who", "one another", "one can see"). "one of the 5" counts: "ate
# 2 of the 5" → "ate one of the 5" is a changed quantity, and it stands for no "a X" (changed)
_PRONOUN_AFTER = {"no", "each", "every", "any", "which", "whichever", "this", "the", "another", "other", "some", "a",
              "an", "its", "his", "her", "their", "my", "your", "our"}
_PERSONAL = {"them", "us", "you", "those", "these", "it"}  # "one of them": a pronoun, not "one of the 5"
_PRONOUN_BEFORE = {"another", "who", "whom", "whose", "which", "that", "can", "could", "may", "might", "must",
               "should", "would", "will"}
# "a red one", "the cheapest one": an adjective between the article and "one" (a short list: "gives the boy one
# apple" counts)
_ADJECTIVES = {"other", "same", "last", "first", "next", "only", "new", "old", "big", "small", "little", "right",
               "wrong", "cheaper", "dearer", "bigger", "smaller", "larger", "longer", "shorter", "heavier", "lighter",
               "older", "younger", "newer", "higher", "lower", "better", "worse", "red", "blue", "green", "white",
               "black", "yellow"}
_PERIODS = {"second", "minute", "hour", "day", "week", "fortnight", "month", "year", "decade", "century", "morning",
            "afternoon", "evening", "night", "weekend", "summer", "winter", "spring", "autumn", "time"}
# "every week", "weekly": what "once a week" may reword (changed); "every other week" and "every 2 weeks" are not
_ADVERBS = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year",
            "annually": "year", "nightly": "night"}
_EVERY = re.compile(rf"\b(?:every|each)\s+({'|'.join(sorted(_PERIODS))})\b|\b({'|'.join(_ADVERBS)})\b")
# a number attached to "-" after one of these is negative ("= -3", "(-2, 5)", "$-3$" in TeX), not a subtraction
_OPERATORS = set("=(,:;[{<>+*/×÷^$")

_NUM = (r"(?<![\d.])(?P<a>\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
        r"(?:\s+(?P<mn>\d+)\s*/\s*(?P<md>\d+)|\s*/\s*(?P<d>\d+))?(?P<pct>\s*%)?")
_TOKEN = re.compile(rf"{_NUM}|(?P<word>[a-z]+)|(?P<minus>-)|(?P<punct>[^\sa-z\d-])")
_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}|\\[dt]?frac\s*(\d)\s*(\d)")


@dataclass(frozen=True)
class Quantity:
    value: Fraction
    alts: tuple[Fraction, ...] = ()  # other values a rephrasing of it may write (see the module's docstring)
    loose: bool = False  # a pronoun "one" ("which one"), "once" joining a clause ("once he buys"): not a number
    noun: str = ""  # the word after a count "one" ("one pen"): a rephrasing of the original's "a pen" (see changed)
    pairs: bool = False  # a count of pairs ("3 pairs", "one couple"): a rephrasing may count their things instead
    pair_alts: tuple[Fraction, ...] = ()  # values a rephrasing may write when it counts the other way: "3 pairs" may
    #                                       become "6 socks" (not "6 pairs"), "a pair" "one pair" (not "1 sock")
    money: bool = False  # an amount of money: "$3", "3 dollars", "30 cents", "3 dimes"
    counts: tuple[Fraction, ...] = ()  # values a rephrasing may write as a count, not as money: "3 dimes" may become
    #                                    "dimes, 3 of them", not "$3"
    period: str = ""  # the period of a counting "once a week" ("week"): a rephrasing of the original's "every week"


@dataclass
class _Tok:
    kind: str  # num, word, minus, punct
    text: str
    start: int
    end: int
    value: Fraction | None = None
    whole: bool = False  # a whole number written plainly: it may begin a run ("3 million", "2 thirds")
    percent: bool = False
    parts: tuple[Fraction, ...] = ()


def _normalise(text: str) -> str:
    text = text.lower().replace("\u2212", "-").replace("\u2013", "-").replace("{,}", ",").replace("\\%", "%")
    text = text.replace("\\$", "$").replace("\\!", "").replace("¢", " cents ")
    text = re.sub(r"\bper\s+cent\b", "percent", text)
    return _TEX_FRAC.sub(lambda m: f" {m[1] or m[3]}/{m[2] or m[4]} ", text)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        if m["word"]:
            out.append(_Tok("word", m["word"], m.start(), m.end()))
        elif m["minus"]:
            out.append(_Tok("minus", "-", m.start(), m.end()))
        elif m["punct"]:
            out.append(_Tok("punct", m["punct"], m.start(), m.end()))
        else:
            out.extend(_number_tokens(m, text))
    return out


def _number_tokens(m: re.Match, text: str) -> list[_Tok]:
    a = m["a"]
    value = Fraction(a.replace(",", ""))
    pct = bool(m["pct"])
    plain = "," not in a and "." not in a
    if m["mn"] is not None:
        num, den = int(m["mn"]), int(m["md"])
        if plain and 0 < num < den:  # "2 1/2": a mixed number
            return [_Tok("num", m[0], m.start(), m.end(), (value + Fraction(num, den)) / (100 if pct else 1),
                         percent=pct)]
        first = _Tok("num", a, m.start(), m.start("a") + len(a), value, whole=plain)  # "2 12/4": two numbers
        rest = re.search(r"\d+\s*/\s*\d+.*", m[0][len(a):], re.S)
        start = m.start() + len(a) + rest.start()
        return [first, _fraction_token(num, den, m[0][len(a) + rest.start():], start, m.end(), pct)]
    if m["d"] is not None:
        return [_fraction_token(value, int(m["d"]), m[0], m.start(), m.end(), pct)] if plain else [
            _Tok("num", a, m.start(), m.start() + len(a), value), _Tok("num", m["d"], m.start("d"), m.end("d"),
                                                                      Fraction(int(m["d"])))]
    parts: tuple[Fraction, ...] = ()
    bracketed = m.start() > 0 and text[m.start() - 1] in "([{" and text[m.end():m.end() + 1] in ")]}"
    if "," in a and bracketed:  # "(100,200)": a point, which a rephrasing may write "(100, 200)"
        parts = tuple(Fraction(p) for p in a.split(","))
    return [_Tok("num", m[0], m.start(), m.end(), value / 100 if pct else value, whole=plain and not pct,
                 percent=pct, parts=parts)]


def _fraction_token(num, den, text: str, start: int, end: int, pct: bool) -> _Tok:
    num, den = Fraction(num), int(den)
    if den == 0:
        return _Tok("num", text, start, end, num)
    value = num / den / (100 if pct else 1)
    # "12/4" may be a division a rephrasing writes "12 divided by 4"; a proper fraction is one quantity
    parts = (num, Fraction(den)) if num >= den else ()
    return _Tok("num", text, start, end, value, percent=pct, parts=parts)


def _word(toks: list[_Tok], i: int) -> str:
    return toks[i].text if 0 <= i < len(toks) and toks[i].kind == "word" else ""


def _cardinal(toks: list[_Tok], i: int) -> tuple[Fraction, int, bool] | None:
    """A number in words (or digits followed by a scale: "3 million", "2 dozen") from toks[i]: (value, the index
    after it, whether it was the single word "one"). English grammar decides what joins: "twenty five" is 25,
    "two hundred and five" 205, but "one two" is 1 and 2, "five and six" 5 and 6."""
    total, current, last, j, words = Fraction(0), None, None, i, []
    t = toks[i]
    if t.kind == "num":
        if not (t.whole and _word(toks, i + 1) in (*_SCALES, "hundred", "dozen")):
            return None
        current, last, j = t.value, "unit", i + 1
    elif t.text == "a" and _word(toks, i + 1) in (*_SCALES, "hundred", "dozen"):
        current, last, j = Fraction(1), "unit", i + 1
    while j < len(toks):
        w = _word(toks, j)
        if w in _UNIT and (last in (None, "hundred", "scale") or (last == "tens" and 0 < _UNIT[w] < 10)):
            current, last = (current or 0) + _UNIT[w], "unit"
        elif w in _TENS and last in (None, "hundred", "scale"):
            current, last = (current or 0) + _TENS[w], "tens"
        elif w == "hundred" and last == "unit":
            current, last = current * 100, "hundred"
        elif w in _SCALES and last in ("unit", "tens", "hundred"):
            total, current, last = total + current * _SCALES[w], None, "scale"
        elif w == "dozen" and last in ("unit", "tens", "hundred"):
            current, last = current * 12, "dozen"
            words.append(w)
            j += 1
            break
        elif toks[j].kind == "minus" and last == "tens" and _word(toks, j + 1) in _UNIT:
            j += 1  # "twenty-five"
            continue
        elif w == "and" and last in ("hundred", "scale") and (_word(toks, j + 1) in _UNIT or
                                                              _word(toks, j + 1) in _TENS):
            j += 1  # "two hundred and five"
            continue
        else:
            break
        words.append(w)
        j += 1
    if last is None:
        return None
    return total + (current or 0), j, words == ["one"]


def _fraction_after(toks: list[_Tok], j: int) -> tuple[Fraction, int] | None:
    """"a half", "one third", "three quarters", "2 fifths" from toks[j]: (value, the index after it)."""
    if j >= len(toks):
        return None
    if _word(toks, j) == "a" and _word(toks, j + 1) in _DENOMINATORS:
        return Fraction(1, _DENOMINATORS[_word(toks, j + 1)]), j + 2
    got = _cardinal(toks, j) if toks[j].kind == "word" or toks[j].whole else None
    if toks[j].kind == "num" and toks[j].whole and got is None:
        got = (toks[j].value, j + 1, False)
    if got is None or got[0] <= 0:
        return None
    k = got[1] + (got[1] < len(toks) and toks[got[1]].kind == "minus")  # "three-fourths"
    if _word(toks, k) in _DENOMINATORS:
        return got[0] / _DENOMINATORS[_word(toks, k)], k + 1
    return None


def _sign(toks: list[_Tok], i: int, text: str) -> tuple[int, bool]:
    """The sign of the number at toks[i] and whether the other sign is the same quantity written another way: in
    "12 - 3" the 3 may become "+ (-3)", in "2x + -6" the -6 may become "- 6"; "= -3" is -3 alone."""
    j = i - 1
    if j >= 0 and toks[j].kind == "word" and toks[j].text == "negative":
        return -1, False
    if j < 0 or not (toks[j].kind == "minus" or toks[j].text == "minus"):
        return 1, False
    before = toks[j - 1] if j > 0 else None
    if before is not None and (before.kind == "minus" or before.text in ("+", "plus", "minus")):
        return -1, True
    if before is None or before.text in _OPERATORS:
        return -1, False
    attached = toks[j].kind == "minus" and toks[j].end == toks[i].start and text[toks[j].start - 1:toks[j].start] == " "
    if attached and before.kind == "word" and len(before.text) > 1 and before.text not in _UNIT and \
            before.text not in _TENS:
        return -1, False  # "is -3", "at -2 degrees"
    return 1, True  # a subtraction: "12 - 3", "4x - 3", "twelve minus three"


def quantities(text: str) -> list[Quantity]:
    """Every quantity `text` states, in order (see the module's docstring)."""
    text = _normalise(text)
    toks = _tokens(text)
    out: list[Quantity] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        got = _cardinal(toks, i)
        if got is None and t.kind == "num":
            value, j, lone, parts = t.value, i + 1, False, t.parts
            if t.whole and _word(toks, j) in ("st", "nd", "rd", "th") and toks[j].start == t.end:
                out.append(Quantity(value))  # "3rd": a place; "5th" for "3rd" is a changed question
                i = j + 1
                continue
        elif got is not None:
            (value, j, lone), parts = got, ()
        elif t.text in _MULTIPLES:
            out.append(Quantity(Fraction(_MULTIPLES[t.text])))
            i += 1
            continue
        elif t.text == "once":
            period = _word(toks, i + 2) if _word(toks, i + 1) in ("a", "an", "every", "each", "per") else ""
            out.append(Quantity(Fraction(1), loose=not _once_counts(toks, i),
                                period=period if period in _PERIODS else ""))
            i += 1
            continue
        elif t.text in ("a", "an") and _word(toks, i + 1) in (*_PAIRS, *_COINS):
            coin = _COINS.get(_word(toks, i + 1))
            out.append(Quantity(coin, money=True) if coin else Quantity(Fraction(2), pair_alts=(Fraction(1),)))
            i += 2
            continue
        elif (frac := _fraction_after(toks, i)) is not None or t.text == "half":
            value, j = frac or (Fraction(1, 2), i + 1)
            k = j + (_word(toks, j) == "a")  # "a half dozen", "half a dozen": 6; "half a million" 500000
            if _word(toks, k) in _MULTIPLIERS:
                value, j = value * _MULTIPLIERS[_word(toks, k)], k + 1
            out.append(Quantity(value))
            i = j
            continue
        else:
            i += 1
            continue
        percent, cents = t.kind == "num" and t.percent, False
        if not percent and (frac := _fraction_after(toks, i)) is not None:  # "two thirds", "one half"
            value, j, lone = frac[0], frac[1], False
        elif not percent and _word(toks, j) == "and" and (frac := _fraction_after(toks, j + 1)) is not None and \
                _word(toks, j + 1) in ("a", "one") and frac[0] < 1:
            # "two and a half", "1 and one third"; the half of a dozen or a hundred is of it: "a dozen and a half" 18
            whole = _MULTIPLIERS.get(_word(toks, j - 1), 1)
            value, j, lone = value + frac[0] * whole, frac[1], False
        elif not percent and (t.whole or t.kind == "word") and _word(toks, j) == "and" and j + 1 < len(toks) \
                and (nxt := toks[j + 1]).kind == "num" and not nxt.whole and not nxt.percent \
                and 0 < nxt.value < 1 and "/" in nxt.text:
            value, j, lone = value + nxt.value, j + 2, False  # "2 and 1/2"
        if _word(toks, j) in _MULTIPLIERS and not percent:  # "one and a half dozen", "3 and a half million"
            value, j, lone = value * _MULTIPLIERS[_word(toks, j)], j + 1, False  # "1 1/2 dozen", "2.5 million"
        if _word(toks, j) in ("percent",) and not percent:
            value, j, lone = value / 100, j + 1, False
        elif _word(toks, j) in ("cent", "cents") and not percent:
            value, j, lone, cents = value / 100, j + 1, False, True
        elif not percent and (zero := _zero_after(toks, j)) is not None:
            value, j, lone = value * zero[0], zero[1], False  # "3 below zero" is -3, not 3 and 0
        sign, either = _sign(toks, i, text)
        value *= sign
        alts = tuple(sorted({*parts, -value} if either else set(parts)))
        after, counts = _word(toks, j), ()
        pairs = not percent and after in _PAIRS
        if pairs:
            pair_alts = (value * 2,)  # "3 pairs of socks" may become "6 socks"
        elif not percent and after in _COINS:
            value, counts, cents = value * _COINS[after], (value,), True  # "3 dimes" is 30 cents, 3 a count
        loose = lone and _pronoun_one(toks, i)
        dollars = (i > 0 and toks[i - 1].text == "$") or _word(toks, j) in ("dollar", "dollars")
        joined = _cents_after(toks, j) if dollars and not percent else None
        if joined is not None:  # "1 dollar and 50 cents", "$1 and 50 cents": 3/2, each part allowed in a seed
            part, j = joined
            out.append(Quantity(value + part, (*alts, value, part), money=True))
        else:
            noun = after if lone and not loose and after != "of" else ""
            out.append(Quantity(value, alts, loose=loose, noun=noun, pairs=pairs,
                                pair_alts=pair_alts if pairs else (), money=dollars or cents, counts=counts))
        i = j
    return out


def _starts_sentence(toks: list[_Tok], i: int) -> bool:
    return i == 0 or (toks[i - 1].kind == "punct" and toks[i - 1].text in ".!?:")


def _pronoun_one(toks: list[_Tok], i: int) -> bool:
    """Whether the lone "one" at toks[i] stands for a thing or a person ("no one", "the one who", "which one", "one
    of the boys", "one by one", "One day, …") rather than counting ("one apple", "eats one", "at least one")."""
    before, after = _word(toks, i - 1), _word(toks, i + 1)
    if after == "can" and _word(toks, i + 2) == "of":
        return False  # "one can of soup" counts; "one can see" does not
    if before in _PRONOUN_AFTER or after in _PRONOUN_BEFORE or (before == "that" and not after):
        return True  # "than that one."; "that one apple" counts
    if after == "of" and _word(toks, i + 2) in _PERSONAL:
        return True  # "one of them" rewords "either of them", "any of us": picks one, counts nothing
    if (before == "by" and _word(toks, i - 2) == "one") or (after == "by" and _word(toks, i + 2) == "one"):
        return True
    if _word(toks, i - 2) in _PRONOUN_AFTER and (before in _ADJECTIVES or before.endswith("est")):
        return True  # "a red one", "the cheapest one"
    if i + 1 < len(toks) and toks[i + 1].text in ("'", "\u2019"):
        return True  # "one's"
    return _starts_sentence(toks, i) and after in _PERIODS  # "One day, Tom …"


def _once_counts(toks: list[_Tok], i: int) -> bool:
    """Whether "once" at toks[i] counts one time ("ran once.", "only once", "once a week", "once or twice") rather
    than joining a clause ("once he buys", "Once the tank is full") or meaning now ("at once")."""
    before, after = _word(toks, i - 1), _word(toks, i + 1)
    if before == "at":
        return False
    if before in ("only", "than", "exactly", "just", "least", "most") or after == "or":
        return True
    if after in ("a", "an", "every", "each", "per") and _word(toks, i + 2) in _PERIODS:
        return True
    if _starts_sentence(toks, i):
        return False  # "Once, long ago", "Once he buys"
    return i + 1 == len(toks) or (toks[i + 1].kind == "punct" and toks[i + 1].text in ".,;:!?)")


def _zero_after(toks: list[_Tok], j: int) -> tuple[int, int] | None:
    """The "[degrees] below zero" or "above zero" after a number at toks[j]: (its sign, the index after "zero")."""
    k = j
    while k < min(j + 3, len(toks)) and (_word(toks, k) or toks[k].text) in _TEMPERATURE:
        k += 1
    if _word(toks, k) in ("below", "above") and _word(toks, k + 1) == "zero":
        return (-1 if _word(toks, k) == "below" else 1), k + 2
    return None


def _cents_after(toks: list[_Tok], j: int) -> tuple[Fraction, int] | None:
    """The "[dollars] and 50 cents" after a number of dollars at toks[j]: (cents in dollars, the index after)."""
    k = j + (_word(toks, j) in ("dollar", "dollars"))
    if _word(toks, k) != "and" or k + 1 >= len(toks):
        return None
    got = _cardinal(toks, k + 1)
    if got is None and toks[k + 1].kind == "num" and toks[k + 1].whole:
        got = (toks[k + 1].value, k + 2, False)
    if got is None or _word(toks, got[1]) not in ("cent", "cents"):
        return None
    return got[0] / 100, got[1] + 1


def stated(text: str) -> set[Fraction]:
    """The values `text` states (a pronoun "one" or a joining "once" is not read: "which one", "once he buys")."""
    return {q.value for q in quantities(text) if not q.loose}


_ORDINALS = {w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
                                         "twelfth".split(), 1)}


def allowed(text: str) -> set[Fraction]:
    """The values a faithful rephrasing of `text` may state: its quantities and their other spellings (a place
    written in words, "third", may become "3rd")."""
    words = {Fraction(_ORDINALS[w]) for w in re.findall(r"[a-z]+", _normalise(text)) if w in _ORDINALS}
    return words | {v for q in quantities(text) for v in (q.value, *q.alts)}


# a single thing the text names: "a pen", "each ticket", "$3 per pound", "one apple", "a single red ball" (which may
# become "only one red ball": "single" itself states no count)
_SINGLE = re.compile(r"\b(?:(?:a|an|one)\s+single|a|an|each|every|per|one|single)\s+([a-z]+)")


def changed(original: str, rephrased: str) -> set[Fraction]:
    """The values `rephrased` states that no faithful rephrasing of `original` states: stated(rephrased) less
    allowed(original), where a count "one X" is the original's "a X", "each X" or "per X" rewritten ("A pen costs
    $2" → "One pen costs $2", "$3 per pound" → "$3 for one pound"; not "each of the boys" → "one of the boys") as
    long as the rephrasing names a single X no more often than the original: "A pen costs $2. How much do 3 pens cost?"
    → "A pen costs $2. How much does one pen cost?" names it twice, and its 1 is new. Likewise "once a week" is the
    original's "every week" or "weekly" rewritten. Only while the rephrasing keeps every quantity the original
    states (a count of pairs kept as a count of their things: "3 pairs of socks" as "6 socks"): "3 pears cost $6.
    How much is a pear?" → "One pear costs $6." dropped the 3 for the 1. A coin count is a count, never money:
    "3 dimes" may become "dimes, 3 of them", not "$3"."""
    ok = allowed(original)
    before, after = quantities(original), quantities(rephrased)
    # a count of pairs and a count of their things are each other's rewording, not a count of the same kind:
    # "2 pairs of socks" may become "4 socks", not "4 pairs of socks"
    counted_other_way = {flag: {v for q in before if q.pairs != flag for v in q.pair_alts} for flag in (False, True)}
    counts_only = {v for q in before for v in q.counts}
    have = Counter(_SINGLE.findall(_normalise(original)))
    uses = Counter(_SINGLE.findall(_normalise(rephrased)))
    every = Counter(a or _ADVERBS[b] for a, b in _EVERY.findall(_normalise(original)))
    once = Counter(q.period for q in after if q.period and not q.loose)
    written = {v for q in after for v in (q.value, *q.alts)}
    kept = all(q.value in written or any(v in {x.value for x in after if x.pairs != q.pairs} for v in q.pair_alts)
               for q in before if not q.loose)
    return {q.value for q in after if not q.loose and q.value not in ok
            and not (q.value in counts_only and not q.money)
            and q.value not in counted_other_way[q.pairs]
            and not (q.noun and kept and uses[q.noun] <= have[q.noun])
            and not (q.period and kept and once[q.period] <= every[q.period])}
