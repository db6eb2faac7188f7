"""Scale benchmark: the whole pipeline on synthetic data of growing size.

`make bench-scale` generates the seeded synthetic dataset
(`tfx_recsys.data.synthetic`) at each size, runs `recsys run` on it in a
fresh process (in-memory Beam, the default), and samples the resident
memory of that process and all its children every 0.25 s. Each component's
wall time comes from the run's own progress lines ("X running ..." /
"X done in"), and its peak memory is the highest sample taken while it ran.

Sizes (users / items / interactions):

    1M    10,000 /   100,000 /  1,000,000
    10M  100,000 / 1,000,000 / 10,000,000

The issue's target: the 10M run completes with peak RSS <= 8 GiB on a
2-core, 24 GiB machine. Training runs one epoch per model (and per NCF
stage): this measures what the pipeline costs, not how good the models get,
and every epoch more adds the same Trainer time again.

Output: a table on stdout, bench/results/scale.md and scale.json.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "runs", "bench-scale")
SIZES = {
    "1M": dict(num_users=10_000, num_items=100_000, num_interactions=1_000_000),
    "10M": dict(num_users=100_000, num_items=1_000_000, num_interactions=10_000_000),
}
TARGET_PEAK_GIB = {"10M": 8.0}
SAMPLE_SECONDS = 0.25
GIB = 1 << 30

_RUNNING = re.compile(r"^\s+(\S+)\s+running \.\.\.$")
_DONE = re.compile(r"^\s+(\S+)\s+done in\s+([\d.]+) s$")


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (Beam workers)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss_bytes(current)
        stack.extend(_children(current))
    return total


class MemorySampler(threading.Thread):
    """Samples tree_rss_bytes(pid) until stopped: [(monotonic time, bytes)]."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.samples = []

    def run(self):
        while not self._done.is_set():
            self.samples.append((time.monotonic(), tree_rss_bytes(self._pid)))
            self._done.wait(SAMPLE_SECONDS)

    def stop(self):
        self._done.set()
        self.join()

    def peak(self, start: float = float("-inf"), end: float = float("inf")) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def component_windows(lines):
    """[(component, start, end, reported seconds)] from timestamped progress
    lines [(monotonic time, text)], in the order components finished."""
    started: Dict[str, float] = {}
    windows = []
    for when, text in lines:
        running, done = _RUNNING.match(text), _DONE.match(text)
        if running:
            started[running.group(1)] = when
        elif done:
            name = done.group(1)
            windows.append((name, started.get(name, when), when, float(done.group(2))))
    return windows


