"""Final answers: find them in a solution and compare them as numbers (0.5 = 1/2 = 50% = \\frac{1}{2})."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\boxed\{")
_GSM = re.compile(r"####\s*(.+?)\s*$", re.M)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*\$?\s*([^\n]+?)\s*(?:\.\s*)?$", re.I | re.M)
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


def stated_answer(text: str) -> str | None:
    """The final answer a solution states: \\boxed{}, '#### n' or 'the answer is …' (None without one)."""
    for finder in (_boxed, lambda t: (_GSM.findall(t) or [None])[-1], lambda t: (_ANSWER_IS.findall(t) or [None])[-1]):
        found = finder(text)
        if found:
            return found.strip().rstrip(".")
    return None


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
    t = text.strip().replace("\\!", "").replace("\\$", "").replace("$", "").replace(",", "")
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
