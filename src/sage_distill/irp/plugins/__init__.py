"""IRP plugins, and only plugins: the ARC solver (the SAGE model, voting over augmented views), vision (the
model's shared layers as a task embedder), memory retrieval, speech, control (the robot control policy; its
closed-loop runner is `irp/control_runner.py`) and synthetic (scripted instruments for tests and benchmarks)."""
