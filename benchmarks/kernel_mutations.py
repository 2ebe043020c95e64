"""Mutation self-check of the kernel tests: plant known bugs, one at a time, and show that the
kernel-level tests (tests/fast/test_kernels.py) fail on each.

    python benchmarks/kernel_mutations.py                # every mutation (see docs/testing.md for the time)
    python benchmarks/kernel_mutations.py --jobs 2       # two pytest runs at once
    python benchmarks/kernel_mutations.py --list
    python benchmarks/kernel_mutations.py bn_bwd_mean_term dw_weight_first_partial

How a bug is planted: src/ is copied to a temporary folder, one exact piece of a line is replaced
there (it must occur exactly once, else the mutation is reported as stale), and pytest runs the
unchanged test file(s) with PYTHONPATH pointing at the copy, ahead of the editable install's
path; the script checks that ``xception`` really imports from the copy. Editing a copy rather
than monkeypatching: the bug sits where a real one would, inside a Triton kernel's source (which
triton reads from the file) or in a name other modules bound with ``from .launch import ...``,
and the tests run exactly as in CI, with no hook in the test process that could itself be wrong.

Exit status 0 only if the unmutated copy passes and every mutation makes at least one test fail,
including a test whose id contains the mutation's ``expect`` (e.g. a bf16 case for a dropped
term, a multi-program case for a reduction that keeps one program's partial).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/fast/test_kernels.py"]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str       # relative to src/
    old: str        # must occur exactly once in the file
    new: str
    expect: str     # some failing test id must contain this
    why: str


K = "xception/fast/kernels/"
MUTATIONS: list[Mutation] = [
    Mutation("dw_weight_first_partial", K + "depthwise.py",
             "return part[:, : kernel[0] * kernel[1]].sum(0)",
             "return part[:1, : kernel[0] * kernel[1]].sum(0)",
             "test_cross_program_reductions",
             "depthwise weight gradient sums only the first program's partial"),
    Mutation("bn_bwd_finalize_first_partial", K + "batchnorm.py",
             "(cdiv(c, block_c),), sg, sgx, progs, m, c, stats, out,",
             "(cdiv(c, block_c),), sg, sgx, 1, m, c, stats, out,",
             "test_cross_program_reductions",
             "BN backward finalize reads only the first program's partial sums"),
    Mutation("kernels_never_run", K + "launch.py",
             'if _backend == "torch" or not triton_installed():', "if True:",
             "test_fused_op_matches_pytorch",
             "kernels_run_on returns False: every fused op silently falls back to PyTorch"),
    Mutation("bn_bwd_mean_term", K + "batchnorm.py",
             "k3 = -scale * sg / M - k2 * mean", "k3 = -scale * sg / M",
             "bf16",
             "BN backward drops the term through the mean (k2 * mean), a few 1e-3 at zero mean"),
    Mutation("bn_bwd_grad_mean_term", K + "batchnorm.py",
             "k3 = -scale * sg / M - k2 * mean", "k3 = -k2 * mean",
             "bf16",
             "BN backward drops the mean of the upstream gradient (-scale * sum g / M)"),
    Mutation("biased_running_var", K + "batchnorm.py",
             "momentum * var * unbias", "momentum * var",
             "bf16",
             "running variance updated with the biased batch variance (off by M/(M-1))"),
    Mutation("bn_stats_finalize_first_partial", K + "batchnorm.py",
             "(cdiv(c, block_c),), means, m2s, progs, rows_per_prog, m, c,",
             "(cdiv(c, block_c),), means, m2s, 1, rows_per_prog, m, c,",
             "test_cross_program_reductions",
             "BN statistics merge only the first program's (mean, M2)"),
    Mutation("bn_stats_merge_drops_between_term", K + "batchnorm.py",
             "other=0.0) + n[:, None] * d * d", "other=0.0)",
             "test_cross_program_reductions",
             "Chan's merge forgets the spread of the program means (variance too small by ~P/M)"),
    Mutation("pool_bn_sums_ignore_mean", K + "maxpool.py",
             "tl.sum(acc * (xv - mean[None, :]), axis=0)", "tl.sum(acc * xv, axis=0)",
             "pool_bn",
             "max-pool backward's fused BN sums use x instead of x - mean"),
]


def problems(src: Path) -> list[str]:
    """Mutations whose target is not in ``src`` exactly once (the source moved on)."""
    out = []
    for m in MUTATIONS:
        count = (src / m.path).read_text().count(m.old)
        if count != 1:
            out.append(f"{m.name}: {m.old!r} occurs {count} times in {m.path}")
    return out


def plant(mutation: Mutation | None, into: Path) -> Path:
    """A copy of src/ under ``into`` with the mutation applied; returns the copy's src folder."""
    src = into / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if mutation is not None:
        path = src / mutation.path
        text = path.read_text()
        if text.count(mutation.old) != 1:
            raise SystemExit(f"stale mutation {mutation.name}: target not found exactly once")
        path.write_text(text.replace(mutation.old, mutation.new))
    return src


