"""Render a run's summary (the JSON document) as a markdown table and a PNG chart."""

from __future__ import annotations

from typing import Any

from .runner import fmt

RATIO_NOTE = ">1 = streamq better (rates: streamq/other; times and bytes: other/streamq)"


def _ratio(ours: float, other: float, higher_better: bool) -> float | None:
    if ours <= 0 or other <= 0:
        return None
    return ours / other if higher_better else other / ours


def _cell(summary: dict[str, Any] | None, unit: str) -> str:
    if summary is None:
        return ""
    med, lo, hi = summary["median"], summary["min"], summary["max"]
    if len(summary["values"]) == 1:
        return fmt(med, unit)
    return f"{fmt(med, unit)} ({fmt(lo, unit)}-{fmt(hi, unit)})"


def best_peer(per_system: dict[str, Any], systems: dict[str, Any],
              higher_better: bool) -> tuple[str, float] | None:
    peers = [(s, v["median"]) for s, v in per_system.items()
             if systems.get(s, {}).get("kind") == "peer"]
    if not peers:
        return None
    return max(peers, key=lambda p: p[1]) if higher_better else min(peers, key=lambda p: p[1])


def markdown(doc: dict[str, Any]) -> str:
    systems: dict[str, Any] = doc["systems"]
    names = list(systems)
    results: dict[str, Any] = doc["results"]
    head = ["metric", *(systems[n]["label"] for n in names), "streamq vs best peer", "streamq vs raw"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in doc["metrics"]:
        per = results.get(m["key"])
        if not per:
            continue
        cells = [f"{m['label']} ({m['unit']})"]
        for n in names:
            if n in per:
                cells.append(_cell(per[n], m["unit"]))
            elif m["workload"] in systems[n]["not_applicable"]:
                cells.append("n/a")
            else:
                cells.append("—")
        ours = per.get("streamq", {}).get("median")
        best = best_peer(per, systems, m["higher_better"])
        vs_best = vs_raw = ""
        if ours is not None and best is not None:
            r = _ratio(ours, best[1], m["higher_better"])
            vs_best = f"{r:.2f}x ({systems[best[0]]['label']})" if r else ""
        if ours is not None and "raw" in per:
            r = _ratio(ours, per["raw"]["median"], m["higher_better"])
            vs_raw = f"{r:.2f}x" if r else ""
        cells += [vs_best, vs_raw]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> str:
    out = []
    mach = doc.get("machine", {})
    if mach:
        out.append(f"Machine: {mach['nproc']} cores, {mach['cpu']}; Redis {mach['redis']}; "
                   f"Python {mach['python']}; uvloop {'yes' if mach['uvloop'] else 'no'}; "
                   f"load average {mach.get('loadavg_at_start', 0):.2f} at start, "
                   f"{mach.get('loadavg_at_end', 0):.2f} at end.")
    cfg = doc["config"]
    out.append(f"Each cell: median (min-max) of {cfg['rounds']} alternating round(s); "
               f"N = {cfg['jobs']:,} jobs for drains and bulk enqueue, "
               f"{cfg['enqueue_one_jobs']:,} for one-by-one enqueue; drains capped at "
               f"{cfg['cap_s']:.0f} s after the first job. Ratios: {RATIO_NOTE}.")
    for s in doc["systems"].values():
        bits = [f"{s['label']}" + (f" {s['version']}" if s["version"] else "")]
        if s["bulk"]:
            bits.append(f"bulk = {s['bulk']}")
        bits += [f"{w}: n/a ({why})" for w, why in s["not_applicable"].items()]
        bits += [f"{k}: {v}" for k, v in s["notes"].items()]
        out.append("- " + "; ".join(bits))
    for name, why in doc["skipped"].items():
        out.append(f"- skipped {name}: {why}")
    for e in doc["errors"]:
        out.append(f"- ERROR {e['system']} {e['workload']} round {e['round']}: {e['error'][:300]}")
    return "\n".join(out)


def chart(doc: dict[str, Any], path: str) -> bool:
    """A PNG with one bar panel per metric (median, min-max whiskers); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    metrics = [m for m in doc["metrics"] if doc["results"].get(m["key"])]
    if not metrics:
        return False
    systems = doc["systems"]
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    palette = {"streamq": "#d62728", "raw": "#7f7f7f"}
    for ax, m in zip(axes.flat, metrics, strict=False):
        per = doc["results"][m["key"]]
        names = [n for n in systems if n in per]
        med = [per[n]["median"] for n in names]
        err = [[per[n]["median"] - per[n]["min"] for n in names],
               [per[n]["max"] - per[n]["median"] for n in names]]
        colors = [palette.get(systems[n]["kind"], "#1f77b4") for n in names]
        ax.barh([systems[n]["label"] for n in names], med, xerr=err, color=colors)
        ax.set_title(f"{m['label']} ({m['unit']}, {'higher' if m['higher_better'] else 'lower'} "
                     "is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
        if m["unit"] != "%" and min(med) > 0 and max(med) / min(med) > 30:
            ax.set_xscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    mach = doc.get("machine", {})
    fig.suptitle(f"streamq benchmarks — {mach.get('nproc')} cores {mach.get('cpu')}, "
                 f"Redis {mach.get('redis')}, Python {mach.get('python')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
