"""Counting how many times peft injects LoRA layers, for the LoRA benches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def counting_injections() -> Iterator[dict[str, int]]:
    """Within the block, counts["count"] is how many times `peft.inject_adapter_in_model` ran:
    diffusers' loaders and diffgraph's lora.py look it up on peft at each call."""
    import peft

    counts = {"count": 0}
    inject = peft.inject_adapter_in_model

    def counted(*positional, **keywords):
        counts["count"] += 1
        return inject(*positional, **keywords)

    peft.inject_adapter_in_model = counted
    try:
        yield counts
    finally:
        peft.inject_adapter_in_model = inject