def run_tests(mutation: Mutation | None, tests: list[str]) -> dict:
    """pytest on ``tests`` against a (mutated) copy; failing test ids and the summary line."""
    with tempfile.TemporaryDirectory(prefix="kernel-mutation-") as tmp:
        src = plant(mutation, Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("OMP_NUM_THREADS", "1")
        where = subprocess.run([sys.executable, "-c", "import xception; print(xception.__file__)"],
                               env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        if not where.stdout.strip().startswith(str(src)):
            raise SystemExit(f"xception imports from {where.stdout.strip()}, not the copy {src}")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "--no-header",
                               "-p", "no:cacheprovider", *tests],
                              env=env, cwd=ROOT, capture_output=True, text=True)
    failed = [m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S+?::(\S+)", proc.stdout, re.M)]
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    return {"rc": proc.returncode, "failed": failed, "summary": summary,
            "seconds": time.perf_counter() - t}


def _grouped(ids: list[str], most: int = 16) -> str:
    """test_x[a], test_x[b], test_y -> 'test_x (2): a, b; test_y', at most ``most`` per test."""
    groups: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        name, _, param = i.partition("[")
        groups[name].append(param.rstrip("]"))
    out = []
    for name, params in groups.items():
        if not any(params):
            out.append(name)
            continue
        more = f", +{len(params) - most} more" if len(params) > most else ""
        out.append(f"{name} ({len(params)}): {', '.join(params[:most])}{more}")
    return "; ".join(out)


def verdict(mutation: Mutation, result: dict) -> str | None:
    """None if the tests caught the mutation as expected, else what went wrong."""
    failed = result["failed"]
    if not failed:
        return ("SURVIVED: no test failed" if result["rc"] == 0
                else f"pytest exit {result['rc']} without failing tests: {result['summary']}")
    if not any(mutation.expect in f for f in failed):
        return f"caught, but no failing test id contains {mutation.expect!r}"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--jobs", type=int, default=1, help="pytest runs at once (one core each)")
    p.add_argument("--tests", nargs="+", default=TESTS, help="test files to run")
    args = p.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:36s} {m.why}")
        return 0
    stale = problems(ROOT / "src")
    if stale:
        print("stale mutations:\n  " + "\n  ".join(stale))
        return 2
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        p.error(f"unknown mutations: {sorted(unknown)}")
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    print(f"tests: {' '.join(args.tests)}; {len(chosen)} mutations, {args.jobs} at a time",
          flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        jobs = [pool.submit(run_tests, m, args.tests) for m in [None, *chosen]]
        base = jobs[0].result()
        print(f"unmutated: {base['summary']} ({base['seconds']:.0f} s)", flush=True)
        missed = 0
        for m, job in zip(chosen, jobs[1:], strict=True):
            r = job.result()
            problem = verdict(m, r)
            missed += problem is not None
            status = problem or f"caught: {r['summary']}"
            print(f"\n{m.name} ({m.why})\n  {status} ({r['seconds']:.0f} s)\n"
                  f"  failed: {_grouped(r['failed'])}", flush=True)
    print(f"\n{len(chosen) - missed}/{len(chosen)} mutations caught"
          f"{'' if base['rc'] == 0 else '; THE UNMUTATED TESTS FAIL'}; "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return 0 if missed == 0 and base["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
