"""The quantities a math question states, as exact values, whatever the notation: the changed-number check of a
rephrased question (rephrase.check_question) compares them.

One quantity is one value: "2 1/2" is 5/2 (not 2, 1 and 2), "3/4" is 3/4, "50%" and "50 percent" are 1/2, "50 cents"
is 1/2 (dollars), "$1.50" and "1 dollar and 50 cents" are 3/2, "-3" after "=" is -3, "twenty-five" is 25 (not 20 and
5), "two and a half" and "two and one half" are 5/2, "three quarters" is 3/4, "half" 1/2, "a dozen" 12, "half a dozen"
6, "a dozen and a half" 18, "3 million" 3000000, "3 below zero" -3, "a pair" 2, "3 dimes" 3/10 (dollars, as cents
are), as are "3 coins of 10 cents" and "3 10-cent coins", "twice" and "doubled" 2. A multiplier (hundred, thousand,
million, billion, dozen) takes a half one way: after it, the half is of it ("a dozen and a half" 18, "a hundred and a
half" 150, "a million and a half" 1500000), before it, it multiplies the whole ("one and a half dozen" 18, "3 and a
half million" 3500000, "half a million" 500000, "2.5 million" 2500000). Reading parts as numbers let a changed
quantity through: "2 1/2 cups" → "1 1/2 cups" holds only the parts 1 and 2 of the original, and "3/4 and 2/5" → "3/5
and 2/4" the same four digits. "one" counts ("one apple", "eats one", "one of the 5") unless it stands for a thing or
a person ("no one", "which one", "the one who"); "once" counts ("once a week", "only once") unless it joins a clause
("once he buys") or means now ("at once"). A rate keeps what it is per: "once a week" is not "once a month", nor "3
pairs of socks at $2 each" (a pair) "6 socks at $2 each" (a sock), though "6 socks at $2 a pair" is the same question.

`changed(original, rephrased)`: the values a rephrased question writes that no faithful rephrasing writes (what the
check refuses). `allowed(text)`: the values a rephrasing of `text` may write, its quantities plus the few other
spellings of the same quantity the notation leaves open: "12 - 3" may be rewritten "12 + (-3)" (so 3 and -3),
"2x + -6" as "2x - 6", a division "12/4" as "12 divided by 4" (12, 4 and 3; a proper fraction such as 3/4 stays 3/4
alone), the point "(100,200)" as "(100, 200)".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

# the number readers, under this module's names for them
from backend.synth.numwords import MULTIPLIERS as _MULTIPLIERS, TENS as _TENS, UNIT as _UNIT, Tok as _Tok
from backend.synth.numwords import cardinal as _cardinal, fraction_after as _fraction_after
from backend.synth.numwords import normalise as _normalise, tokens as _tokens, word as _word

_MULTIPLES = {"twice": 2, "double": 2, "doubled": 2, "doubles": 2, "doubling": 2, "thrice": 3, "triple": 3,
              "tripled": 3, "triples": 3, "tripling": 3, "quadruple": 4, "quadrupled": 4, "halved": Fraction(1, 2)}
# "a pair" is 2 (and "one pair" the same quantity); "3 pairs of socks" may become "6 socks"
_PAIRS = ("pair", "pairs", "couple", "couples")
# coins in dollars, as cents are: "3 dimes" is 30 cents (3/10); "a quarter" is 1/4 both as a coin and as a fraction
_COINS = {"dime": Fraction(1, 10), "dimes": Fraction(1, 10), "nickel": Fraction(1, 20), "nickels": Fraction(1, 20),
          "penny": Fraction(1, 100), "pennies": Fraction(1, 100)}
_COIN_WORDS = ("coin", "coins")
# a rate's marker: "once a week", "$5 per hour", "3 times every day", "$2 each pair"; "apiece" and a bare "each" mean
# each of the things counted ("pens at $2 each")
_PER = ("a", "an", "per", "every", "each")
_EACH = {"each", "apiece"}
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
# A rate's basis said another way, and the one word it is compared as: "$3 per lb" is "$3 a pound", "$15 an hr" "$15
# per hour", "$120 per annum" "$120 a year", "$5 a head" "$5 per person"; a plural of a known basis is that basis
# ("$15 per hours worked"). Without it a faithful rephrasing read as a rate per another thing (changed)
_BASIS_WORDS = {"sec": "second", "secs": "second", "min": "minute", "mins": "minute", "hr": "hour", "hrs": "hour",
                "diem": "day", "wk": "week", "wks": "week", "mo": "month", "mos": "month", "yr": "year",
                "yrs": "year", "annum": "year", "head": "person", "capita": "person", "people": "person",
                "lb": "pound", "lbs": "pound", "oz": "ounce", "kg": "kilogram", "kgs": "kilogram", "kilo": "kilogram",
                "kilos": "kilogram", "km": "kilometer", "kilometre": "kilometer", "metre": "meter", "mi": "mile",
                "ft": "foot", "feet": "foot", "gal": "gallon", "litre": "liter", "qt": "quart", "dozens": "dozen"}
# a basis that is a number of things, not one: "$3 a dozen" is not "$3 each" (a twelfth of it), nor "$2 a pair"
_GROUP_BASES = {"pair", "score", "gross", *_MULTIPLIERS}
_KNOWN_BASES = {*_PERIODS, *_BASIS_WORDS.values(), *_GROUP_BASES}
# "every week", "weekly": what "once a week" may reword (changed); "every other week" and "every 2 weeks" are not
_ADVERBS = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year",
            "annually": "year", "nightly": "night"}
_EVERY = re.compile(rf"\b(?:every|each)\s+([a-z]+)\b|\b({'|'.join(_ADVERBS)})\b")  # a period: "every wk" (_basis)
# a number attached to "-" after one of these is negative ("= -3", "(-2, 5)", "$-3$" in TeX), not a subtraction
_OPERATORS = set("=(,:;[{<>+*/×÷^$")



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
    per: str = ""  # what a rate is per ("once a week", "$5 an hour", "$2 a pair", "each pen costs $2"; "$2 each" is
    #                "each", or "pair" after a count of pairs): a rephrasing keeps it (changed)
    pick: bool = False  # "one of the 5": a pick, the original's "any of the 5" or "a marble from the 5" rewritten
    group: Fraction | None = None  # the count of the group a pick is of ("one of the 5 marbles": 5), None where it
    #                                names none ("one of the boys"): it rewrites a pick of that group alone (changed)




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
            out.append(Quantity(Fraction(_MULTIPLES[t.text]), per=_per(toks, i, i + 1, out)))  # "twice a week"
            i += 1
            continue
        elif t.text == "once":
            period = _basis(_word(toks, i + 2)) if _word(toks, i + 1) in ("a", "an", "every", "each", "per") else ""
            out.append(Quantity(Fraction(1), loose=not _once_counts(toks, i),
                                period=period if period in _PERIODS else "", per=_per(toks, i, i + 1, out)))
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
        elif not percent and (face := _coin_face(toks, j)) is not None:  # "3 coins of 10 cents", "3 10-cent coins":
            value, counts, cents, j = value * face[0], (value,), True, face[1]  # 30 cents, as "3 dimes" is
        loose = lone and _pronoun_one(toks, i)
        dollars = (i > 0 and toks[i - 1].text == "$") or _word(toks, j) in ("dollar", "dollars")
        joined = _cents_after(toks, j) if dollars and not percent else None
        if joined is not None:  # "1 dollar and 50 cents", "$1 and 50 cents": 3/2, each part allowed in a seed
            part, j = joined
            out.append(Quantity(value + part, (*alts, value, part), money=True))
        else:
            noun = after if lone and not loose and after != "of" else ""
            out.append(Quantity(value, alts, loose=loose, noun=noun, pairs=pairs,
                                pair_alts=pair_alts if pairs else (), money=dollars or cents, counts=counts,
                                per=_per(toks, i, j, out, dollars or cents),
                                pick=(pick := lone and not loose and after == "of"),
                                group=_group_after(toks, j + 1) if pick else None))
        i = j
    return out


def _coin_face(toks: list[_Tok], j: int) -> tuple[Fraction, int] | None:
    """The face value of the coins counted before toks[j], in dollars, and the index after it: "coins of 10 cents",
    "coins worth $1 each", "10-cent coins". A dime is 10 cents: "3 coins of 10 cents" is "3 dimes" said another way."""
    named_first = _word(toks, j) in _COIN_WORDS  # "coins of 10 cents", not "10-cent coins"
    if named_first and _word(toks, j + 1) not in ("of", "worth"):
        return None
    k = j + 2 * named_first
    dollars = k < len(toks) and toks[k].text == "$"
    k += dollars
    if k >= len(toks):
        return None
    t = toks[k]
    got = _cardinal(toks, k) if t.kind == "word" else (t.value, k + 1, False) if t.kind == "num" and \
        not t.percent else None
    if got is None:
        return None
    face, k = got[0], got[1]
    if not dollars:
        k += k < len(toks) and toks[k].kind == "minus"  # "10-cent"
        unit = _word(toks, k)
        if unit not in ("cent", "cents", "dollar", "dollars"):
            return None
        face, k = (face / 100 if unit.startswith("cent") else face), k + 1
    if not named_first:
        if _word(toks, k) not in _COIN_WORDS:
            return None
        k += 1
    return face, k + (_word(toks, k) == "each")


def _per(toks: list[_Tok], i: int, j: int, out: list[Quantity], money: bool = False) -> str:
    """What the quantity at toks[i:j] is per, or "": the thing after "a", "per", "every" or "each" that follows it
    ("once a week", "$5 an hour", "$2 for each pair"; a count past one word: "3 times a week", "60 miles per
    hour"), else for `money` the one a clause names just before it ("each pair costs $2", "a pen is priced at $2").
    A bare "each" or "apiece" ("pens at $2 each") is per each thing counted: "pair" after a count of pairs, for
    "3 pairs at $2 each" is $2 a pair, which "6 socks at $2 each" is not."""
    k = j + (not money and bool(_word(toks, j)) and _word(toks, j) not in (*_PER, *_EACH, "for", "and", "or"))
    k += _word(toks, k) == "for" and _word(toks, k + 1) in _PER
    basis = ""
    if _word(toks, k) in _PER and _word(toks, k + 1) and _word(toks, k + 1) not in ("of", "and", "or", "single"):
        basis = _word(toks, k + 1)
    elif _word(toks, k) in _EACH:
        basis = "each"
    elif money:
        for b in range(i - 1, max(i - 6, 0) - 1, -1):  # "each pair costs $2", "a pen is priced at $2"
            if toks[b].kind != "word" and toks[b].text != "$":
                break
            if _word(toks, b) in _PER and _word(toks, b + 1) and b + 1 < i:
                basis = _word(toks, b + 1)
                break
    basis = _basis(basis)
    if basis == "pair":
        return "pair"
    if basis in ("piece", "one"):  # "$2 a piece", "$2 for each one"
        basis = "each"
    if basis == "each":  # per each thing the nearest count before it counts
        counted = [q for q in out if not q.money and not q.loose]
        return "pair" if counted and counted[-1].pairs else "each"
    return basis


def _basis(word: str) -> str:
    """The word a rate's basis is compared as: "lb" is "pound", "hours" "hour", "annum" "year" (_BASIS_WORDS)."""
    if word in _PAIRS:
        return "pair"
    if word in _BASIS_WORDS:
        return _BASIS_WORDS[word]
    for end in ("s", "es"):  # "hours", "inches"
        if word.endswith(end) and word[:-len(end)] in _KNOWN_BASES:
            return word[:-len(end)]
    return word


def _same_per(a: str, b: str) -> bool:
    """Whether two rates' bases are one: equal, or "each" and a single thing named ("$2 each" is "$2 a pen"), not a
    period ("$5 each" is not "$5 a day") or a number of things ("$3 a dozen", a pair after a count of things)."""
    return a == b or ("each" in (a, b) and (b if a == "each" else a) not in (*_PERIODS, *_GROUP_BASES))


_DETERMINERS = {"the", "these", "those", "his", "her", "their", "its", "my", "your", "our"}


def _group_after(toks: list[_Tok], k: int) -> Fraction | None:
    """The count of the group named at toks[k] after a pick's "of" or "from" ("[the] 5 marbles", "the twenty-five
    boxes", "the 2 dozen eggs"), None where it names no count ("the boys", "the first box")."""
    k += _word(toks, k) in _DETERMINERS
    if k >= len(toks):
        return None
    got = _cardinal(toks, k)
    if got is not None:
        return got[0]
    return toks[k].value if toks[k].kind == "num" and not toks[k].percent else None


def _starts_sentence(toks: list[_Tok], i: int) -> bool:
    while i > 0 and toks[i - 1].kind == "punct" and toks[i - 1].text in _OPENERS:  # "\"Any of the 3 doors is …"
        i -= 1
    return i == 0 or (toks[i - 1].kind == "punct" and toks[i - 1].text in ".!?:")


_OPENERS = ('"', "“", "‘", "'", "(", "[")


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
    if after in ("a", "an", "every", "each", "per") and _basis(_word(toks, i + 2)) in _PERIODS:  # "once a wk"
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


def _picks(text: str) -> Counter:
    """The picks of one thing from a group `text` makes, which "one of the 5" rewords, counted by the group's count
    (_group_after): "picks any of the 3 doors", "opens either of the 2 boxes", "a marble from the 5" (not "each of
    the boys": one of them is not each of them). "Any of" or "either of" opening a sentence is its subject and says a
    thing of every one: "Either of the 2 roads is 5 km long" (both are), which "One of the 2 roads is 5 km long" is
    not."""
    toks, out = _tokens(_normalise(text)), Counter()
    for i, t in enumerate(toks):
        if t.text in ("any", "either") and _word(toks, i + 1) == "of" and not _starts_sentence(toks, i):
            out[_group_after(toks, i + 2)] += 1
        elif t.text in ("a", "an", "one") and _word(toks, i + 1):
            k = i + 3 if _word(toks, i + 2) in ("from", "among") else i + 4 if (
                _word(toks, i + 2), _word(toks, i + 3)) == ("out", "of") else 0
            if k and _word(toks, k) in _DETERMINERS:
                out[_group_after(toks, k)] += 1
    return out


def changed(original: str, rephrased: str) -> set[Fraction]:
    """The values `rephrased` states that no faithful rephrasing of `original` states: the values of its quantities
    (a pronoun "one" or a joining "once" is not read: "which one", "once he buys") less allowed(original), where a
    count "one X" is the original's "a X", "each X" or "per X" rewritten ("A pen costs $2" → "One pen costs $2", "$3
    per pound" → "$3 for one pound"; not "each of the boys" → "one of the boys") as long as the rephrasing names a
    single X no more often than the original: "A pen costs $2. How much do 3 pens cost?" → "A pen costs $2. How much
    does one pen cost?" names it twice, and its 1 is new. Likewise "once a week" is the original's "every week" or
    "weekly" rewritten. Only while the rephrasing keeps every quantity the original states (a count of pairs kept as
    a count of their things: "3 pairs of socks" as "6 socks"): "3 pears cost $6. How much is a pear?" → "One pear
    costs $6." dropped the 3 for the 1. A coin count is a count, never money: "3 dimes" may become "dimes, 3 of
    them", not "$3". A pick "one of the 5" is the original's "any of the 5" or "a marble from the 5" rewritten (a
    pick of a group of 5, not of "the group" or of 4), no more often than the original picks. A rate said per
    another thing than the original's same value ("once a week" → "once a month", "$2 a pair" → "$2 a sock", "$3 a
    dozen" → "$3 each") is refused whatever else; a basis spelled another way is the same ("$3 per lb" is "$3 a
    pound", _BASIS_WORDS)."""
    ok = allowed(original)
    before, after = quantities(original), quantities(rephrased)
    # a count of pairs and a count of their things are each other's rewording, not a count of the same kind:
    # "2 pairs of socks" may become "4 socks", not "4 pairs of socks"
    counted_other_way = {flag: {v for q in before if q.pairs != flag for v in q.pair_alts} for flag in (False, True)}
    counts_only = {v for q in before for v in q.counts}
    have = Counter(_SINGLE.findall(_normalise(original)))
    uses = Counter(_SINGLE.findall(_normalise(rephrased)))
    every = Counter(_ADVERBS[b] if b else _basis(a) for a, b in _EVERY.findall(_normalise(original)))
    once = Counter(q.period for q in after if q.period and not q.loose)
    written = {v for q in after for v in (q.value, *q.alts)}
    kept = all(q.value in written or any(v in {x.value for x in after if x.pairs != q.pairs} for v in q.pair_alts)
               for q in before if not q.loose)
    picks = _picks(original)
    bases: dict[Fraction, set[str]] = {}
    for q in before:
        if q.per and not q.loose:
            bases.setdefault(q.value, set()).add(q.per)
    # a rate said per another thing: "once a week" → "once a month", "3 pairs at $2 each" → "6 socks at $2 each"
    reper = {q.value for q in after if q.per and not q.loose and q.value in bases
             and not any(_same_per(b, q.per) for b in bases[q.value])}
    return reper | {q.value for q in after if not q.loose and q.value not in ok
                    and not (q.value in counts_only and not q.money)
                    and q.value not in counted_other_way[q.pairs]
                    and not (q.noun and kept and uses[q.noun] <= have[q.noun])
                    and not (q.pick and kept and sum(x.pick and x.group == q.group for x in after) <= picks[q.group])
                    and not (q.period and kept and once[q.period] <= every[q.period])}
