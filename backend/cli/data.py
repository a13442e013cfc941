"""Data from the command line: synth-math, and datasets list | export | mix | preview | paper-mixes | delete | pairs |
reject | push.

    python -m backend synth-math --seeds N --rephraser rules|model:NAME|openai:URL --out PATH [--level 1 …]
    python -m backend datasets mix NAME --for sft|dpo SOURCE[@WEIGHT] …
    python -m backend datasets pairs PAIRS_NAME [--status failed] | reject PAIRS_NAME PAIR_ID [--undo]
"""

from __future__ import annotations

import sys

from backend.cli.common import (JSON_NULL, WorkFailed, _job_options, _local_source, _print_json, _run_or_queue,
                                _source, print_result)
from backend.words import plural


# the spec's fields by the options that set them, where the two names differ: "num_seeds: Input should be greater
# than or equal to 1" named no option of the command
SYNTH_FLAGS = {"num_seeds": "--seeds", "seeds": "--seed-file", "levels": "--level", "categories": "--category",
               "batch_size": "--batch-size", "api_model": "--api-model", "api_key_env": "--api-key-env"}


def cmd_synth(a) -> None:
    from pydantic import ValidationError

    from backend.specs import SynthMathSpec, explain

    try:
        spec = SynthMathSpec(seeds=a.seed_file or "generator", num_seeds=a.seeds, rephraser=a.rephraser,
                             api_model=a.api_model, levels=a.level or [], categories=a.category or [],
                             benchmark=a.benchmark, name=a.name, out=a.out, seed=a.seed, batch_size=a.batch_size,
                             include_flagged=a.include_flagged, temperature=a.temperature, api_key_env=a.api_key_env)
    except ValidationError as exc:
        raise ValueError("\n".join(_as_flag(line) for line in explain(exc).splitlines())) from None
    _run_or_queue(spec, a)


def _as_flag(line: str) -> str:
    """A spec check's line ("batch_size: Input should be …") by the command line's option ("--batch-size: …")."""
    field, sep, rest = line.partition(": ")
    if not sep or " " in field:
        return line
    return f"{SYNTH_FLAGS.get(field, '--' + field.replace('_', '-'))}: {rest}"


def print_preview(a) -> None:
    """`datasets preview`: what the Train page shows of a source before launch (data.preview: its layout for the
    job kind, columns, row count, the first rows as trl will read them), so a source is checked from a shell too."""
    import json

    from backend import data

    pv = data.preview(_local_source(a.source), a.purpose, n=a.rows, sample_by=a.sample_by)
    if a.json:
        return _print_json(pv)
    per = data.rows_said(a.sample_by, pv, choice=f"--sample-by {a.sample_by}")
    print(f"{a.source}: {pv['layout']} layout for {a.purpose}, {plural(pv['rows'], 'row')}{per}; columns "
          f"{', '.join(pv['columns'])}")
    for i, row in enumerate(pv["examples"], 1):
        print(f"--- row {i} as {a.purpose} reads it\n{json.dumps(row, ensure_ascii=False, indent=1)}")
    if said := data.cut_said(pv):
        print(said)


