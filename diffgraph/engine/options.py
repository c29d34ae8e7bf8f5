"""A run's speed and memory options (`--compile`, `--vram-budget GB`), parsed once where they arrive.

The CLI parses its flags, the server its own flags and a request's `options` object, into one
`RunOptions`; the executor hands it to every node (RunContext.options). Both are off by default and
never change which picture a seed gives beyond float noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the most a budget may say: far beyond any accelerator made, so a typo (8000 for 8) is caught
MAX_VRAM_BUDGET_GB = 4096.0


class OptionError(ValueError):
    """A bad option value; `field` names it (`--vram-budget` on the command line, `options.vram_budget`
    in a request)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def vram_budget_gb(value: Any, field: str = "--vram-budget") -> float:
    """A VRAM budget in gigabytes (GiB): a number more than 0 (`8`, `5.5`), else an OptionError."""
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if not math.isfinite(number) or number <= 0 or number > MAX_VRAM_BUDGET_GB:
        raise OptionError(field, f"{value!r} is not a number of gigabytes; give more than 0 and at most "
                                 f"{MAX_VRAM_BUDGET_GB:g}, such as 8 or 5.5")
    return number


@dataclass(frozen=True)
class RunOptions:
    """How a run computes, beyond device and dtype."""

    #: torch.compile the denoiser (UNet or transformer): static shapes, CUDA graphs on CUDA
    compile: bool = False
    #: keep the accelerator's peak under this many GiB by offloading (CUDA only; None: no budget)
    vram_budget_gb: float | None = None

    def budget_applies(self, device: str) -> bool:
        """Whether the VRAM budget does anything where the run computes: on a CUDA device only."""
        return self.vram_budget_gb is not None and device.split(":", 1)[0] == "cuda"

    def cache_variant(self, device: str) -> str:
        """Appended to cache keys: a compiled run's numbers differ from an eager run's by float noise,
        and a budget on CUDA may tile the VAE; they are kept apart. A budget on the CPU does nothing."""
        variant = "-compiled" if self.compile else ""
        if self.budget_applies(device):
            variant += f"-vram{self.vram_budget_gb:g}"
        return variant

    def budget_note(self, device: str) -> str | None:
        """The one-line notice the CLI and the server print for a budget that does nothing where the run
        computes; None when there is nothing to say."""
        if self.vram_budget_gb is None or self.budget_applies(device):
            return None
        return (f"note: --vram-budget {self.vram_budget_gb:g} has no effect on {device}: it keeps a CUDA GPU's "
                "memory under the budget; here models stay where they are")

    def to_json(self) -> dict[str, Any]:
        return {"compile": self.compile, "vram_budget": self.vram_budget_gb}

    @classmethod
    def from_json(cls, value: Any, defaults: RunOptions | None = None, prefix: str = "options") -> RunOptions:
        """A request's `options` object (`{"compile": true, "vram_budget": 8}`); what it leaves out
        comes from `defaults` (the server's flags). Raises an OptionError naming the field."""
        base = defaults or cls()
        if value is None:
            return base
        if not isinstance(value, dict):
            raise OptionError(prefix, "must be an object such as {\"compile\": true, \"vram_budget\": 8}")
        unknown = sorted(set(value) - {"compile", "vram_budget"})
        if unknown:
            raise OptionError(f"{prefix}.{unknown[0]}", "is not an option; the options are compile and vram_budget")
        compiled = value.get("compile", base.compile)
        if not isinstance(compiled, bool):
            raise OptionError(f"{prefix}.compile", f"{compiled!r} is not true or false")
        budget = base.vram_budget_gb
        if "vram_budget" in value:
            budget = None if value["vram_budget"] is None else vram_budget_gb(value["vram_budget"],
                                                                               f"{prefix}.vram_budget")
        return cls(compile=compiled, vram_budget_gb=budget)
