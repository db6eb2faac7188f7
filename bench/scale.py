"""Scale benchmark: the whole pipeline on synthetic data of growing size.

`make bench-scale` generates the seeded synthetic dataset
(`tfx_recsys.data.synthetic`) at each size, runs `recsys run` on it in a
fresh process with the defaults (in-memory Beam; each component in a
process of its own once the data reach 256 MiB, so at 10M but not at 1M),
and samples the memory of that process and all its children every 0.25 s
(PSS and RSS, see MEMORY_NOTE). Each component's wall time comes from the
run's own progress lines ("X running ..." / "X done in"), and its peak
memory is the highest sample taken while it ran.

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
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import costs  # noqa: E402  (bench/ is not a package)

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "runs", "bench-scale")
SIZES = {
    "1M": dict(num_users=10_000, num_items=100_000, num_interactions=1_000_000),
    "10M": dict(num_users=100_000, num_items=1_000_000, num_interactions=10_000_000),
}
TARGET_PEAK_GIB = {"10M": 8.0}
TARGET_COST_RATIO = 5.0
OUTPUT_FILE = "run-output.tsv"  # the run's output lines, for --costs-only
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


def _memory_kib(pid: int) -> Tuple[int, int]:
    """(RSS, PSS) of `pid` in KiB. PSS shares each page among the processes
    that map it, so summed over processes it counts a shared library once."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def tree_memory(pid: int) -> Dict[str, int]:
    """Memory of `pid` and all its descendants (components in processes of
    their own, Beam workers), in bytes: `pss` and `rss` summed over the
    processes, and `largest_rss`, the RSS of the largest one."""
    memory = {"rss": 0, "pss": 0, "largest_rss": 0}
    stack = [pid]
    while stack:
        current = stack.pop()
        rss, pss = (value * 1024 for value in _memory_kib(current))
        memory["rss"] += rss
        memory["pss"] += pss
        memory["largest_rss"] = max(memory["largest_rss"], rss)
        stack.extend(_children(current))
    return memory


