"""README.md's command lines and settings checked against the code, so the README cannot drift from it again.

Every `python -m backend …` the README shows (code blocks, inline code, comments; `A | B` alternatives of one
command's action) is walked through backend/__main__.py's own argparse parser: each subcommand and action must exist,
each --flag must be an option of that command, and a value given to a flag with choices must be one of them. Inline
code that is a bare flag (`--force`) or a command without the prefix (`train --report-to`) is checked too. The
settings table's variables must be read by the code, with the default the table states where the code spells one.
"""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import pytest

from backend.__main__ import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# inline flags the README gives to other tools' commands: `ray start --resources '{"a100": 4}'` (README 'A Ray cluster')
FOREIGN_FLAGS = {"--resources"}
# variables the code reads that are not settings: the runner and the CLI set them for a job's processes, or tests do
INTERNAL_VARS = {"DUS_JOB_ID", "DUS_JOB_PID", "DUS_RUN_NAME", "DUS_TEST_PROGRESS_DELAY", "DUS_TEST_PROGRESS_RELEASE"}
# where the environment variables are read: the code, the start script and the set-up script
CODE = [*ROOT.glob("backend/**/*.py"), *ROOT.glob("storage/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py",
        ROOT / "run.sh", *ROOT.glob("scripts/*.sh")]


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The CLI's parser, built once: only read here."""
    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A command's subcommands or actions by name (`jobs`: list, show, …); {} for a command without any."""
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _resolve(words: list[str]) -> tuple[argparse.ArgumentParser | None, list[str], list[str], list[str]]:
    """(the parser of the command the words name, the words after its subcommands and action, the stem an
    alternative `| ACTION …` replaces the action of, problems). `models list`: the stem is `models`."""
    parser, i, stem = _parser(), 0, []
    while subs := _subparsers(parser):
        if i >= len(words) or words[i] not in subs:
            got = words[i] if i < len(words) else "nothing"
            return None, [], [], [f"{' '.join(words[:i]) or 'python -m backend'}: no subcommand {got!r} "
                                  f"(there are: {', '.join(subs)})"]
        stem, parser, i = words[:i], subs[words[i]], i + 1
    first = next((a for a in parser._actions if not a.option_strings and a.dest != "help"), None)
    if first is not None and first.choices and i < len(words) and not words[i].startswith("-"):
        if words[i] not in first.choices:  # models list, train cpt, auth check, cluster status
            return None, [], [], [f"{' '.join(words[:i])}: {words[i]!r} is not one of {', '.join(first.choices)}"]
        stem, i = words[:i], i + 1
    return parser, words[i:], stem, []


def _value_problems(command: str, flag: str, action: argparse.Action, values: list[str]) -> list[str]:
    """A value the README gives a flag with choices (`md|csv|tex` lists several) must be one of them."""
    out = []
    for value in values:
        for alt in value.split("|"):
            try:
                ok = (action.type(alt) if action.type in (int, float) else alt) in action.choices
            except ValueError:
                ok = False
            if not ok:
                out.append(f"{command}: {flag} {alt!r} is not one of {', '.join(map(str, action.choices))}")
    return out


def _flag_problems(command: str, parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """Each --flag among the words must be an option of this command; its value is checked where it has choices."""
    out = []
    for i, word in enumerate(rest):
        if not word.startswith("--"):
            continue
        flag = word.split("=")[0]
        action = parser._option_string_actions.get(flag)
        if action is None:
            out.append(f"{command}: no option {flag} (python -m backend {command} --help)")
        elif action.choices and action.nargs != 0:
            out += _value_problems(command, flag, action, _values(rest[i + 1:], action.nargs))
    return out


def _values(after: list[str], nargs) -> list[str]:
    """The words a flag takes: up to the next flag, one unless it takes a list (nargs + or *)."""
    taken = []
    for word in after:
        if word.startswith("-"):
            break
        taken.append(word)
    return taken if nargs in ("+", "*") else taken[:1]


def check_command(text: str) -> list[str]:
    """Problems with one README command (`models list | delete NAME`, without `python -m backend`)."""
    words = [w.strip("[]") for w in text.split()]
    words = [w for w in words if w and w not in ("...", "…")]
    parts, start = [], 0
    for k, w in enumerate(words + ["|"]):
        if w == "|":
            parts.append(words[start:k])
            start = k + 1
    parser, rest, stem, out = _resolve(parts[0])
    if parser is None:
        return out
    out += _flag_problems(" ".join(parts[0][:len(parts[0]) - len(rest)]), parser, rest)
    for alt in parts[1:]:  # `jobs list | show ID`: show replaces list
        p, r, _, why = _resolve(stem + alt)
        out += why or _flag_problems(" ".join(stem + alt[:len(alt) - len(r)]), p, r)
    return out


def readme_commands(text: str) -> list[str]:
    """Every `python -m backend …` in the README, up to where the shell or the prose ends it (a comment, a
    redirection, a closing backtick or parenthesis); a line continued with a backslash is one command."""
    text = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(m.group(1).split()) for m in re.finditer(r"python -m backend ([^`#>),;\n]+)", text)]


def inline_cli(text: str) -> tuple[list[str], list[str]]:
    """Inline code that is a bare flag (`--no-memory-check`), and inline code that is a command without the
    prefix (`train --report-to`, `jobs resume ID`)."""
    spans = re.findall(r"`([^`\n]+)`", text)
    subcommands = set(_subparsers(_parser()))
    flags = [f for s in spans if s.startswith("--") for f in re.findall(r"--[a-z][a-z0-9-]*", s)]
    commands = [s for s in spans if " " in s and s.split()[0] in subcommands]
    return flags, commands


def readme_problems(text: str) -> list[str]:
    """Everything in the README's text that the command line does not have."""
    out = [p for c in readme_commands(text) for p in check_command(c)]
    flags, commands = inline_cli(text)
    out += [p for c in commands for p in check_command(c)]
    known = {f for sub in _subparsers(_parser()).values() for p in [sub, *_subparsers(sub).values()]
             for f in p._option_string_actions}
    out += [f"inline `{f}`: no command has this option" for f in flags if f not in known | FOREIGN_FLAGS]
    return out


def test_every_readme_command_and_flag_is_in_the_parser():
    assert readme_problems(README.read_text()) == []


def test_the_readme_commands_are_found():
    """Not vacuous: the commands of every section are read (a broken pattern would find none and pass)."""
    text = README.read_text()
    found = readme_commands(text) + inline_cli(text)[1]
    assert len(found) >= 35
    for expected in ("upscale --base A --method llama-pro --groups 5 --out PATH",
                     "recipe tables [RUN] --format md|csv|tex", "auth check --address 0.0.0.0", "jobs exec ID",
                     "train --report-to",
                     "train sft --model M --data D --batch-size 1 --max-length 4096 --plan [--plan-device cuda "
                     "--plan-memory-gb 80 --plan-gpus 8]"):
        assert expected in found


@pytest.mark.parametrize("good, bad, problem", [
    ("--max-steps 30", "--max-step 30", "train cpt: no option --max-step (python -m backend train cpt --help)"),
    ("backend synth-math --seeds", "backend synth-maths --seeds", "python -m backend: no subcommand 'synth-maths'"),
    ("jobs list | show ID", "jobs list | shew ID", "jobs: no subcommand 'shew'"),
    ("models list | delete NAME", "models list | remove NAME", "models: 'remove' is not one of list, import, delete"),
    ("tables [RUN] --format md|csv|tex", "tables [RUN] --format md|csv|txt",
     "recipe tables: --format 'txt' is not one of md, csv, tex"),
    ("--method llama-pro", "--method llama_pro", "upscale: --method 'llama_pro' is not one of dus, slices, llama-pro"),
    ("`--no-memory-check`", "`--no-memory-chek`", "inline `--no-memory-chek`: no command has this option"),
    ("`train --report-to`", "`train --reports-to`", "train: no option --reports-to"),
    ("--machine-rank $SLURM_NODEID", "--machine-rnk $SLURM_NODEID", "run: no option --machine-rnk"),
])
def test_a_drifted_readme_fails(good, bad, problem):
    """A misspelt flag, subcommand, action or choice in the README is named (each first shown to be there)."""
    text = README.read_text()
    assert good in text
    problems = readme_problems(text.replace(good, bad, 1))
    assert any(p.startswith(problem) for p in problems), problems


def settings_rows(text: str) -> dict[str, str]:
    """The README's settings table: each variable and the default it states ('' where it says '—')."""
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            for var in re.findall(r"`([A-Z_]+)`", cells[0]):
                rows[var] = "" if cells[1] == "—" else cells[1].strip("`")
    return rows


def code_defaults(var: str, code: str) -> set[str]:
    """The defaults the code spells for a variable: os.environ.get("VAR", "X") and ${VAR:-X}."""
    found = re.findall(rf"environ\.get\(\"{var}\", \"([^\"]*)\"\)", code)
    found += re.findall(rf"\$\{{{var}:-([^}}]*)\}}", code)
    return {d.removeprefix("$PWD/") for d in found}


def test_the_settings_table_names_what_the_code_reads_with_its_defaults():
    code = "\n".join(p.read_text() for p in CODE)
    rows = settings_rows(README.read_text())
    assert {"DUS_WORKSPACE", "DATABASE_URL", "DUS_PORT", "DUS_JOB_SLOTS", "DUS_JOB_NICE"} <= set(rows)
    assert [v for v in rows if not re.search(rf"\b{v}\b", code)] == []
    wrong = {v: (d, code_defaults(v, code)) for v, d in rows.items()
             if code_defaults(v, code) and d.removeprefix("./") not in code_defaults(v, code)}
    assert wrong == {}


def test_every_setting_the_code_reads_is_in_the_settings_table():
    """A DUS_ variable read with os.environ (or run.sh's ${VAR:-…}) is a setting a user can give: the table lists it
    (DUS_REPORT_TO, DUS_RAY_ADDRESS and DUS_RAY_RESOURCES were only in the prose of later sections)."""
    code = "\n".join(p.read_text() for p in CODE)
    read = {*re.findall(r"environ(?:\.get\(|\[)\"(DUS_[A-Z_]+)\"", code), *re.findall(r"\$\{(DUS_[A-Z_]+)", code)}
    assert {"DUS_WORKSPACE", "DUS_JOB_SLOTS", "DUS_PORT"} <= read
    assert sorted(read - INTERNAL_VARS - set(settings_rows(README.read_text()))) == []
