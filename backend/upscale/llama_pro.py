"""LLaMA Pro block expansion (arXiv 2401.02415): split the n layers into `groups` equal groups and after each
group insert a copy of its last layer whose output projections (attention o_proj, MLP down_proj) are zero.

Each inserted block then adds nothing to the residual stream, so the expanded model computes exactly what the base
did until the new blocks are trained.
"""

from __future__ import annotations

import re

from backend.upscale.plan import Slot

# Output projections write into the residual stream; zeroing them (weights and biases) makes a block the identity.
# fc_out: GPT-J's and CodeGen's MLP output (without it their inserted blocks kept adding their MLP's output and were
# no identities: logits moved by 0.18 on a tiny GPT-J; upscale.check_identity_blocks now refuses any such gap)
# Fused expert weights are parameters without ".weight": Llama 4's feed_forward.experts.down_proj, GPT-OSS's
# mlp.experts.down_proj and down_proj_bias. Left out, Llama 4's inserted blocks zeroed only the shared expert's
# down_proj (which satisfied the per-sub-block check) and kept adding the routed experts' output: logits moved by 0.63.
OUTPUT_PROJECTIONS = re.compile(r"(^|\.)(o_proj|down_proj|out_proj|dense|dense_4h_to_h|c_proj|fc2|fc_out|wo|w2)"
                                r"(\.weight|\.bias|_bias)?$")


def plan(n: int, *, groups: int) -> list[Slot]:
    if groups < 1 or n % groups:
        divisors = [g for g in range(1, n + 1) if n % g == 0]
        raise ValueError(f"groups={groups}: the {n} layers must split into equal groups; choose one of {divisors}.")
    size = n // groups
    out: list[Slot] = []
    for g in range(groups):
        out += [Slot(0, i) for i in range(g * size, (g + 1) * size)]
        out.append(Slot(0, (g + 1) * size - 1, identity=True))
    return out