def cmd_datasets(a) -> None:
    from backend.synth import pipeline

    if a.action == "list":
        # a mix stores no row count (its sources are read when it is used): its 0 read as an empty data set
        if a.json:
            return _print_json([{"name": d.name, "kind": d.kind, "rows": None if d.kind == "mix" else d.rows,
                                 "path": d.path, "provenance": d.provenance, "created": d.created}
                                for d in pipeline.list_datasets()])
        print(f"{'name':36} {'kind':12} {'rows':>7}  path / sources")
        for d in pipeline.list_datasets():
            where = d.path or ", ".join(f"{x['source']}×{x['weight']:g}" + (f" by {x['sample_by']}" if
                                                                            x.get("sample_by") else "")
                                        for x in d.provenance.get("sources", []))
            kind = f"mix ({d.provenance['for']})" if d.kind == "mix" and d.provenance.get("for") else d.kind
            print(f"{d.name:36} {kind:12} {'-' if d.kind == 'mix' else d.rows:>7}  {where}")
    elif a.action == "export":  # as a foreground job's result is printed (a None or a list said as every command does)
        print_result(pipeline.export(a.name, include_flagged=a.include_flagged))
    elif a.action == "mix":
        purpose = a.purpose or "sft"
        rows = [a.sample_by] if a.sample_by else []  # kept with the mix's .txt members (data.expand_rows)
        sources = [(_local_source(d.source), d.weight, *rows) for d in a.sources]
        rec = pipeline.save_mix(a.name, sources, purpose)  # every member's rows checked first (data.check_mix)
        took = "" if a.purpose else " (the default: --for dpo or --for cpt saves preference or pretraining data)"
        print(f"saved mix {rec.name} for {purpose}{took}: use --data mix:{rec.name}")
    elif a.action == "preview":
        print_preview(a)
    elif a.action == "paper-mixes":
        saved = pipeline.save_paper_mixes(a.name)
        print(f"saved {', '.join(r.name for r in saved)} (Synth. Math from {a.name}): use --data mix:NAME")
    elif a.action == "delete":
        print(pipeline.delete_dataset(a.name, force=a.force))
    elif a.action == "pairs":
        print_pairs(a)
    elif a.action == "reject":
        print(reject_pair(a.name, a.pair_id, a.undo))
    elif a.action == "push":
        try:
            print(pipeline.push_to_hub(a.name, a.repo))
        except pipeline.PushFailed as exc:  # the push was tried and the Hub refused it or did not answer: 1; a
            # refusal before any upload (no token, no export, an export older than a hand rejection) stays 2
            raise WorkFailed(str(exc)) from exc


def _pairs_set(name: str):
    """The synthetic pairs data set `name`, or a refusal naming where the names are."""
    from backend.synth import pipeline

    rec = pipeline.get_dataset(name)
    if rec is None or rec.kind != "synth-pairs":
        raise pipeline.DatasetError(f"No synthetic pairs named {name!r}: `python -m backend datasets list` shows "
                                    "them (kind synth-pairs; their names end in -pairs).")
    return rec


