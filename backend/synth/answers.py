"""Final answers: find them in a solution and compare them as numbers (0.5 = 1/2 = 50% = \\frac{1}{2})."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\boxed\{")
_GSM = re.compile(r"####\s*(.+?)\s*$", re.M)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is\s*[:=]?|[:=])\s*\$?\s*([^\n]+?)\s*(?:\.\s*)?$",
                        re.I | re.M)
# The number that opens a stated answer, as lm-eval 0.4's GSM8K tasks read one (lm_eval/tasks/gsm8k): gsm8k.yaml's
# strict filter `#### (\-?[0-9\.\,]+)` and gsm8k-cot.yaml's `The answer is (\-?[0-9\.\,]+).` take that number and
# leave what follows out: "18 dollars", "7 (seven)" and "#### 72 dollars" are 18, 7 and 72 (compared whole, they read
# as no number, and a correct reply was scored a hallucination). Read here too: "answer is: 12", "$1,250", "**18**",
# a fraction or percent ("3/4", "2 1/2", "50%"), an equation's result ("3 + 4 = 7" is 7), and of several statements
# the last (a reply that corrects itself), where lm-eval takes the first.
# One deliberate difference: a statement offering two numbers ("18 or 19", "18-19", "18, 19") is not one answer.
# lm-eval's strict regex reads its first number (18); here it stays as stated, which is no number and scores
# "wrong": a hedge is not credited with whichever of its numbers happens to be the reference.
_LEADING = re.compile(r"[*_`\s]*((?:-\$?|\$-?)?\d+(?:,\d{3})*(?:\.\d+)?(?:\s+\d+\s*/\s*\d+|\s*/\s*\d+)?\s*%?"
                      r"|-?\\[dt]?frac\{\d+\}\{\d+\})")
_MORE = re.compile(r"\s*(?:[-–+*/×÷^=,]|\b(?:or|to|and|x)\b)\s*[$(]?\s*-?\d|\s*\^")  # another number follows
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\\frac\{\d+\}\{\d+\}")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _leading_number(span: str) -> str | None:
    """The number a stated answer opens with (the rules above _LEADING), or None: no number, or two offered."""
    span = span.strip().rstrip(".").strip()
    if to_number(span) is not None:
        return span
    m = _LEADING.match(span)
    if not m:
        return None
    clause = re.split(r"[.;!?](?:\s|$)", span[m.end():], maxsplit=1)[0]  # to the end of its sentence
    if "=" in clause:  # "3 + 4 = 7", "12 dollars per hour x 5 hours = 60 dollars": the result (not a later
        return _leading_number(clause.rsplit("=", 1)[1])  # sentence's "Let me check 4 + 4 = 8")
    if _MORE.match(span, m.end()):  # "18 or 19": no one answer
        return None
    return m[1].strip()


def stated_answer(text: str) -> str | None:
    """The final answer a solution states: \\boxed{} (whole), else the number that opens '#### …' or
    'the answer is …' (rules above _LEADING); a statement with no such number is returned as stated ("unknown",
    "18 or 19"), which no reference equals. None without a statement."""
    if found := _boxed(text):
        return found.strip().rstrip(".")
    spans = [found for finder in (_GSM, _ANSWER_IS) if (found := (finder.findall(text) or [None])[-1])]
    for span in spans:
        if (number := _leading_number(span)) is not None:
            return number
    return spans[0].strip().rstrip(".") if spans else None


def extract_answer(text: str) -> str | None:
    """The final answer of a worked solution: \\boxed{}, '#### n', 'the answer is …', else the last number."""
    if (found := stated_answer(text)) is not None:
        return found
    numbers = _NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def to_number(text: str | None) -> Fraction | None:
    """Parse 42, -3.5, 1,000, $12.50, 3/4, 2 1/2 (5/2), 50%, \\frac{3}{4}, \\dfrac34-free forms; None when not a
    number."""
    if text is None:
        return None
    # a comma only as a thousands separator ("1,000"): "18, 19" and "1, 2" are two numbers, not 1819 and 12
    t = text.strip().rstrip(",").replace("\\!", "").replace("\\$", "").replace("$", "")  # "39," ends a clause
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)
    t = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", t).strip().rstrip(".").strip()
    percent = t.endswith("%") or t.endswith("\\%")
    t = t.removesuffix("\\%").removesuffix("%").strip()
    # a mixed number, "2 1/2" or 2\frac{1}{2}, is 5/2: with the space dropped it read as 21/2
    m = (re.fullmatch(r"(-?)(\d+)\s+(\d+)\s*/\s*(\d+)", t)
         or re.fullmatch(r"(-?)(\d+)\s*\\[dt]?frac(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))", t))
    if m:
        num, den = (int(x) for x in (m.groups()[2:4] if m.group(3) else m.groups()[4:6]))
        if 0 < num < den:
            value = (int(m[2]) + Fraction(num, den)) * (-1 if m[1] else 1)
            return value / 100 if percent else value
    if re.search(r"\d\s+\d", t) and not re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", t):  # "1 000" is one
        # number; "3 4" two (a mixed number was read above), not 34
        return None
    t = t.replace(" ", "")
    m = re.fullmatch(r"(-?)\\d?frac\{(-?\d+)\}\{(\d+)\}", t)
    try:
        if m:
            value = Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1)
        elif re.fullmatch(r"-?\d+/\d+", t):
            value = Fraction(t)
        elif re.fullmatch(r"-?\d+(?:\.\d+)?", t):
            value = Fraction(t)
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def same_answer(a: str | None, b: str | None) -> bool:
    """Numeric equivalence when both parse as numbers; otherwise normalised text equality."""
    na, nb = to_number(a), to_number(b)
    if na is not None and nb is not None:
        return na == nb
    if a is None or b is None:
        return False
    norm = lambda s: re.sub(r"\s+|\\[,;!]|\$", "", s).lower().rstrip(".")  # noqa: E731
    return norm(a) == norm(b)


def format_number(value: Fraction) -> str:
    """Canonical text of a number: integers plainly, terminating decimals (prices) as decimals, else a fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1 and value.denominator <= 10_000:  # exact: 1/32 is 0.03125, not 0.0312 (a float to 4 places)
        places = value.denominator.bit_length()  # ≥ a and ≥ b of 2^a·5^b: 10^places is a multiple of it
        whole = abs(value.numerator) * 10 ** places // value.denominator
        text = f"{whole // 10 ** places}.{whole % 10 ** places:0{places}d}".rstrip("0")
        return ("-" if value < 0 else "") + text
    return f"{value.numerator}/{value.denominator}"
