"""diffgraph: a declarative node-graph workflow engine for diffusion models."""

__version__ = "0.1.0"
