"""How a count is said to a user: "1 row", "2 rows", "1,200 rows", never "1 rows".

Pages, the CLI and job logs share it (an f-string "{n} rows" said "1 rows" in a one-row preview, a job's log and a
mix's refusal); inline `'s' if n != 1` stays where a sentence needs more than a count and a noun.
"""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n` (with thousands separators) and the noun that fits it: `noun` for exactly one, else `nouns` (default
    noun + 's'; give it for an irregular plural: plural(n, "entry", "entries"))."""
    shown = f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)
    return f"{shown} {noun if n == 1 else nouns or noun + 's'}"
