"""diffgraph's own node catalog, registered through the `diffgraph.nodes` entry point.

Importing this package stays light: modules import torch, diffusers and transformers inside the
functions that use them, so `diffgraph validate` and `diffgraph nodes` start fast.
"""

from __future__ import annotations

from diffgraph.engine import NodeRegistry


def register(registry: NodeRegistry) -> None:
    from . import controlnet, images, ipadapter, latents, loaders, lora, primitives, resize, sampling

    registry.add(*primitives.NODES)
    registry.add(*images.NODES)
    registry.add(*loaders.NODES)
    registry.add(*sampling.NODES)
    registry.add(*latents.NODES)
    registry.add(*resize.NODES)
    registry.add(*ipadapter.NODES)
    registry.add(*controlnet.NODES)
    registry.add(*lora.NODES)
