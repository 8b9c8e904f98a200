"""ARC data: typed tasks, validated loaders, exact augmentations, rendering."""

from .augment import IDENTITY, Augmentation, dihedral, dihedral_inverse
from .datasets import SHIPPED, SPLITS, load_challenges, load_dataset, load_path, load_solutions
from .task import MAX_SIZE, NUM_COLORS, Pair, Task, grid_key

__all__ = ["Augmentation", "IDENTITY", "dihedral", "dihedral_inverse", "SHIPPED", "SPLITS",
           "load_challenges", "load_dataset", "load_path", "load_solutions", "MAX_SIZE", "NUM_COLORS",
           "Pair", "Task", "grid_key"]
