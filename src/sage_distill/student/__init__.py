"""The SAGE ARC model: a transformer over one (input, output) pair at a time, conditioned on
per-task embeddings, that generates the output grid row by row."""

from .configuration_sage import PRESETS, SageConfig
from .modeling_sage import SageModel

__all__ = ["PRESETS", "SageConfig", "SageModel"]
