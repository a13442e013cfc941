"""The commands that make and manage models: upscale, merge, and models list | import | delete | push.

    python -m backend upscale --base SmolLM2-135M-Instruct --m 8 --out workspace/models/smol-dus-m8
    python -m backend merge --method slerp --models A B --t 0.5 --out PATH
    python -m backend models list [--json] | import builtin|FOLDER|FILE.gguf|owner/name [--queue] | delete NAME
"""

from __future__ import annotations

import argparse

from backend.cli.common import JSON_NULL, _job_options, _local_model, _print_json, _progress, _run_or_queue


def _slice(text: str):
    """--slice SOURCE:START:END as a SliceRange. Built inside the try: argparse turns a ValueError (pydantic's
    ValidationError is one) into its bare "invalid _slice value", so the range's own check is said here."""
    from pydantic import ValidationError

    from backend.specs import SliceRange, explain

    try:
        src, start, end = (int(x) for x in text.split(":"))
        return SliceRange(source=src, start=start, end=end)
    except ValidationError as exc:  # 0:-1:3, 2:0:3
        raise argparse.ArgumentTypeError(f"--slice {text!r}: {'; '.join(explain(exc).splitlines())} (SOURCE is 0, "
                                         "the base model, or 1, the --second model; START and END are layer numbers, "
                                         "END exclusive)") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slice {text!r}: use SOURCE:START:END, e.g. 0:0:24 (END exclusive)")


def cmd_upscale(a) -> None:
    from backend.specs import UpscaleSpec

    spec = UpscaleSpec(base=a.base, method=a.method, m=a.m, slices=a.slice or [], second=a.second,
                       groups=a.groups, name=a.name, out=a.out, shard_size=a.shard_size)
    _run_or_queue(spec, a)


def cmd_merge(a) -> None:
    from backend.specs import MergeSpec

    given = {"t": a.t[0] if a.t and len(a.t) == 1 else a.t, "density": a.density, "seed": a.seed, "lambda": a.lam}
    # only the options given: MergeSpec refuses one its method does not use (`--method slerp --weights 0.2 0.8`
    # merged a plain SLERP), and a default passed for every method looked given
    spec = MergeSpec(models=a.models, method=a.method, weights=a.weights, normalize=a.normalize,
                     rescale=a.rescale, base=a.base, dtype=a.dtype, tokenizer_source=a.tokenizer_source,
                     chat_template=_template_arg(a.chat_template), name=a.name, out=a.out, shard_size=a.shard_size,
                     **{k: v for k, v in given.items() if v is not None})
    _run_or_queue(spec, a)


def _template_arg(value: str | None) -> str | None:
    """--chat-template: 'auto', a Jinja template, or @FILE holding one."""
    from pathlib import Path

    if value and value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            raise ValueError(f"--chat-template {value}: no such file.")
        return path.read_text()
    return value


# the options of `models` (its parser's, in their order) and the actions that read each. One parser serves the four
# actions: an option another action reads was dropped without a word (`models list --name tiny --json` gave every
# model; `models import X --queue` ran here), so _refuse_unread refuses it, saying what the action reads (a parser
# per action would answer "unrecognized arguments: --name tiny" under a usage line instead)
MODELS_OPTIONS = {"name": ("import",), "allow_pickle": ("import",), "force": ("delete",), "json": ("list",),
                  "repo": ("push",), "private": ("push",), "license_name": ("push",), "license_link": ("push",),
                  "queue": ("import", "push"), "after": ("import", "push")}


def cmd_models(a) -> None:
    _refuse_unread(a)
    {"list": _models_list, "import": _models_import, "delete": _models_delete, "push": _models_push}[a.action](a)


def _refuse_unread(a) -> None:
    """A ValueError naming every option (and a TARGET of `list`) given that `a.action` does not read."""
    reads = [k for k, actions in MODELS_OPTIONS.items() if a.action in actions]
    unused = [f"--{k.replace('_', '-')}" for k in MODELS_OPTIONS
              if getattr(a, k) is not None and getattr(a, k) is not False and k not in reads]  # --after 0 is given
    if a.action == "list" and a.target:
        unused.insert(0, f"TARGET {a.target!r}")
    if unused:
        what = {"list": "", "import": " and a TARGET"}.get(a.action, " and a NAME")
        raise ValueError(f"models {a.action} takes no {', '.join(unused)} (it reads "
                         f"{', '.join('--' + k.replace('_', '-') for k in reads)}{what}).")


