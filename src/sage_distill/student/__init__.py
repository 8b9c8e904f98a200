"""The SAGE student: a small looped transformer that solves ARC tasks with no teacher."""

from .configuration_sage import PRESETS, SageConfig
from .modeling_sage import SageModel, SageReadout

__all__ = ["PRESETS", "SageConfig", "SageModel", "SageReadout"]
