"""The command line as a terminal user and a script see it (session 16): the Synth page's temperature and key
variable from a shell, `scores --json` for scripts, every default in --help (a 0 was hidden), and a mistyped
option answered by the command it was given to."""

from __future__ import annotations

import json
import math

import yaml

from backend.__main__ import build_parser
from storage.models import EvalScore, Job
from tests.test_review_cli import add, cli  # main() as the shell runs it; rows added


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- 1. synth-math --temperature / --api-key-env

def test_synth_math_takes_the_synth_pages_temperature_and_key_variable(tmp_path):
    """The Synth page sets both (pages/synth.py: its Temperature slider, "Key from environment variable"); the CLI
    refused them as unrecognized, so a page's run could not be made from a shell."""
    saved = tmp_path / "s.yaml"
    rc, out, err = cli("synth-math", "--seeds", "2", "--rephraser", "openai:http://127.0.0.1:9/v1", "--api-model", "m",
                       "--api-key-env", "MY_KEY", "--temperature", "0.7", "--name", "t1", "--queue",
                       "--save-spec", str(saved))
    assert (rc, err) == (0, ""), err
    spec = yaml.safe_load(saved.read_text())
    assert (spec["temperature"], spec["api_key_env"], spec["api_model"]) == (0.7, "MY_KEY", "m")
    from storage import db
    with db.session() as s:
        job = s.get(Job, int(out.split()[2]))
    assert (job.spec["temperature"], job.spec["api_key_env"]) == (0.7, "MY_KEY")
    rc, out, err = cli("synth-math", "--seeds", "2", "--name", "t2", "--queue", "--save-spec", str(saved))
    assert rc == 0 and yaml.safe_load(saved.read_text())["temperature"] == 0.0  # the spec's defaults unchanged
    assert yaml.safe_load(saved.read_text())["api_key_env"] == "OPENAI_API_KEY"
    assert cli("synth-math", "--temperature", "3", "--name", "t3")[::2] == (
        2, "error: --temperature: Input should be less than or equal to 2\n")


# ---------------------------------------------------------------- 2. scores --json

def test_scores_json_gives_each_stored_score_with_its_error_and_items():
    assert cli("scores", "--json") == (0, "[]\n", "")  # nothing evaluated yet: an empty list, as `jobs list --json`
    add(EvalScore(model="a", task="synth-math", metric="accuracy", value=0.75, n=4,
                  details={"clean": {"accuracy": 0.5, "n": 3}}),
        EvalScore(model="a", task="perplexity", metric="perplexity", value=300.0, n=10),
        EvalScore(model="b", task="lm-eval:arc_easy", metric="acc", value=0.6, n=50),
        EvalScore(model="b", task="lm-eval:arc_easy", metric="acc_stderr", value=0.07, n=50))
    rc, out, err = cli("scores", "--json")
    assert (rc, err) == (0, "")
    rows = json.loads(out)
    got = [(r["model"], r["task"], r["metric"], r["value"], r["stderr"], r["n"]) for r in rows]
    assert got == [("a", "perplexity", "perplexity", 300.0, None, 10),
                   ("a", "synth-math", "accuracy", 0.75, math.sqrt(0.75 * 0.25 / 3), 4),
                   ("b", "lm-eval:arc_easy", "acc", 0.6, 0.07, 50)]  # lm-eval's own error, not a row of its own
    assert rows[1]["details"] == {"clean": {"accuracy": 0.5, "n": 3}} and rows[1]["clean"] is False
    rc, out, _ = cli("scores", "a", "--json", "--clean")  # the non-overlapping items, as the table's --clean
    clean = {r["metric"]: (r["value"], r["stderr"], r["n"], r["clean"]) for r in json.loads(out)}
    assert rc == 0 and clean["accuracy"] == (0.5, math.sqrt(0.5 * 0.5 / 2), 3, True)
    assert cli("scores", "zz", "--json") == (  # no model: said as unknown, not "evaluate first" (review s22)
        2, "", "error: unknown model zz: neither registered nor evaluated under that name (`python -m backend models "
               "list` lists the registered models); models with scores: a, b.\n")


# ---------------------------------------------------------------- 3. a default of 0 in --help

def _help(*path: str) -> str:
    p = build_parser()
    for name in path:
        p = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return _flat(p.format_help())


