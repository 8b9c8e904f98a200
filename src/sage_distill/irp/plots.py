"""`sage-distill trace show`: a timeline of a JSONL trace (matplotlib, Agg backend, no display).

Three panels sharing the cycle axis: ATP spent per plugin per cycle (stacked bars), every run's
energy curve drawn across its cycle (step i of a run with n steps at cycle + i / n), and the
metabolic state as a step line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import SageError
from ..utils.io import atomic_write_bytes
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
    limits = [r.get("limit", r.get("budget")) for r in cycles]
    if any(v is not None for v in limits):
        ax_atp.step(xs, [float("nan") if v is None else v for v in limits], where="mid", color="k", lw=1,
                    ls="--", label="cycle limit")
    ax_atp.set_title("ATP spent per plugin per cycle (stacked)")
    ax_atp.set_ylabel("ATP spent (ms of plugin compute)")
    if names:
        ax_atp.legend(loc="upper right", fontsize=8)
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    for r in cycles:
        for name, p in r.get("plugins", {}).items():
            e = [float("nan") if v is None else float(v) for v in p.get("energies", [])]
            if len(e) > 1:
                n = len(e) - 1
                ax_e.plot([r["cycle"] - 0.4 + 0.8 * i / n for i in range(n + 1)], e, color=colors[name], lw=1)
    for name in names:
        ax_e.plot([], [], color=colors[name], label=name)
    ax_e.set_title("Energy of each plugin run across its cycle (lower is better)")
    ax_e.set_ylabel("energy (plugin units, unitless)")
    if names:
        ax_e.legend(loc="upper right", fontsize=8)
    order = [s.value for s in State]
    ax_s.step(xs, [order.index(r["state"]) for r in cycles], where="mid", color="k")
    ax_s.set_yticks(range(len(order)), order)
    ax_s.set_title("Metabolic state")
    ax_s.set_ylabel("state")
    ax_s.set_xlabel("cycle (one input or idle tick, count)")
    from matplotlib.ticker import MaxNLocator

    ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Orchestrator trace: {len(cycles)} cycles")
    fig.tight_layout()
    out = Path(out)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())  # a kill leaves the old PNG or the new one, never half
    return {"cycles": len(cycles), "plugins": names, "out": str(out)}


def check_records(records: list[dict[str, Any]], trace: Path) -> list[dict[str, Any]]:
    """The cycle records, each with what the plot reads, or a SageError naming the line."""
    states = {s.value for s in State}
    cycles = []
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise SageError(f"record is a {type(r).__name__}, not an object", file=trace, where=f"record {i}")
        if "cycle" not in r:
            continue
        where = f"record {i}"
        if isinstance(r["cycle"], bool) or not isinstance(r["cycle"], int | float):
            raise SageError(f"'cycle' must be a number, got {r['cycle']!r}", file=trace, where=where)
        if r.get("state") not in states:
            raise SageError(f"'state' must be one of {', '.join(sorted(states))}, got {r.get('state')!r}",
                            file=trace, where=where)
        plugins = r.get("plugins", {})
        if not isinstance(plugins, dict) or not all(isinstance(p, dict) for p in plugins.values()):
            raise SageError("'plugins' must be an object of plugin -> record", file=trace, where=where)
        for name, p in plugins.items():
            if isinstance(p.get("spent", 0.0), bool) or not isinstance(p.get("spent", 0.0), int | float):
                raise SageError(f"plugin {name}: 'spent' must be a number", file=trace, where=where)
            e = p.get("energies", [])
            if not isinstance(e, list) or not all(v is None or isinstance(v, int | float) for v in e):
                raise SageError(f"plugin {name}: 'energies' must be a list of numbers", file=trace, where=where)
        dream = r.get("dream", {})
        if not isinstance(dream, dict) or not isinstance(dream.get("learners", {}), dict):
            raise SageError("'dream' must be an object with 'learners'", file=trace, where=where)
        cycles.append(r)
    if not cycles:
        raise SageError("no cycle records to draw", file=trace)
    return records


def show_command(trace: Path, out: Path) -> str:
    from ..errors import check_output_file

    if out.is_symlink():  # writing through it would overwrite whatever file the link names
        raise SageError(f"{out} is a symbolic link; give a plain file path", file="--out")
    check_output_file(out)
    if out.suffix.lower() != ".png":
        raise SageError(f"{out} must end in .png", file="--out")
    info = draw_timeline(check_records(read_trace(trace), trace), out)
    return f"{info['cycles']} cycles, plugins {', '.join(info['plugins']) or '-'}: wrote {info['out']}"
