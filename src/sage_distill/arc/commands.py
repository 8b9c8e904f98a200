"""What the `data` commands do (the CLI only dispatches here)."""

from __future__ import annotations

from .datasets import SHIPPED, SPLITS, load_dataset


def list_datasets() -> None:
    for name, ds in SHIPPED.items():
        sizes = ", ".join(f"{split} {len(load_dataset(name, split))}" for split in SPLITS)
        print(f"{name:<11} {sizes:<30} {ds.description}")