def run_size(label: str, sizes: Dict[str, int], root: str, extra: List[str],
             timeout_seconds: Optional[float] = None) -> Dict:
    """Generates the data, runs the pipeline; returns times and peaks. A run
    still going after `timeout_seconds` is stopped: the components it
    finished are reported, and the one it was in as stopped."""
    from tfx_recsys.data import synthetic

    data_dir = os.path.join(root, "data")
    started = time.monotonic()
    if not os.path.exists(os.path.join(data_dir, "interactions.csv")):
        synthetic.generate_synthetic(data_dir, seed=0, **sizes)
    generate_seconds = time.monotonic() - started

    command = [sys.executable, "-m", "tfx_recsys.cli", "run", "--data", data_dir,
               "--dataset", "synthetic", "--root", os.path.join(root, "run"),
               "--epochs", "1", "--ranker-epochs", "1", "--no-cache", *extra]
    print(f"[{label}] $ {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    sampler = MemorySampler(process.pid)
    sampler.start()
    lines = []
    timer = (threading.Timer(timeout_seconds, process.terminate)
             if timeout_seconds else None)
    if timer:
        timer.start()
    for text in process.stdout:
        lines.append((time.monotonic(), text.rstrip("\n")))
        print(f"[{label}] {text}", end="", flush=True)
    returncode = process.wait()
    wall = time.monotonic() - started
    sampler.stop()
    stopped = bool(timer) and not timer.is_alive() and returncode != 0
    if timer:
        timer.cancel()
    if returncode != 0 and not stopped:
        tail = "\n".join(text for _, text in lines[-30:])
        sys.exit(f"[{label}] run failed ({returncode}):\n{tail}")
    windows = component_windows(lines)
    components = [{"component": name, "seconds": seconds,
                   "peak_rss_gib": sampler.peak(start, end) / GIB}
                  for name, start, end, seconds in windows if seconds >= 0.5]
    if stopped:
        running = [(m.group(1), when) for when, text in lines
                   for m in [_RUNNING.match(text)] if m]
        finished = {name for name, *_ in windows}
        components += [{"component": name, "seconds": None, "stopped": True,
                        "peak_rss_gib": sampler.peak(since) / GIB}
                       for name, since in running[-1:] if name not in finished]
    return {"sizes": sizes, "generate_seconds": generate_seconds,
            "wall_seconds": wall, "peak_rss_gib": sampler.peak() / GIB,
            "stopped_after_seconds": timeout_seconds if stopped else None,
            "components": components,
            "data_bytes": sum(os.path.getsize(os.path.join(data_dir, f))
                              for f in os.listdir(data_dir))}


def markdown(results: Dict[str, Dict]) -> str:
    labels = sorted(results, key=lambda label: list(SIZES).index(label))
    names: List[str] = []
    for result in results.values():
        names += [c["component"] for c in result["components"]
                  if c["component"] not in names]

    def cell(label, name):
        found = [c for c in results[label]["components"] if c["component"] == name]
        if not found:
            return "-"
        if found[0].get("stopped"):
            return f"stopped / >= {found[0]['peak_rss_gib']:.2f} GiB"
        return f"{found[0]['seconds']:.0f} s / {found[0]['peak_rss_gib']:.2f} GiB"

    header = "| component | " + " | ".join(
        f"{label} (time / peak RSS)" for label in labels) + " |"
    rows = [header, "|---|" + "---|" * len(labels)]
    rows += [f"| {name} | " + " | ".join(cell(label, name) for label in labels) + " |"
             for name in names]
    rows.append("| **whole run** | " + " | ".join(
        f"**{results[label]['wall_seconds']:.0f} s / "
        f"{results[label]['peak_rss_gib']:.2f} GiB**" for label in labels) + " |")
    sizes = "; ".join(
        f"{label}: {r['sizes']['num_users']:,} users, {r['sizes']['num_items']:,} "
        f"items, {r['sizes']['num_interactions']:,} interactions "
        f"({r['data_bytes'] / 2**20:.0f} MiB of CSV, generated in "
        f"{r['generate_seconds']:.0f} s)" for label, r in results.items())
    verdicts = [
        f"- {label}: peak RSS {results[label]['peak_rss_gib']:.2f} GiB vs target "
        f"<= {target:.0f} GiB: "
        f"{'met' if results[label]['peak_rss_gib'] <= target else 'NOT met'}"
        + (f" (the run was stopped after {results[label]['stopped_after_seconds'] / 60:.0f}"
           " min, before it completed)" if results[label].get("stopped_after_seconds")
           else "")
        for label, target in TARGET_PEAK_GIB.items() if label in results]
    return "\n".join([sizes + ".", "", *rows, "", *verdicts])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--run-arg", action="append", default=[],
                        help="extra `recsys run` argument (repeatable)")
    parser.add_argument("--timeout-minutes", type=float, default=None,
                        help="stop a run still going after this long and report "
                             "what it finished")
    parser.add_argument("--report-only", action="store_true",
                        help="no runs: print the table of the last results/scale.json")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.report_only:
        with open(os.path.join(RESULTS_DIR, "scale.json")) as f:
            saved = json.load(f)
        results, total = saved["results"], saved["total_seconds"]
    else:
        timeout = args.timeout_minutes * 60 if args.timeout_minutes else None
        results = {label: run_size(label, SIZES[label], os.path.join(args.root, label),
                                   args.run_arg, timeout)
                   for label in args.sizes}
        total = time.monotonic() - started
    text = "\n".join([
        markdown(results), "",
        f"Generated by `make bench-scale` on {datetime.date.today().isoformat()} "
        f"({platform.node() or 'host'}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB) "
        f"in {total / 60:.1f} min; one training epoch per model, in-memory Beam."])
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "scale.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(RESULTS_DIR, "scale.json"), "w") as f:
        json.dump({"results": results, "total_seconds": total}, f, indent=1,
                  sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