def _models_list(a) -> None:
    from backend import registry

    rows = registry.list_models()
    names = {r.name for r in rows}
    facts = [registry.arch_and_vocab(r) for r in rows]  # config.json each: which models can be merged
    if a.json:
        return _print_json([{"name": r.name, "kind": r.kind, "architecture": arch, "layers": r.num_layers,
                             "vocab_size": vocab, "parameters": r.num_parameters, "dtype": r.dtype, "path": r.path,
                             "parents": r.parents or [],
                             "parents_registered": [registry.parent_present(p, names) for p in r.parents or []],
                             "source": r.source, "created": r.created} for r, (arch, vocab) in zip(rows, facts)])
    # as wide as the longest name (F8_E4M3: dtype): a name is what the other commands take, so it is shown whole, not
    # cut
    width = max([len("name"), *(len(r.name) for r in rows)])
    dtype = max([len("dtype"), *(len(r.dtype) for r in rows)])
    archw = max([len("arch"), *(len(arch or "?") for arch, _ in facts)])
    print(f"{'name':{width}} {'kind':9} {'arch':{archw}} {'layers':>6} {'vocab':>7} {'params':>14} {'dtype':{dtype}}  "
          "parents")
    for r, (arch, vocab) in zip(rows, facts):
        print(f"{r.name:{width}} {r.kind:9} {arch or '?':{archw}} {r.num_layers:6d} "
              f"{vocab if vocab is not None else '?':>7} {r.num_parameters:14,d} {r.dtype:{dtype}}  "
              f"{', '.join(registry.parents_shown(r, names)) or '-'}")


def _models_import(a) -> None:
    from backend import registry, runner
    from backend.specs import ImportSpec

    if not a.target:
        raise ValueError("models import needs a TARGET: builtin, a folder, a .gguf file or a Hub id.")
    spec = ImportSpec(target=_local_model(a.target), name=a.name, allow_pickle=a.allow_pickle)
    if a.queue or a.after:  # a job, as the pages' imports are (ImportSpec): a Hub download of many GiB
        return _run_or_queue(spec, a)
    # a name a queued job will register, refused as --queue refuses it (registered here first, that job failed)
    if name := runner.output_name(spec, derive_import=True):
        runner.check_not_making(name)
    made = registry.run_import(spec, progress=_progress)  # the job's own function: "already" as its message says
    print(f"{'already registered' if made['already'] else 'registered'} {made['model']}: {made['layers']} layers, "
          f"{made['parameters']:,} parameters at {made['path']}")


def _models_delete(a) -> None:
    from backend import registry

    if not a.target:
        raise ValueError("models delete needs a NAME.")
    registry.delete(a.target, force=a.force)
    print(f"deleted {a.target}")


def _models_push(a) -> None:
    from backend.specs import PushSpec

    if not a.target or not a.repo:
        raise ValueError("models push needs a NAME and --repo OWNER/NAME.")
    # as every job command: here, or with --queue / --after the worker's (a model of many GiB)
    _run_or_queue(PushSpec(model=a.target, repo=a.repo, private=a.private, license_name=a.license_name,
                           license_link=a.license_link), a)


# each command's line in `python -m backend --help`: read without building the command's parser (backend/__main__.py)
HELP = {
    "upscale": "build a deeper model from a registered model or folder",
    "merge": "merge candidates (mergekit 0.1.5's average/linear, SLERP, task arithmetic, TIES, DARE)",
    "models": "list, import, delete or push registered models",
}


def _output_options(p, name_help: str) -> None:
    """The options of a command that writes a model (upscale, merge): where and under what name, then --queue and
    --after."""
    p.add_argument("--name", help=name_help)
    p.add_argument("--out", help="folder to write the model to (default $DUS_WORKSPACE/models/NAME; a relative path "
                                 "is from the current folder)")
    p.add_argument("--shard-size", default="2GB", help="largest safetensors shard")
    _job_options(p, json_holds="the registered model's name (model) and folder (path), "
                 + ("its layers and parameters and the seconds it took" if p.prog.endswith("upscale") else
                    "the seconds it took, how SLERP interpolated the tensors (slerp) and any warning"))


