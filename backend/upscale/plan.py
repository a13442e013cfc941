"""A layer plan: which source layer fills each slot of the new stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    source: int  # index of the source model
    layer: int  # layer index in that source
    identity: bool = False  # LLaMA Pro: output projections zeroed, so the block passes its input through
