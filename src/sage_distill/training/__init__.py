"""Training the SAGE student (and distilling into it): data, loop, checkpoints."""
