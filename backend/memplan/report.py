"""A memory plan against this machine (backend/memplan): the memory there is, whether a plan fits the GPUs its
processes run on, every strategy side by side, and the words: the verdict sentence, the precision note and the table
the CLI prints and the Train page shows."""

from __future__ import annotations

from dataclasses import dataclass

from backend.memplan.components import GiB, MemoryPlan, Setup, estimate
from backend.memplan.shape import ModelShape, load_shape
from backend.memplan.strategies import setup_for_spec, strategy_setups
from backend.names import human_bytes


def available_memory(device: str) -> tuple[list[int], str]:
    """(bytes per device, what they are): each visible GPU's free memory, or this machine's total RAM."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
            return free, torch.cuda.get_device_name(0)
        return [], "no GPU"
    import psutil

    return [psutil.virtual_memory().total], "RAM"


def _host_ram() -> int:
    import psutil

    return psutil.virtual_memory().total


def judged_gpus(setup: Setup, avail: list[int]) -> list[int]:
    """The free memory of the GPUs the job's processes on this machine use: GPUs 0 … local_processes − 1 (accelerate
    gives local rank i cuda:i; one process runs on GPU 0), whatever the sharding: DDP too needs one GPU a process.
    Fewer than that: the GPUs there are (fits says no)."""
    return avail[:setup.local_processes]


def fits(plan: MemoryPlan, avail: list[int]) -> bool:
    if plan.supported:
        return False
    local = plan.setup.local_processes
    if plan.setup.device == "cpu":  # every process of a CPU job on this machine takes its share of the one RAM
        return bool(avail) and plan.needed_bytes * local <= avail[0]
    if len(avail) < local:
        return False
    if plan.cpu_bytes and plan.cpu_bytes > _host_ram():
        return False
    return plan.needed_bytes <= min(judged_gpus(plan.setup, avail))


def compare_strategies(shape: ModelShape, base: Setup, avail: list[int] | None = None,
                       ) -> list[tuple[MemoryPlan, bool]]:
    """Each strategy's plan and whether it fits `avail` (default: this machine's GPUs or RAM)."""
    avail = available_memory(base.device)[0] if avail is None else avail
    out = []
    for name, st in strategy_setups(base, len(avail)).items():
        plan = estimate(shape, st, name)
        if base.device != "cuda" and name in ("adamw_8bit", "fsdp", "zero3_offload"):
            plan.supported = "needs CUDA GPUs"
        elif name == "fsdp" and len(avail) < st.local_processes:
            plan.supported = f"needs {st.local_processes} GPUs"
        out.append((plan, fits(plan, avail)))
    return out


def precision_note(setup: Setup) -> str:
    """How the bytes a parameter come about, for a reader checking the table against the ZeRO paper's 16."""
    if setup.bytes_per_value == 2:
        return ("Full training with AdamW, without sharding, is bfloat16 throughout (weights, gradients and AdamW's "
                "two states: 8 bytes a parameter, no float32 master copy); FSDP and ZeRO keep float32 master weights "
                "and states (2 + 2 + 12 = 16 bytes a parameter, divided among the GPUs; DeepSpeed adds a float32 "
                "copy of each GPU's gradient share at the step). LoRA adapters train in float32 (16 bytes a trainable "
                "value), 8-bit AdamW keeps about 2 bytes of state a value (32-bit for embeddings and small tensors).")
    return ("On a CPU the job trains in float32 throughout (weights, gradients and AdamW's two states: 16 bytes a "
            "parameter; 8-bit AdamW: about 2 bytes of state a value).")


def needs(plan: MemoryPlan) -> str:
    """What the plan needs, each part with its unit (names.human_bytes: small parts in MiB, not "0.0") and the
    overhead said for what it is: "overhead 1.0", bare beside the total's "GiB", read as a factor."""
    where = "on each GPU" if plan.setup.device == "cuda" else "of RAM"
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in plan.components.items() if v)
    what = "the CUDA context and allocator slack" if plan.setup.device == "cuda" else "the process itself"
    extra = f"; {human_bytes(plan.cpu_bytes)} of CPU RAM for the offloaded states" if plan.cpu_bytes else ""
    return (f"needs {plan.needed_bytes / GiB:.1f} GiB {where} ({parts}, and {human_bytes(plan.overhead_bytes)} of "
            f"overhead for {what}){extra}")


