"""The IRP runtime: one plugin contract, `refine`, and an orchestrator with ATP budgets, trust,
metabolic states, SNARC-scored persistent memory and a JSONL trace. docs/IRP.md describes it."""

from .contract import Answer, Budget, HaltDecision, Plugin, RefineTrace, StepRecord
from .refine import HaltRule, Refiner, default_halt, refine

__all__ = ["Answer", "Budget", "HaltDecision", "HaltRule", "Plugin", "RefineTrace", "Refiner", "StepRecord",
           "default_halt", "refine"]
