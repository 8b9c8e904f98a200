"""ATP: the compute currency of the orchestrator.

Unit: 1 ATP = 1 millisecond of measured wall-clock compute spent inside a plugin (its init_state,
step, project and energy calls), timed with the orchestrator's clock. A step is charged what it
actually took, so a budget of 200 ATP buys about 200 ms of plugin work on this machine, whichever
plugin spends it. (The original runtime counted abstract "iterations" that cost nothing.)

An `Account` holds one plugin's allocation for one cycle. When it runs dry it may draw from the
cycle's shared `Pool`, into which plugins that halted early return what they did not spend.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field


def allocate(budget: float, weights: Mapping[str, float], floor: float) -> dict[str, float]:
    """Split `budget` so each plugin gets at least `floor` of it (a fraction) and the rest is
    proportional to its weight (trust x salience). The floor keeps a distrusted plugin alive enough
    to earn trust back; without it trust could never rise once it hit zero."""
    n = len(weights)
    if n == 0:
        return {}
    floor = min(max(floor, 0.0), 1.0 / n)
    rest = budget * (1.0 - floor * n)
    total = sum(max(w, 0.0) for w in weights.values())
    out = {}
    for name, w in weights.items():
        share = max(w, 0.0) / total if total > 0 else 1.0 / n
        out[name] = budget * floor + rest * share
    return out


@dataclass
class Pool:
    """ATP returned by plugins that halted early, handed to plugins still running (same cycle)."""

    free: float = 0.0
    returned: float = 0.0  # total ever put back this cycle, for the trace
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def give_back(self, amount: float) -> None:
        if amount > 0:
            with self.lock:
                self.free += amount
                self.returned += amount

    def draw(self, share: float) -> float:
        """Take `share` (a fraction in (0, 1]) of what is free now."""
        with self.lock:
            amount = self.free * min(max(share, 0.0), 1.0)
            self.free -= amount
            return amount


@dataclass
class Account:
    allocated: float
    spent: float = 0.0
    drawn: float = 0.0  # received from the pool
    returned: float = 0.0  # given back to the pool when closed

    @property
    def remaining(self) -> float:
        return self.allocated + self.drawn - self.spent - self.returned

    def charge(self, atp: float) -> None:
        self.spent += atp

    def close(self, pool: Pool | None) -> float:
        """Return the unspent part to the pool; returns the amount given back."""
        left = max(self.remaining, 0.0)
        if pool is not None:
            pool.give_back(left)
        self.returned += left
        return left


@dataclass
class CycleLedger:
    """The hard limit of one cycle, shared by every plugin call in it (perception, solvers, output,
    DREAM). A call may start only if what is spent, plus what running calls have reserved, plus the
    call's estimated cost fits under `limit`. Once the ledger is over its limit nothing starts, so
    run sequentially a cycle overspends by at most one call's cost minus its estimate: never more
    than one plugin step's measured cost. (Run concurrently, by at most that per running plugin.)"""

    limit: float
    spent: float = 0.0
    reserved: float = 0.0
    refused: int = 0  # calls not started for want of ATP, for the trace
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def left(self) -> float:
        return self.limit - self.spent - self.reserved

    def reserve(self, estimate: float) -> bool:
        """Reserve `estimate` for a call about to start; False (and nothing reserved) if it does not fit."""
        estimate = max(estimate, 0.0)
        with self.lock:
            slack = 1e-6  # a nanosecond: clock arithmetic must not cost a step
            if self.spent + self.reserved >= self.limit or self.spent + self.reserved + estimate > self.limit + slack:
                self.refused += 1
                return False
            self.reserved += estimate
            return True

    def settle(self, estimate: float, actual: float) -> None:
        """The call that reserved `estimate` has finished and cost `actual`."""
        with self.lock:
            self.reserved = max(self.reserved - max(estimate, 0.0), 0.0)
            self.spent += actual