def verdict(plan: MemoryPlan, avail: list[int], what: str, others: list[tuple[MemoryPlan, bool]]) -> str:
    """One sentence: what is needed, what there is, fits or which strategy would."""
    local = plan.setup.local_processes
    if plan.setup.device == "cuda":  # the GPUs fits() judged, by index
        judged = judged_gpus(plan.setup, avail)
        free = ", ".join(f"{a / GiB:.0f}" for a in judged)
        if not avail:
            have = "no GPU is visible"
        elif len(avail) < local:
            have = (f"it runs {local} processes on this machine, one GPU each, and this machine has {len(avail)} × "
                    f"{what} ({', '.join(f'{a / GiB:.0f}' for a in avail)} GiB free)")
        elif local == 1:
            have = f"GPU 0 ({what}), where it runs, has {free} GiB free"
        else:
            have = f"GPUs 0–{local - 1} ({what}), one a process, have {free} GiB free"
    else:
        have = f"this machine has {avail[0] / GiB:.0f} GiB of RAM" if avail else "no memory information"
    procs = f", for each of {local} processes" if plan.setup.device == "cpu" and local > 1 else ""
    text = f"{plan.label} {needs(plan)}{procs}; {have}: "
    if fits(plan, avail):
        return text + "fits."
    would = [f"{p.label} ({p.needed_bytes / GiB:.1f} GiB)" for p, ok in others if ok and p.strategy != plan.strategy]
    hint = (" precompute_ref_log_probs: true (--precompute-ref) drops the reference copy."
            if plan.components.get("reference") else "")
    return text + ("does not fit: " + " or ".join(would) + " would." if would else
                   "does not fit, and no strategy here would: shorten max_length, lower batch_size, or use more "
                   "GPUs.") + hint


@dataclass
class SpecReport:
    """A spec's own plan against the memory it would run on, beside every other strategy: what the Train page
    shows, `train --plan` prints and the check before launch decides on."""
    shape: ModelShape
    setup: Setup
    plan: MemoryPlan
    ok: bool
    avail: list[int]
    what: str
    others: list[tuple[MemoryPlan, bool]]

    def rows(self) -> list[dict]:
        rows = plan_rows([(self.plan, self.ok)]) + plan_rows(self.others)
        rows[0]["strategy"] += " (this spec)"
        return rows

    def sentence(self) -> str:
        return verdict(self.plan, self.avail, self.what, self.others)


def report_for_spec(spec, model_path, device: str | None = None, avail: list[int] | None = None,
                    what: str | None = None) -> SpecReport:
    """The spec as the job runs it on `device` (None: this machine), against `avail` bytes per device (None: this
    machine's free GPU memory, or its RAM)."""
    base = setup_for_spec(spec, device)
    shape = load_shape(model_path)
    if avail is None:
        avail, what = available_memory(base.device)
    plan = estimate(shape, base)
    return SpecReport(shape, base, plan, fits(plan, avail), avail,
                      what or ("GPU" if base.device == "cuda" else "RAM"), compare_strategies(shape, base, avail))


def check_spec(spec, model_path, device: str | None = None, avail: list[int] | None = None) -> str | None:
    """None when the job fits this machine; else the sentence saying what it needs and what would fit."""
    report = report_for_spec(spec, model_path, device, avail)
    return None if report.ok else report.sentence()


COLUMNS = ("weights", "gradients", "optimizer", "activations", "reference")


def plan_rows(plans: list[tuple[MemoryPlan, bool]]) -> list[dict]:
    """The table the CLI prints and the page shows: GiB per component, per strategy."""
    rows = []
    for p, ok in plans:
        row = {"strategy": p.label, **{c: round(p.components[c] / GiB, 2) for c in COLUMNS},
               "overhead": round(p.overhead_bytes / GiB, 2), "total": round(p.needed_bytes / GiB, 2),
               "cpu_ram": round(p.cpu_bytes / GiB, 2), "fits": "n/a: " + p.supported if p.supported else
               "yes" if ok else f"no: {_host_ram() / GiB:.0f} GiB host RAM" if p.cpu_bytes > _host_ram() else "no"}
        rows.append(row)
    return rows
