"""cProfile attribution of what statetrain does per step beyond the hand-written loop (tiny workload).

Profiles both loops of benchmarks/overhead_candidates.py in this process (one warm-up, then
``--calls`` profiled calls each) and prints Python calls per step for each, then the functions
whose calls per step differ, with their extra self time. Under load, trust the call counts more
than the microseconds.

Usage::

    python benchmarks/profile_overhead.py [--calls 3] [--rows 40]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(HERE), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)


def profile(name: str, calls: int) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Self seconds and calls per function, per step, averaged over ``calls`` profiled calls."""
    import overhead_candidates as oc

    w = oc.WORKLOADS["tiny"]
    samples, loop = oc.data(w), oc.CANDIDATES[name][0]
    seconds: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        loop(samples, w, tmp)
        for _ in range(calls):
            profiler = cProfile.Profile()
            profiler.enable()
            loop(samples, w, tmp)
            profiler.disable()
            for (file, _, function), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
                key = f"{file.split('site-packages/')[-1]}:{function}"
                seconds[key] += row[2] / calls / w.steps
                counts[key] += row[1] / calls / w.steps
    return seconds, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--rows", type=int, default=40)
    opts = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    hand_s, hand_c = profile("hand", opts.calls)
    ours_s, ours_c = profile("statetrain", opts.calls)
    print(f"Python calls per step: hand-written {sum(hand_c.values()):.0f}, statetrain {sum(ours_c.values()):.0f}")
    differing = [k for k in ours_c if abs(ours_c[k] - hand_c.get(k, 0.0)) >= 0.5]
    differing.sort(key=lambda k: ours_s[k] - hand_s.get(k, 0.0), reverse=True)
    print(f"{'extra µs/step':>14} {'extra calls':>12}  function")
    for key in differing[: opts.rows]:
        extra_us = (ours_s[key] - hand_s.get(key, 0.0)) * 1e6
        print(f"{extra_us:14.1f} {ours_c[key] - hand_c.get(key, 0.0):+12.1f}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
