"""The orchestrator: one `cycle` per input (or per idle tick).

A cycle: perceive (perception plugins, in order, each with a fixed ATP budget; they put the input's
embedding and similar memories into the context) -> input salience -> metabolic state -> pick the
active plugins (at most the state's limit, by trust x relevance) -> allocate the cycle's ATP
(trust x relevance with a floor) -> refine them in lockstep rounds, recycling unspent ATP -> update
trust -> choose the answer -> store the experience with SNARC salience -> speak (optional) ->
append the trace record. In DREAM, learners are fine-tuned on the most salient memories instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .atp import CycleLedger
from .config import OrchestratorSettings
from .contract import Answer, Plugin, RefineTrace, optional
from .memory import Memory
from .metabolic import Metabolism, State
from .refine import Clock, HaltRule
from .rounds import ledger_json, run_plugins
from .salience import Snarc, input_salience, novelty, surprise
from .trace import TraceWriter
from .trust import TrustBook


def role(p: Plugin) -> str:
    return getattr(p, "role", "solver")


@dataclass
class CycleResult:
    cycle: int
    state: State
    answer: Any = None
    chosen: str | None = None
    reason: str = ""
    traces: dict[str, RefineTrace] = field(default_factory=dict)
    spent: float = 0.0
    plugin_ms: float = 0.0  # wall time inside plugins (init/step/energy/learn/answer)
    wall_ms: float = 0.0  # wall time of the whole cycle
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead_ms(self) -> float:
        return self.wall_ms - self.plugin_ms


class Orchestrator:
    def __init__(self, plugins: list[Plugin], settings: OrchestratorSettings | None = None,
                 memory: Memory | None = None, trace: TraceWriter | None = None,
                 serialize: Callable[[Any], Any] = lambda x: x, max_steps: dict[str, int] | None = None,
                 clock: Clock = time.perf_counter) -> None:
        self.s = settings or OrchestratorSettings()
        self.plugins = {p.name: p for p in plugins}
        self.memory, self.trace, self.serialize, self.clock = memory, trace, serialize, clock
        self.max_steps = max_steps or {}
        self.trust = TrustBook(self.s.trust.initial, self.s.trust.rate_convergence, self.s.trust.rate_truth)
        self.metabolism = Metabolism(self.s.thresholds, self.s.reserve_capacity)
        self.rule = HaltRule(self.s.halt.eps, self.s.halt.converge_k, self.s.halt.patience)
        self.n = 0
        self.totals: dict[str, dict[str, float]] = {
            p.name: {"atp": 0.0, "steps": 0, "runs": 0, "refused": 0, "calls_over_tenth": 0} for p in plugins}
        # Measured cost (ms) of each plugin's init_state and of its dearest step in its last run, and
        # of its last DREAM learn call: the estimates that decide whether the next call may start.
        self.costs: dict[str, dict[str, float]] = {p.name: {"init": 0.0, "step": 0.0, "learn": 0.0} for p in plugins}
        self.ledger = CycleLedger(0.0)
        self.answers: dict[str, dict[str, Any]] = {}  # key -> plugin -> answer value (for later feedback)
        self.executor = ThreadPoolExecutor(self.s.max_workers) if self.s.concurrent else None

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()

    def _by_role(self, r: str) -> list[Plugin]:
        return [p for p in self.plugins.values() if role(p) == r]

    def _salience(self, snarc: Snarc) -> float:
        return snarc.total(self.s.salience_weights)

    # ------------------------------------------------------------------ one cycle

    def cycle(self, x: Any = None, key: str | None = None) -> CycleResult:
        t0 = self.clock()
        self.n += 1
        res = CycleResult(self.n, self.metabolism.state)
        ctx: dict[str, Any] = {"memory": self.memory}
        rec: dict[str, Any] = {"cycle": self.n, "key": key, "time": time.time()}
        ledgers: dict[str, dict[str, Any]] = {}
        # One hard limit for everything the cycle runs. Perception comes first, out of the budget the
        # metabolic state allows now (the state update below only needs perception's outputs).
        self.ledger = CycleLedger(self.metabolism.cycle_budget(self.s.base_budget))
        if x is not None:
            for p in self._by_role("perception"):
                states = self._run(res, [p], x, ctx, min(self.s.perception_budget, max(self.ledger.left, 0.0)),
                                   ledgers)
                if optional(p, "context") and p.name in states:  # e.g. the embedding, the nearest memories
                    ctx.update(p.context(states[p.name]))
        novel = self._novelty(ctx)
        prior = ctx.get("neighbour_surprise", 0.5)
        sal = input_salience(novel, prior) if x is not None else 0.0
        has_memories = self.memory is not None and len(self.memory) > 0
        before, after, why = self.metabolism.update(x is not None, sal, has_memories)
        res.state = after
        budget = self.metabolism.cycle_budget(self.s.base_budget)
        self.ledger.limit = budget  # perception already spent from it (see `_perception_budget`)
        rec.update(state_before=before.value, state=after.value, transition=why, input_salience=round(sal, 4),
                   novelty=round(novel, 4), budget=round(budget, 3), reserve=round(self.metabolism.reserve, 3))
        trust_before = {n: round(self.trust.get(n), 4) for n in self.plugins}
        if after is State.DREAM:
            rec["dream"] = self._dream(res, budget)
        elif x is not None:
            self._solve(res, x, ctx, key, budget, ledgers, rec)
        res.spent = self.ledger.spent
        self.metabolism.settle(res.spent)
        rec.update(plugins=ledger_json(ledgers), trust_before=trust_before,
                   trust_after={n: round(self.trust.get(n), 4) for n in self.plugins},
                   spent=round(res.spent, 3), limit=round(self.ledger.limit, 3),
                   overspend=round(max(res.spent - self.ledger.limit, 0.0), 3), refused=self.ledger.refused,
                   reserve_after=round(self.metabolism.reserve, 3))
        res.wall_ms = (self.clock() - t0) * 1000.0
        rec.update(plugin_ms=round(res.plugin_ms, 3), wall_ms=round(res.wall_ms, 3))
        res.record = rec
        if self.trace is not None:
            self.trace.write(rec)
        return res

    def _run(self, res: CycleResult, plugins: list[Plugin], x: Any, ctx: dict[str, Any], budget: float,
             ledgers: dict[str, dict[str, Any]], weights: dict[str, float] | None = None) -> dict[str, Any]:
        weights = weights or {p.name: 1.0 for p in plugins}
        steps = {p.name: self.max_steps.get(p.name, 16) for p in plugins}
        estimates = {p.name: (self.costs[p.name]["init"], self.costs[p.name]["step"]) for p in plugins}
        states, ledger = run_plugins(plugins, x, ctx, max(budget, 0.0), weights, self.s.floor, steps, self.rule,
                                     self.clock, self.executor, ledger=self.ledger, estimates=estimates, min_steps=0)
        for name, e in ledger.items():
            tr: RefineTrace = e["trace"]
            tot = self.totals[name]
            cost = self.costs[name]
            if not e["started"] or not tr.steps:
                # Refused for want of ATP: halve the estimate that refused it, so a cost measured on a
                # dear input does not lock the plugin out for good (a retry overspends at most a step).
                tot["refused"] += 1
                cost["init" if not e["started"] else "step"] *= 0.5
            if not e["started"]:
                ledgers[name] = e
                continue
            res.traces[name] = tr
            res.plugin_ms += sum(s.ms for s in tr.steps) + e["init_ms"]
            self.trust.observe_run(tr)
            cost["init"] = e["init_ms"]
            if tr.steps:
                cost["step"] = max(s.ms for s in tr.steps)
            tenth = 0.1 * max(e["allocated"] + e["drawn"], 1e-9)
            tot["calls_over_tenth"] += sum(c > tenth for c in [e["init_ms"], *(s.ms for s in tr.steps)])
            tot["atp"] += e["spent"]
            tot["steps"] += len(tr.steps)
            tot["runs"] += 1
        ledgers.update(ledger)
        return states

    def _novelty(self, ctx: dict[str, Any]) -> float:
        return novelty(ctx.get("neighbour_similarity"))

    def _solve(self, res: CycleResult, x: Any, ctx: dict[str, Any], key: str | None, budget: float,
               ledgers: dict[str, dict[str, Any]], rec: dict[str, Any]) -> None:
        solvers = self._by_role("solver")
        weights = {}
        for p in solvers:
            rel = optional(p, "relevance")
            weights[p.name] = max(self.trust.get(p.name) * (rel(x, ctx) if rel else 1.0), 1e-6)
        limit = self.metabolism.profile.max_active
        active = sorted(solvers, key=lambda p: -weights[p.name])[:limit]
        rec["active"] = [p.name for p in active]
        if not active:
            return
        states = self._run(res, active, x, ctx, min(budget, self.ledger.left), ledgers,
                           {p.name: weights[p.name] for p in active})
        t0 = self.clock()
        answers = {p.name: p.answer(states[p.name]) for p in active if optional(p, "answer") and p.name in states}
        res.plugin_ms += (self.clock() - t0) * 1000.0
        answers = {n: a for n, a in answers.items() if a is not None}
        if not answers:
            return
        chosen, reason = self._choose(answers, res.traces)
        res.answer, res.chosen, res.reason = answers[chosen].value, chosen, reason
        if key is not None:
            self.answers[key] = {n: a.value for n, a in answers.items()}
        snarc = self._snarc(answers, chosen, res.traces[chosen], ctx)
        rec.update(answer_from=chosen, answer_reason=reason, snarc=snarc.to_json(), salience=self._salience(snarc))
        if self.memory is not None and "embedding" in ctx:
            self.memory.add(key or f"cycle-{self.n}", ctx["embedding"], self.serialize(x), res.answer,
                            res.traces[chosen].energies, snarc, self._salience(snarc))
        for p in self._by_role("output"):  # e.g. speech: say what was answered
            status = f"{key or 'input'}: answered by {chosen} in {len(res.traces[chosen].steps)} steps"
            self._run(res, [p], status, {"cycle": self.n}, min(self.s.perception_budget, max(self.ledger.left, 0.0)),
                      ledgers)

    def _choose(self, answers: dict[str, Answer], traces: dict[str, RefineTrace]) -> tuple[str, str]:
        """Prefer runs that did not diverge, then higher trust, then lower final energy."""
        def rank(n: str) -> tuple:
            return (traces[n].halt_reason == "diverging", -self.trust.get(n), traces[n].final_energy)
        order = sorted(answers, key=rank)
        n = order[0]
        why = (f"trust {self.trust.get(n):.2f}, final energy {traces[n].final_energy:.3f}, "
               f"halted '{traces[n].halt_reason}' after {len(traces[n].steps)} steps")
        if len(order) > 1:
            why += f"; preferred over {', '.join(order[1:])} (non-diverging first, then trust, then energy)"
        else:
            why = "only answer: " + why
        return n, why

    def _snarc(self, answers: dict[str, Answer], chosen: str, trace: RefineTrace, ctx: dict[str, Any]) -> Snarc:
        a = answers[chosen]
        if len(answers) > 1:  # disagreement between plugins
            ref = json.dumps(a.value, sort_keys=True, default=str)
            conflict = sum(json.dumps(b.value, sort_keys=True, default=str) != ref
                           for b in answers.values()) / (len(answers) - 1)
        else:  # between augmented predictions of the one plugin
            conflict = a.disagreement
        return Snarc(surprise=surprise(trace.final_energy), novelty=self._novelty(ctx),
                     arousal=float(a.uncertainty), reward=0.0, conflict=float(conflict))

    def _dream(self, res: CycleResult, budget: float) -> dict[str, Any]:
        """Consolidation: learners fine-tune on the most salient memories (demonstrations only). A learn
        call is one step: it starts only if the ATP left covers the larger of its share and its cost
        measured last time (or the plugin's `estimate_learn_ms`)."""
        if self.memory is None:
            return {"atp": 0.0, "learners": {}}
        exps = self.memory.most_salient(self.s.dream_experiences)
        learners = [p for p in self.plugins.values() if optional(p, "learn")]
        learners = sorted(learners, key=lambda p: -self.trust.get(p.name))[: self.metabolism.profile.max_active]
        out: dict[str, Any] = {"atp": 0.0, "experiences": [e.id for e in exps], "learners": {}}
        for i, p in enumerate(learners):
            share = max(self.ledger.left, 0.0) / (len(learners) - i)
            est = self.costs[p.name]["learn"]
            own = optional(p, "estimate_learn_ms")
            if own is not None:
                est = max(est, float(own(share) or 0.0))
            reserved = max(est, 1e-9)
            if share <= 0 or not self.ledger.reserve(reserved):
                self.totals[p.name]["refused"] += 1
                out.setdefault("refused", {})[p.name] = {"estimate_ms": round(est, 3)}
                continue
            t0 = self.clock()
            stats = p.learn(exps, share)
            ms = (self.clock() - t0) * 1000.0
            self.ledger.settle(reserved, ms)
            self.costs[p.name]["learn"] = ms
            res.plugin_ms += ms
            out["atp"] += ms
            self.totals[p.name]["atp"] += ms
            out["learners"][p.name] = {**stats, "ms": round(ms, 3)}
        return out

    # ------------------------------------------------------------------ late ground truth

    def feedback(self, key: str, judge: Callable[[Any], bool | float]) -> dict[str, tuple[float, float]]:
        """Ground truth for `key` has arrived: judge each plugin's answer, update trust and memory."""
        changes = {}
        answers = self.answers.get(key, {})
        best = 0.0
        for name, value in answers.items():
            ok = float(judge(value))
            best = max(best, ok)
            changes[name] = self.trust.observe_truth(name, ok)
        if self.memory is not None and answers:
            self.memory.set_outcome(key, best, {"surprise": 1.0 - best, "reward": best}, self._salience)
        if self.trace is not None:
            self.trace.write({"feedback": key, "correct": best,
                              "trust": {n: [round(b, 4), round(a, 4)] for n, (b, a) in changes.items()}})
        return changes

    def summary(self) -> dict[str, Any]:
        return {"plugins": {n: {**{k: round(v, 3) for k, v in t.items()}, "trust": round(self.trust.get(n), 4)}
                            for n, t in self.totals.items()},
                "time_in_state": dict(self.metabolism.time_in_state), "cycles": self.n}