class MemorySampler(threading.Thread):
    """Samples tree_memory(pid) until stopped: [(monotonic time, memory)]."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.samples = []

    def run(self):
        while not self._done.is_set():
            self.samples.append((time.monotonic(), tree_memory(self._pid)))
            self._done.wait(SAMPLE_SECONDS)

    def stop(self):
        self._done.set()
        self.join()

    def peak(self, key: str = "pss", start: float = float("-inf"),
             end: float = float("inf")) -> int:
        return max((memory[key] for t, memory in self.samples if start <= t <= end),
                   default=0)

    def peaks_gib(self, start: float = float("-inf"), end: float = float("inf")
                  ) -> Dict[str, float]:
        """{"peak_pss_gib", "peak_rss_gib", "largest_process_rss_gib"}."""
        return {f"{name}_gib": self.peak(key, start, end) / GIB
                for name, key in (("peak_pss", "pss"), ("peak_rss", "rss"),
                                  ("largest_process_rss", "largest_rss"))}


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
    components = [{"component": name, "seconds": seconds, **sampler.peaks_gib(start, end)}
                  for name, start, end, seconds in windows if seconds >= 0.5]
    with open(os.path.join(root, OUTPUT_FILE), "w") as f:
        f.writelines(f"{when}\t{text}\n" for when, text in lines)
    bare = {} if stopped else bare_costs(label, root, lines)
    if stopped:
        running = [(m.group(1), when) for when, text in lines
                   for m in [_RUNNING.match(text)] if m]
        finished = {name for name, *_ in windows}
        components += [{"component": name, "seconds": None, "stopped": True,
                        **sampler.peaks_gib(since)}
                       for name, since in running[-1:] if name not in finished]
    return {"sizes": sizes, "generate_seconds": generate_seconds,
            "wall_seconds": wall, **sampler.peaks_gib(),
            "stopped_after_seconds": timeout_seconds if stopped else None,
            "components": components, "bare_seconds": bare,
            "data_bytes": sum(os.path.getsize(os.path.join(data_dir, f))
                              for f in os.listdir(data_dir))}


def bare_costs(label: str, root: str, lines) -> Dict[str, float]:
    """bench/costs.py's bare costs of the run under `root`, given its
    timestamped output lines."""
    print(f"[{label}] measuring the bare costs (bench/costs.py) ...", flush=True)
    return costs.bare_costs(os.path.join(root, "data"), os.path.join(root, "run"), {
        name: [text for when, text in lines if start <= when <= end]
        for name, start, end, _ in component_windows(lines)})


def saved_output(root: str):
    """The timestamped output lines run_size saved under `root`."""
    with open(os.path.join(root, OUTPUT_FILE)) as f:
        return [(float(when), text) for when, text in
                (line.rstrip("\n").split("\t", 1) for line in f)]


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
        memory = _memory_cell(found[0])
        if found[0].get("stopped"):
            return f"stopped / >= {memory}"
        return f"{found[0]['seconds']:.0f} s / {memory}"

    header = "| component | " + " | ".join(
        f"{label}: time / peak PSS (RSS summed)" for label in labels) + " |"
    rows = [header, "|---|" + "---|" * len(labels)]
    rows += [f"| {name} | " + " | ".join(cell(label, name) for label in labels) + " |"
             for name in names]
    rows.append("| **whole run** | " + " | ".join(
        f"**{results[label]['wall_seconds']:.0f} s / {_memory_cell(results[label])}**"
        for label in labels) + " |")
    sizes = "; ".join(
        f"{label}: {r['sizes']['num_users']:,} users, {r['sizes']['num_items']:,} "
        f"items, {r['sizes']['num_interactions']:,} interactions "
        f"({r['data_bytes'] / 2**20:.0f} MiB of CSV, generated in "
        f"{r['generate_seconds']:.0f} s)" for label, r in
        ((label, results[label]) for label in labels))
    verdicts = [
        f"- {label}: peak memory {results[label]['peak_pss_gib']:.2f} GiB (PSS summed "
        f"over the run's processes) vs target <= {target:.0f} GiB: "
        f"{'met' if results[label]['peak_pss_gib'] <= target else 'NOT met'}; "
        f"RSS summed {results[label]['peak_rss_gib']:.2f} GiB, largest single process "
        f"{results[label]['largest_process_rss_gib']:.2f} GiB"
        + (f" (the run was stopped after {results[label]['stopped_after_seconds'] / 60:.0f}"
           " min, before it completed)" if results[label].get("stopped_after_seconds")
           else "")
        for label, target in TARGET_PEAK_GIB.items() if label in results]
    return "\n".join([sizes + ".", "", *rows, "", *verdicts, "", MEMORY_NOTE])


def cost_markdown(results: Dict[str, Dict]) -> str:
    """Each component's time beside its bare cost (bench/costs.py) and the
    ratio, for the sizes measured with costs; "" if none was."""
    labels = [label for label in SIZES if results.get(label, {}).get("bare_seconds")]
    if not labels:
        return ""
    names = [name for name in costs.COMPONENTS
             if any(name in results[label]["bare_seconds"] for label in labels)]

    def cell(label, name):
        bare = results[label]["bare_seconds"].get(name)
        found = [c["seconds"] for c in results[label]["components"] if c["component"] == name]
        if not bare or not found or found[0] is None:
            return "-"
        return f"{found[0]:.0f} s / {bare:.1f} s = {found[0] / bare:.1f}x"

    rows = ["| component | " + " | ".join(f"{label}: run / bare = ratio" for label in labels)
            + " |", "|---|" + "---|" * len(labels)]
    rows += [f"| {name} | " + " | ".join(cell(label, name) for label in labels) + " |"
             for name in names]
    over = [f"{name} at {label} ({cell(label, name).split('= ')[1]})"
            for label in labels for name in names
            if cell(label, name) != "-"
            and float(cell(label, name).split("= ")[1][:-1]) > TARGET_COST_RATIO]
    verdict = (f"- target: no component above {TARGET_COST_RATIO:g}x its bare cost: "
               + ("met" if not over else "not met: " + ", ".join(over)))
    return "\n".join(["Cost model: each component's time in the run beside the bare "
                      "cost of its work, measured right after the run on the run's own "
                      "data (bench/costs.py says what bare is per component).", "",
                      *rows, "", verdict])


MEMORY_NOTE = (
    "Memory: PSS (proportional set size) summed over the run's processes, "
    "sampled every 0.25 s, is what the run holds: a page that two processes "
    "share (TensorFlow's libraries, mapped by the run's main process and by "
    "the component's own process) counts once. RSS summed counts such pages "
    "once per process.")


def _memory_cell(measured: Dict) -> str:
    if "peak_pss_gib" not in measured:  # saved before PSS was sampled
        return f"RSS {measured['peak_rss_gib']:.2f} GiB"
    return f"{measured['peak_pss_gib']:.2f} ({measured['peak_rss_gib']:.2f}) GiB"


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
    parser.add_argument("--costs-only", action="store_true",
                        help="no runs: measure the bare costs again for the runs "
                             "of --sizes left under --root")
    args = parser.parse_args(argv)

    saved_path = os.path.join(RESULTS_DIR, "scale.json")
    saved = {}
    if os.path.exists(saved_path):
        with open(saved_path) as f:
            saved = json.load(f).get("results", {})
    if args.report_only:
        results = saved
    elif args.costs_only:
        results = dict(saved)
        for label in args.sizes:
            root = os.path.join(args.root, label)
            results[label]["bare_seconds"] = bare_costs(label, root, saved_output(root))
    else:
        # A run of some sizes keeps the saved results of the others.
        timeout = args.timeout_minutes * 60 if args.timeout_minutes else None
        results = dict(saved)
        for label in args.sizes:
            results[label] = run_size(label, SIZES[label], os.path.join(args.root, label),
                                      args.run_arg, timeout)
            results[label]["date"] = datetime.date.today().isoformat()
    dates = ", ".join(f"{label} on {results[label].get('date', '?')}"
                      for label in SIZES if label in results)
    text = "\n".join([
        markdown(results), "", *([cost_markdown(results), ""] if cost_markdown(results) else []),
        f"Generated by `make bench-scale` ({platform.node() or 'host'}, "
        f"{os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB): "
        f"{dates}; one training epoch per model, in-memory Beam."])
    print("\n" + text)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "scale.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(RESULTS_DIR, "scale.json"), "w") as f:
        json.dump({"results": results}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