def test_help_shows_a_default_of_zero():
    """`0 in (None, False)` is true: synth-math --seed, slurm --gpus-per-node and chat --temperature had no
    "(default: 0)" where every other option shows its default."""
    assert "seeds the generator and the sampling (default: 0)" in _help("synth-math")
    assert "(0: greedy, 0 to 2) (default: 0.0)" in _help("synth-math")
    assert "0: greedy (the same reply each time) (default: 0.0)" in _help("chat")
    assert "(default: 0)" in _help("slurm")
    assert "--queue hand the job to the worker instead of running it here --after" in _help("synth-math")  # no
    # "(default: False)" on a flag, nor "(default: None)"
    assert "(default: None)" not in _help("train") and "(default: False)" not in _help("train")
    # the spec's None of max_rows is every row (the Train page's "all"), not a value to type
    assert "use at most this many rows of each source (default: all)" in _help("train")


# ---------------------------------------------------------------- 4. a mistyped option, said by its command

def test_an_unknown_option_is_refused_by_the_command_it_was_given_to():
    """parse_args printed the top level's usage (the list of commands) and "python -m backend: error:" for an
    option of `models list` or `jobs wait`: nothing said which options that command takes."""
    rc, out, err = cli("models", "list", "--json", "--limit", "1")
    assert (rc, out) == (2, "")
    assert err.startswith("usage: python -m backend models [-h]")
    assert err.endswith("python -m backend models: error: unrecognized arguments: --limit 1\n")
    rc, out, err = cli("jobs", "wait", "1", "--timout", "5")
    assert (rc, out) == (2, "")
    assert err.splitlines()[0].startswith("usage: python -m backend jobs wait [-h] [--timeout TIMEOUT]")
    assert err.splitlines()[-1] == "python -m backend jobs wait: error: unrecognized arguments: --timout 5"
    rc, _, err = cli("jobs", "list", "--json", "--limit", "0")  # known options still parse
    assert (rc, err) == (0, "")


# ---------------------------------------------------------------- 5. models: each action's own options

def test_models_refuses_an_option_its_action_does_not_read(tiny_llama):
    """`models` has one parser for list, import, delete and push: `models list --name tiny --json` printed every
    model (no filter exists), `models import X --queue` downloaded in the foreground, and a stray TARGET of `list`
    was ignored, each with exit code 0."""
    from backend import registry

    registry.import_folder(tiny_llama, "tiny")
    registry.import_folder(tiny_llama, "other")
    assert cli("models", "list", "--name", "tiny", "--json") == (
        2, "", "error: models list takes no --name (it reads --json).\n")
    assert cli("models", "list", "tiny") == (2, "", "error: models list takes no TARGET 'tiny' (it reads --json).\n")
    assert cli("models", "delete", "other", "--json") == (
        2, "", "error: models delete takes no --json (it reads --force and a NAME).\n")
    assert cli("models", "push", "tiny", "--repo", "a/b", "--name", "x")[::2] == (
        2, "error: models push takes no --name (it reads --repo, --private, --license-name, --license-link, --queue, "
           "--after and a NAME).\n")
    assert {m.name for m in registry.list_models()} == {"tiny", "other"}  # nothing was deleted
    rc, out, _ = cli("models", "list", "--json")
    assert rc == 0 and [m["name"] for m in json.loads(out)] == ["tiny", "other"]


def test_models_import_queue_hands_the_import_to_the_worker(tiny_llama):
    """The pages queue an import as a job (ImportSpec); `models import --queue` ran it here instead."""
    from backend import registry
    from storage import db

    rc, out, err = cli("models", "import", str(tiny_llama), "--name", "tq", "--queue")
    assert (rc, err) == (0, "") and out.startswith("queued job ") and "(import -> tq)" in out
    with db.session() as s:
        job = s.get(Job, int(out.split()[2]))
    assert (job.kind, job.status, job.spec["target"], job.spec["name"]) == ("import", "queued", str(tiny_llama), "tq")
    assert registry.list_models() == []  # not imported here
    rc, out, err = cli("models", "import", str(tiny_llama), "--name", "tq2")  # without it: here, as before
    assert rc == 0 and out.startswith("registered tq2: ")
