"""Run several refinements in lockstep rounds, one step each per round, moving ATP between them.

After every round, plugins that halted return their unspent ATP to the cycle's pool; a plugin whose
account runs dry draws from the pool a share proportional to its weight among the plugins still
running. With a thread pool the steps of one round run concurrently (torch releases the GIL)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .atp import Account, CycleLedger, Pool, allocate
from .contract import Budget, Plugin, RefineTrace
from .refine import Clock, HaltRule, Refiner


def run_plugins(plugins: list[Plugin], x: Any, ctx: dict[str, Any], budget_atp: float, weights: dict[str, float],
                floor: float, max_steps: dict[str, int], rule: HaltRule, clock: Clock = time.perf_counter,
                executor: ThreadPoolExecutor | None = None, ledger: CycleLedger | None = None,
                estimates: dict[str, tuple[float, float]] | None = None,
                min_steps: int = 1) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Returns each started plugin's best state and every plugin's ledger: allocation, spent, drawn,
    trace. With a cycle `ledger` (and `min_steps=0`) no call starts that the ATP left cannot cover;
    `estimates` are (init, step) costs in ms measured for each plugin in earlier cycles."""
    estimates = estimates or {}
    alloc = allocate(budget_atp, {p.name: weights[p.name] for p in plugins}, floor)
    pool = Pool()
    accounts = {p.name: Account(alloc[p.name]) for p in plugins}
    running: set[str] = set()

    def share(name: str):
        def f() -> float:
            total = sum(weights[n] for n in running) or 1.0
            return weights[name] / total if name in running else 0.0
        return f

    refiners: dict[str, Refiner] = {}
    for p in plugins:  # init_state is charged to the account, like a step
        init_est, step_est = estimates.get(p.name, (0.0, 0.0))
        # Each plugin sees its own allocation, so it can size its steps (no call above a tenth of it).
        r = Refiner(p, x, {**ctx, "allocation_atp": alloc[p.name]}, Budget(max_steps[p.name], alloc[p.name], min_steps),
                    account=accounts[p.name],
                    pool=pool, pool_share=share(p.name), rule=rule, clock=clock, ledger=ledger,
                    init_estimate=init_est, step_estimate=step_est)
        refiners[p.name] = r
        if r.started:
            running.add(p.name)
        else:
            accounts[p.name].close(pool)
    while running:
        names = sorted(running)
        if executor is not None and len(names) > 1:
            alive = list(executor.map(lambda n: refiners[n].advance(), names))
        else:
            alive = [refiners[n].advance() for n in names]
        for n, still in zip(names, alive, strict=True):
            if not still:
                running.discard(n)
                accounts[n].close(pool)
    states: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, r in refiners.items():
        state, trace = r.result()
        if r.started:
            states[name] = state
        out[name] = {"allocated": alloc[name], "spent": accounts[name].spent, "drawn": accounts[name].drawn,
                     "returned": accounts[name].returned, "trace": trace, "init_ms": r.init_ms,
                     "started": r.started}
    return states, out


def ledger_json(ledger: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, e in ledger.items():
        trace: RefineTrace = e["trace"]
        out[name] = {"allocated": round(e["allocated"], 3), "spent": round(e["spent"], 3),
                     "drawn": round(e["drawn"], 3), "returned": round(e["returned"], 3),
                     "init_ms": round(e.get("init_ms", 0.0), 3), **trace.to_json()}
    return out