def print_pairs(a) -> None:
    """`datasets pairs NAME`: the Synthetic math page's inspector as lines (pipeline.query_pairs, its filters), with
    each pair's id for `datasets reject`."""
    from backend.synth import pipeline

    if a.limit < 1 or a.page < 1:
        raise ValueError(f"--limit {a.limit} --page {a.page}: give 1 or more for both.")
    rec = _pairs_set(a.name)
    total, rows = pipeline.query_pairs(rec.id, categories=a.category, levels=a.level, states=a.status,
                                       search=a.search or "", page=a.page - 1, page_size=a.limit)
    if a.json:
        return _print_json([{"id": p.id, "status": p.status, "rejected_by_hand": p.rejected_by_hand,
                             "reason": p.reason, "category": p.category, "level": p.level, "question": p.question,
                             "solution": p.solution, "answer": p.answer, "new_question": p.new_question,
                             "new_solution": p.new_solution, "new_answer": p.new_answer} for p in rows])
    for p in rows:
        state = p.status + (", rejected by hand" if p.rejected_by_hand else "")
        reason = f" ({p.reason})" if p.reason and p.reason != pipeline.HAND_REJECTED else ""
        question = " ".join((p.new_question or p.question).split())
        print(f"{p.id:7d}  {state:27} {p.category} L{p.level}  answer {p.answer}{reason}  "
              f"{question if len(question) <= 70 else question[:69] + '…'}")
    pages = max(1, -(-total // a.limit))
    print(f"{len(rows)} of {total} matching pairs (page {a.page} of {pages}; --page N for another); the whole pair: "
          "--json", file=sys.stderr)


def reject_pair(name: str, pair_id: int, undo: bool) -> str:
    """`datasets reject NAME ID [--undo]`: the inspector's Reject this pair / Undo rejection (pipeline.reject_by_hand),
    for a pair of that data set only (an id of another run's pairs is refused, not rejected there)."""
    from backend.synth import pipeline
    from storage import db
    from storage.models import SynthPair

    rec = _pairs_set(name)
    with db.session() as s:
        pair = s.get(SynthPair, pair_id)
    if pair is None or pair.dataset_id != rec.id:
        raise pipeline.DatasetError(f"No pair {pair_id} in {name}: `python -m backend datasets pairs {name}` lists "
                                    "its pairs with their ids.")
    if pair.rejected_by_hand != undo:
        return f"pair {pair_id} of {name}: {'not rejected by hand' if undo else 'rejected by hand'} already"
    pipeline.reject_by_hand(pair_id, undo=undo)
    said = f"pair {pair_id} of {name}: {'rejection undone' if undo else 'rejected by hand'}"
    prefix = name.removesuffix("-pairs")
    if pair.status == "failed":
        return said + " (a failed pair is never exported)"
    export = pipeline.get_dataset(f"{prefix}-instruct")
    if export is None:
        return said
    if pair.status == "flagged" and not export.provenance.get("include_flagged"):
        return said + (f" (its export leaves flagged pairs out; `datasets export {name} --include-flagged` takes "
                       "them)")
    return said + (f"; {prefix}-instruct and {prefix}-alignment are as exported before: `python -m backend datasets "
                   f"export {name}` writes them {'with' if undo else 'without'} it (a push is refused until then)")


def _categories() -> list[str]:
    try:
        from backend.synth.seeds import CATEGORIES
    except ImportError:
        return []
    return list(CATEGORIES)


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "synth-math": "SOLAR's Synth. Math-Instruct / Math-Alignment data",
    "datasets": ("list data sets, re-export synthetic pairs, save a weighted mix, delete; list, reject and push "
                 "synthetic pairs"),
}


def add_synth(sub) -> None:
    """The `synth-math` command's parser."""
    from backend.specs import SynthMathSpec  # its defaults are the options'

    sm = sub.add_parser("synth-math", help=HELP["synth-math"])
    sm.add_argument("--seeds", type=int, default=200, help="problems to generate (or take from --seed-file)")
    sm.add_argument("--seed-file", help="MATH- or GSM8K-format .jsonl/.json instead of the generator")
    sm.add_argument("--rephraser", default="rules", help="rules | model:NAME | openai:BASE_URL")
    sm.add_argument("--api-model", help="openai: the model name the server serves")
    # the Synth page sets both (its Temperature slider, its "Key from environment variable" field): a page's run was
    # not one the CLI could make, and only `run SPEC.yaml` reached them
    sm.add_argument("--api-key-env", default=SynthMathSpec.model_fields["api_key_env"].default,
                    help="openai: the environment variable that holds the server's key")
    sm.add_argument("--temperature", type=float, default=SynthMathSpec.model_fields["temperature"].default,
                    help="model: / openai: sampling temperature of the rephrasings (0: greedy, 0 to 2)")
    sm.add_argument("--level", type=int, action="append", choices=[1, 2, 3],
                    help="generator: difficulty, repeatable (default: all)")
    sm.add_argument("--category", action="append", help="generator: a category, repeatable (default: all): "
                    + ", ".join(_categories()))
    sm.add_argument("--benchmark", help="contamination check against this file (e.g. a GSM8K test split)")
    sm.add_argument("--include-flagged", action="store_true", help="also export the pairs the contamination check "
                                                                   "flagged")
    sm.add_argument("--batch-size", type=int, default=8, help="rephrasings per request (model: and openai:)")
    sm.add_argument("--seed", type=int, default=0, help="seeds the generator and the sampling")
    sm.add_argument("--name", default="synth-math", help="prefix of the registered data sets")
    sm.add_argument("--out", help="folder for the files (default $DUS_WORKSPACE/datasets/NAME; a relative path is from the current folder)")
    _job_options(sm, json_holds="the pairs' data set (pairs), the Instruct and Alignment data sets it registered "
                 "(instruct, alignment; null when no pair was verified, exit code 1), their rows, the verified, "
                 "failed and flagged counts and the seconds it took", queued_holds="the data sets it will register "
                 "(datasets; model is null)")
    sm.set_defaults(fn=cmd_synth)


def add_datasets(sub) -> None:
    """The `datasets` command's parser and its actions'."""
    from typing import get_args

    from backend.specs import DataSource

    d = sub.add_parser("datasets", help=HELP["datasets"])
    da = d.add_subparsers(dest="action", required=True)
    da.add_parser("list", help="the registered data sets").add_argument(
        "--json", action="store_true", help=f"a JSON array, for scripts ({JSON_NULL})")
    ex = da.add_parser("export", help="write Synth. Math-Instruct / Math-Alignment from synthetic pairs, register both")
    ex.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    ex.add_argument("--include-flagged", action="store_true", help="also the pairs the contamination check flagged")
    mx = da.add_parser("mix", help="save a weighted mix of data sets, used as --data mix:NAME")
    mx.add_argument("name", help="the mix's name (then --data mix:NAME)")
    # nargs="+" (not "*"): argparse then leaves the sources for after --for, as in `mix NAME --for sft A@0.5 B@0.5`
    mx.add_argument("sources", nargs="+", type=_source, metavar="SOURCE[@WEIGHT]",
                    help="builtin:NAME, dataset:NAME, mix:NAME, a file or a Hub id")
    mx.add_argument("--for", dest="purpose", choices=["sft", "dpo", "cpt"],
                    help="what the mix trains (default sft); the sources must fit its layout")
    mx.add_argument("--sample-by", choices=get_args(DataSource.model_fields["sample_by"].annotation),
                    help="what a row of the sources' .txt files is, kept with the mix (default: as each use of the "
                         "mix says, train --sample-by or the Train page's rows of a .txt)")
    pv = da.add_parser("preview", help="a source as a training job of a kind reads it (the Train page's preview): "
                                       "layout, columns, rows, the first rows converted; refused as the job would be")
    pv.add_argument("source", help="builtin:NAME, dataset:NAME, mix:NAME, a file or a Hub id")
    pv.add_argument("--for", dest="purpose", choices=["cpt", "sft", "dpo"], default="sft",
                    help="the job kind whose layouts it must fit (default sft)")
    pv.add_argument("--sample-by", choices=get_args(DataSource.model_fields["sample_by"].annotation), default="line",
                    help="what a row of a .txt file is (as train --sample-by)")
    pv.add_argument("-n", "--rows", type=int, default=3, help="how many rows to show (default 3)")
    pv.add_argument("--json", action="store_true", help=f"the preview as JSON, for scripts ({JSON_NULL})")
    pm = da.add_parser("paper-mixes", help="save the paper's SFT v1-v4 and DPO v1-v2 mixes (the Synthetic math "
                                           "page's button), Synth. Math from PAIRS_NAME's export")
    pm.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs), exported")
    dd = da.add_parser("delete", help="delete a registered data set and the files only it uses under "
                                      "workspace/datasets (files registered from elsewhere are kept)")
    dd.add_argument("name", help="the data set's name (datasets list)")
    dd.add_argument("--force", action="store_true", help="also when registered models were trained on it")
    dp = da.add_parser("pairs", help="list synthetic pairs with their ids, verdicts and questions (the Synthetic math "
                                     "page's inspector)")
    dp.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    dp.add_argument("--status", nargs="+", choices=["verified", "failed", "flagged", "rejected"],
                    help="only these (rejected: by hand; the others: not rejected by hand)")
    dp.add_argument("--category", nargs="+", help="only these categories")
    dp.add_argument("--level", nargs="+", type=int, help="only these levels")
    dp.add_argument("--search", help="only pairs whose question (seed or rephrased) holds this text")
    dp.add_argument("--limit", type=int, default=50, help="pairs per page")
    dp.add_argument("--page", type=int, default=1, help="which page of --limit pairs")
    dp.add_argument("--json", action="store_true",
                    help=f"a JSON array with every pair whole, for scripts ({JSON_NULL})")
    dr = da.add_parser("reject", help="reject a pair by hand, or undo that (the inspector's buttons); export again "
                                      "for the Instruct and Alignment files to follow")
    dr.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs)")
    dr.add_argument("pair_id", metavar="PAIR_ID", type=int, help="the pair's id (datasets pairs PAIRS_NAME)")
    dr.add_argument("--undo", action="store_true", help="take a pair rejected by hand back")
    dh = da.add_parser("push", help="upload PAIRS_NAME's exported Instruct and Alignment files to a Hugging Face Hub "
                                    "data set repo in one commit (needs HF_TOKEN with write access); exit code 1 "
                                    "when the Hub refused the push or could not be reached")
    dh.add_argument("name", metavar="PAIRS_NAME", help="the pairs' data set (NAME-pairs), exported")
    dh.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub data set repo (made if missing)")
    d.set_defaults(fn=cmd_datasets)
