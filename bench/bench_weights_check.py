"""What the check that a folder's weights fit its config.json (backend/modelinfo.weights_problem) costs the commands
that read a model: `models import` and `upscale` of a model, each in a fresh process and a fresh workspace, with the
check as it is and with it stubbed out (the floor: the same command without it), side by side.

    .venv/bin/python bench/bench_weights_check.py [--model FOLDER] [--repeats 3]

Without --model, a tiny random Llama (6 layers) is made. The check builds the config's class on the meta device
(no weights read); its cost is mostly the first import of torch and transformers' modeling code in a process. An
import pays it once (a new model is checked); an up-scale finds the marker its base's import left (a fit does not
depend on the depth). Prints a table: command, seconds without the check, with it, and the ratio (medians).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUB = ("import runpy, sys; import backend.modelinfo as m; m.weights_problem = lambda config, names: None; "
        "sys.argv = ['backend', *sys.argv[1:]]; runpy.run_module('backend', run_name='__main__')")


def timed(ws: Path, args: list[str], checked: bool) -> float:
    env = dict(os.environ, DUS_WORKSPACE=str(ws))
    cmd = [sys.executable, "-m", "backend", *args] if checked else [sys.executable, "-c", STUB, *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model folder (default: a tiny random Llama)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    if args.model:
        model = Path(args.model).resolve()
    else:
        from tests.conftest import make_llama, make_tokenizer

        model = make_llama(make_tokenizer(root / "tokenizer"), root / "tiny")
    times: dict[tuple[str, bool], list[float]] = {}
    for i in range(args.repeats):
        for checked in (False, True):  # alternated: a drift of the machine's load falls on both
            ws = root / f"ws-{i}-{int(checked)}"
            times.setdefault(("models import", checked), []).append(
                timed(ws, ["models", "import", str(model), "--name", "base"], checked))
            times.setdefault(("upscale --m 2", checked), []).append(
                timed(ws, ["upscale", "--base", "base", "--m", "2", "--name", "up"], checked))
    print(f"model: {model}; {args.repeats} runs each, medians, fresh process and workspace per import")
    print(f"{'command':<16}{'no check (s)':>14}{'check (s)':>12}{'ratio':>8}")
    for command in ("models import", "upscale --m 2"):
        floor, cost = (statistics.median(times[(command, c)]) for c in (False, True))
        print(f"{command:<16}{floor:>14.2f}{cost:>12.2f}{cost / floor:>8.2f}")


if __name__ == "__main__":
    main()
