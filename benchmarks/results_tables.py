"""The Markdown tables of benchmarks/RESULTS.md, rendered from the raw `xception benchmark --out`
JSON files, so every figure there can be traced to (and regenerated from) committed data.

    python benchmarks/results_tables.py benchmarks/results/cpu/*.json

Per file: the command, when it ran, the machine and versions, the load average, then per mode
each contender's median time, images/s and the time ratios against the peers in the same run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xception.bench.results import PEERS


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    env, s = d["environment"], d["settings"]
    load = {k: f"{v:.1f}" for k, v in d.get("load_average_1min", {}).items()}
    lines = [f"`{path.as_posix()}`: `{d.get('command', '(command not recorded)')}`",
             f"({d.get('measured_at', 'time not recorded')}; {env['processor']}, {env['threads']} "
             f"threads, torch {env['torch']}, timm {env['timm']}; {s['dtype']}, "
             f"{'channels_last' if s['channels_last'] else 'NCHW'}"
             f"{', compiled' if s['compile'] else ''}, batch {s['batch']}, {s['reps']} reps, "
             f"medians; load average {load.get('before', '?')} -> {load.get('after', '?')})", ""]
    res = d["results"]
    modes = list(res)
    peers = [p for p in PEERS if any(p in res[m] for m in modes)]
    memory = any(e.get("saved_mb_per_image") for m in modes for e in res[m].values())
    ref = any("ours_ref" in res[m] for m in modes)  # our plain NCHW fp32 eager model, same run
    head = ["contender"] + [f"{m} {h}" for m in modes
                            for h in ("ms", *(f"vs {p}" for p in peers), *(["vs ours_ref"] * ref))]
    head += ["act MB/img"] if memory else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skipped = []
    for c in dict.fromkeys(c for m in modes for c in res[m]):
        entries = [res[m].get(c, {}) for m in modes]
        if not any(e.get("median_ms") for e in entries):
            skipped.append(f"{c}: {next((e.get('error') or e.get('note') for e in entries), '')}")
            continue
        cells = [c]
        for m, e in zip(modes, entries, strict=True):
            cells.append(f"{e['median_ms']:.1f}" if e.get("median_ms") else "-")
            for peer in peers:
                r = d["ratios"].get(m, {}).get(c, {}).get(f"time_vs_{peer}")
                cells.append(f"{r:.2f}" if r is not None else "")
            if ref:
                base = res[m].get("ours_ref", {}).get("median_ms")
                ok = base and e.get("median_ms") and c.startswith("ours") and c != "ours_ref"
                cells.append(f"{e['median_ms'] / base:.2f}" if ok else "")
        if memory:
            mb = next((e["saved_mb_per_image"] for e in entries if e.get("saved_mb_per_image")), None)
            cells.append(f"{mb:.1f}" if mb else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- not measured: {s}" for s in skipped] if skipped else []
    return "\n".join(lines) + "\n"


def main(paths: list[str]) -> int:
    for p in paths:
        print(table(Path(p)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