def add_upscale(sub) -> None:
    """The `upscale` command's parser."""
    u = sub.add_parser("upscale", help=HELP["upscale"])
    u.add_argument("--base", required=True, help="registered name, 'builtin', or a model folder")
    u.add_argument("--method", default="dus", choices=["dus", "slices", "llama-pro"],
                   help="dus: SOLAR's depth up-scaling; slices: stack layer ranges; llama-pro: block expansion")
    u.add_argument("--m", type=int, help="dus: layers removed from each copy (1 <= m < n/2)")
    u.add_argument("--slice", type=_slice, action="append", help="slices: SOURCE:START:END, half-open, repeatable")
    u.add_argument("--second", help="slices: second source model (SOURCE 1)")
    u.add_argument("--groups", type=int, help="llama-pro: identity blocks to insert")
    _output_options(u, "registered name (default: derived)")
    u.set_defaults(fn=cmd_upscale)


def add_merge(sub) -> None:
    """The `merge` command's parser."""
    from backend.specs import MergeSpec  # its fields' words are the options' help

    mg = sub.add_parser("merge", help=HELP["merge"])
    mg.add_argument("--models", nargs="+", required=True, help="the candidates: registered names or model folders")
    mg.add_argument("--method", default="average", help="average (= linear), slerp, task_arithmetic, ties, "
                    "dare_linear (alias dare), dare_ties")
    mg.add_argument("--weights", nargs="+", type=float, help="one per model (default 1 each)")
    mg.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="divide by the sum of the weights (default: mergekit's for the method: on for average and "
                         "ties, off for task_arithmetic and dare)")
    mg.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=None,
                    help="ties / dare: multiply what is kept by |delta|_1 / |kept|_1 (default: on for dare)")
    # None: not given (MergeSpec refuses an option its method does not use, and its own default applies)
    mg.add_argument("--lambda", dest="lam", type=float, help="task_arithmetic / ties / dare: scales the merged task "
                    "vector (default: 1)")
    mg.add_argument("--t", nargs="+", type=float, help="slerp: t, or a schedule along the depth (default: 0.5)")
    mg.add_argument("--base", help="task_arithmetic / ties / dare: the common base")
    mg.add_argument("--density", type=float, help="ties / dare: share of each task vector kept (default: 1, "
                    "mergekit's: every entry kept)")
    mg.add_argument("--seed", type=int, help="dare: seed of the drop mask (default: 0)")
    mg.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help=MergeSpec.model_fields["dtype"].description)
    mg.add_argument("--tokenizer-source", help=MergeSpec.model_fields["tokenizer_source"].description)
    mg.add_argument("--chat-template", help="'auto' (the template most of the models share, mergekit's auto), a "
                    "Jinja template, or @FILE holding one (default: the tokenizer source's own)")
    _output_options(mg, "registered name (default: derived from the candidates and the method)")
    mg.set_defaults(fn=cmd_merge)


def add_models(sub) -> None:
    """The `models` command's parser."""
    m = sub.add_parser("models", help=HELP["models"])
    m.add_argument("action", choices=["list", "import", "delete", "push"], help="what to do")
    m.add_argument("target", nargs="?",
                   help="import: builtin | FOLDER | FILE.gguf | owner/name; delete, push: NAME")
    m.add_argument("--name", help="import: the name to register (default: derived from the target)")
    m.add_argument("--allow-pickle", action="store_true", help="convert .bin checkpoints (weights_only=True)")
    m.add_argument("--force", action="store_true",
                   help="delete: also when other models were made from it or active jobs read it")
    m.add_argument("--json", action="store_true", help=f"list: a JSON array, for scripts ({JSON_NULL})")
    m.add_argument("--repo", metavar="OWNER/NAME",
                   help="push: the Hub model repo (made if missing) that gets the model's weights, config, tokenizer "
                        "and a model card with its lineage and scores, in one commit (needs HF_TOKEN with write "
                        "access; exit code 1 when the Hub refused the push or could not be reached)")
    m.add_argument("--private", action="store_true", help="push: make the repo private if it is made")
    m.add_argument("--license-name", metavar="ID", help="push: for a licence `other` whose base models name none, "
                                                        "the card's license_name (e.g. my-license-1.0)")
    m.add_argument("--license-link", metavar="FILE|URL", help="push: for a licence `other`, the card's license_link "
                                                              "(a file uploaded with the model, or a URL)")
    m.add_argument("--queue", action="store_true", help="import, push: hand the download or upload to the worker "
                                                        "instead of running it here")
    m.add_argument("--after", type=int, help="import, push: queue it to run after this job succeeds (push: the "
                                             "training that makes the model)")
    m.set_defaults(fn=cmd_models)
