"""`sage-distill trace show`: a timeline of a JSONL trace (matplotlib, Agg backend, no display).

Three panels sharing the cycle axis: ATP spent per plugin per cycle (stacked bars), every run's
energy curve drawn across its cycle (step i of a run with n steps at cycle + i / n), and the
metabolic state as a step line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metabolic import State
from .trace import read_trace


def draw_timeline(records: list[dict[str, Any]], out: str | Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cycles = [r for r in records if "cycle" in r]
    names = sorted({n for r in cycles for n in r.get("plugins", {})} |
                   {n for r in cycles for n in r.get("dream", {}).get("learners", {})})
    xs = [r["cycle"] for r in cycles]
    fig, (ax_atp, ax_e, ax_s) = plt.subplots(3, 1, figsize=(12, 8), sharex=True,
                                            gridspec_kw={"height_ratios": [2, 2, 1]})
    bottom = [0.0] * len(cycles)
    for name in names:
        vals = [r.get("plugins", {}).get(name, {}).get("spent", 0.0)
                + r.get("dream", {}).get("learners", {}).get(name, {}).get("ms", 0.0) for r in cycles]
        ax_atp.bar(xs, vals, bottom=bottom, label=name, width=0.8)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax_atp.set_ylabel("ATP (ms)")
    ax_atp.legend(loc="upper right", fontsize=8)
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    for r in cycles:
        for name, p in r.get("plugins", {}).items():
            e = p.get("energies", [])
            if len(e) > 1:
                n = len(e) - 1
                ax_e.plot([r["cycle"] - 0.4 + 0.8 * i / n for i in range(n + 1)], e, color=colors[name], lw=1)
    for name in names:
        ax_e.plot([], [], color=colors[name], label=name)
    ax_e.set_ylabel("energy")
    ax_e.legend(loc="upper right", fontsize=8)
    order = [s.value for s in State]
    ax_s.step(xs, [order.index(r["state"]) for r in cycles], where="mid", color="k")
    ax_s.set_yticks(range(len(order)), order)
    ax_s.set_ylabel("state")
    ax_s.set_xlabel("cycle")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"cycles": len(cycles), "plugins": names, "out": str(out)}


def show_command(trace: Path, out: Path) -> str:
    info = draw_timeline(read_trace(trace), out)
    return f"{info['cycles']} cycles, plugins {', '.join(info['plugins']) or '-'}: wrote {info['out']}"
