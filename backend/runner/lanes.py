"""The two lanes of a machine's worker: device jobs (trainings, evaluations, synthetic math) share $DUS_JOB_SLOTS;
light jobs, short plumbing that uses no accelerator, have $DUS_LIGHT_SLOTS of their own. An import queued behind
two trainings waited for the first to end (8 minutes for a 25 s copy), and a merge the same way.

Light, by what each kind's work does (child.work_function): an import (a copy or a format conversion of files),
an upscale (a streamed copy of layers: upscale/), a merge (tensors streamed on the CPU: merge/) and a push (an
upload to the Hub). On the device: cpt, sft and dpo (training), eval (a model's forward passes) and synth-math
(its rephraser may be a model on the device; its kind alone is what the claim's SQL can read)."""

from __future__ import annotations

import os

LIGHT_KINDS = ("import", "upscale", "merge", "push")


def light_slots(value: int | str | None = None) -> int:
    """The light jobs this machine runs at a time beside its device jobs: `value` (the worker's --light-slots),
    else $DUS_LIGHT_SLOTS, else 1. 0: light jobs share the device slots, as every job did before."""
    raw = os.environ.get("DUS_LIGHT_SLOTS", "1") if value is None else value
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        where = "--light-slots" if value is not None else "DUS_LIGHT_SLOTS"
        raise ValueError(f"{where}={raw!r}: give how many light jobs (imports, upscales, merges, pushes) run at a "
                         "time beside the device jobs, 0 to have them share the device slots (--slots)")
    return n


def is_light(kind: str, light: int) -> bool:
    """Whether a job of `kind` runs in the light lane, with `light` light slots (0: one lane for every job)."""
    return light > 0 and kind in LIGHT_KINDS
