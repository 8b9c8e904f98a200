"""IRP plugins: the ARC solver (the SAGE student), vision (its grid encoder), memory retrieval, speech."""
