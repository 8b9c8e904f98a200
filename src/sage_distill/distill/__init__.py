"""Distillation: a registry of weighted, model-agnostic loss terms (task cross-entropy, logit KL,
feature matching through a trained projector)."""
