"""Distillation: a registry of weighted loss terms (task, halting, teacher-matching)."""
