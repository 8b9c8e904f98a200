"""IRP plugins: the ARC solver (the SAGE model, voting over augmented views), vision (the model's
shared layers as a task embedder), memory retrieval, speech."""
