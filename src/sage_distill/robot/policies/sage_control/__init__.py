"""SAGE control: a small pixel + proprio policy that refines an action chunk by flow matching."""

from .configuration_control import ControlConfig
from .modeling_control import ControlPolicy

__all__ = ["ControlConfig", "ControlPolicy"]
