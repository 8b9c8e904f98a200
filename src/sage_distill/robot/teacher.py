"""Control teachers: anything that maps a batch of robot observations to actions.

One protocol for every robot teacher: Meta-World's scripted experts today; a GR00T policy or a larger
trained SAGE policy plugs in behind the same `act` when its weights are present (`robot.dagger.PolicyTeacher`:
a policy folder, e.g. a privileged state policy). A teacher may read the simulator's full state (`state`),
which the pixel student does not get: the student learns to recover what it needs (object and goal
positions) from the image, where every goal marker is drawn.
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ControlTeacher(Protocol):
    name: str

    def act(self, observations: list[dict[str, np.ndarray]]) -> np.ndarray:
        """(B, action_dim) actions for B observations, in the env's action range. An observation is an env
        observation (`agent_pos`, `state`, `task_index`, `pixels` when rendering), plus `prev_agent_pos` (the
        proprio one step earlier) where the caller knows it."""
        ...


class MetaWorldExpert:
    """Meta-World's hand-written policy for each task (`metaworld.policies`), deterministic, from the
    full 39-d state. Measured near 98% success on its own tasks (docs/BENCHMARKS.md)."""

    name = "metaworld-expert"

    def __init__(self) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self._classes = ENV_POLICY_MAP
        # Every expert warns that its gains exceed the action range; `act` clips, so the warning says nothing.
        warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
        self._policies: dict[str, object] = {}

    def policy(self, task: str):
        if task not in self._policies:
            self._policies[task] = self._classes[task]()
        return self._policies[task]

    def act(self, observations: list[dict[str, np.ndarray]], tasks: list[str] | None = None) -> np.ndarray:
        from .envs import all_tasks

        names = tasks or [all_tasks()[int(o["task_index"])] for o in observations]
        # The experts' gains can ask for more than the env accepts; clip to the range the env applies.
        return np.stack([np.clip(self.policy(t).get_action(o["state"].astype(np.float64)), -1.0, 1.0)
                         for t, o in zip(names, observations, strict=True)]).astype(np.float32)
