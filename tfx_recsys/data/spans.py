"""Spans: data that arrives in numbered batches, and which of them a run reads.

A table path in the dataset config may hold TFX's `{SPAN}` pattern, e.g.
`spans/{SPAN}/interactions.csv`; each span's file sits where the pattern's
digits say. A run reads one span, the *target* (the latest, or one asked
for), and with `window: W` the interactions of the W spans up to it (those
that exist); the split stays temporal inside them. A user or item table is
either static (no pattern) or per span, and then the file of the latest span
up to the target is the table (a span's table is a full snapshot: latest
wins).

No TensorFlow here: the ExampleGen driver (for the cache key), its executor
(for the rows) and the CLI resolve spans with the same function, `select`.
"""

import dataclasses
import glob
import os
import re
from typing import Dict, Optional, Tuple

from tfx_recsys import dataset_config as dc
from tfx_recsys.errors import DataError

TABLES = ("interactions", "users", "items")


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """What one run reads.

    span: the target span (0 when the config has no spans).
    spans: the interactions' spans read, oldest first (the window).
    files: {table: ((span, path relative to the data directory), ...)};
      interactions one file per span in `spans`, users and items one file
      (span None for a static table).
    """

    span: int
    spans: Tuple[int, ...]
    files: Dict[str, Tuple[Tuple[Optional[int], str], ...]]

    def configs(self, config: dc.DatasetConfig):
        """((span, DatasetConfig with every path one file), ...), one per
        interactions file: what the readers take, unchanged for a config
        without spans."""
        (_, users), = self.files["users"]
        (_, items), = self.files["items"]
        return tuple(
            (span, dataclasses.replace(
                config,
                interactions=dataclasses.replace(config.interactions, path=path),
                users=dataclasses.replace(config.users, path=users),
                items=dataclasses.replace(config.items, path=items)))
            for span, path in self.files["interactions"])

    def describe(self, table: str) -> str:
        """The table's file(s), for reports: one path, or a comma list."""
        return ", ".join(path for _, path in self.files[table])


def has_spans(config: dc.DatasetConfig) -> bool:
    return dc.SPAN_PATTERN in config.interactions.path


def span_path(pattern: str, span: int) -> str:
    """The path of one span: the pattern with its digits filled in."""
    return pattern.replace(dc.SPAN_PATTERN, str(span))


def available(data_dir: str, pattern: str) -> Dict[int, str]:
    """{span: relative path} of every file matching `pattern` in data_dir.

    Span digits match TFX's rule (one or more digits); two files for one span
    (e.g. `3` and `03`) are an error, as the span would be ambiguous.
    """
    prefix, suffix = pattern.split(dc.SPAN_PATTERN)
    matcher = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + r"\Z")
    directory = os.path.abspath(os.fspath(data_dir))
    found: Dict[int, str] = {}
    for path in sorted(glob.glob(os.path.join(directory, glob.escape(prefix) + "*"
                                              + glob.escape(suffix)))):
        relative = os.path.relpath(path, directory)
        match = matcher.match(relative.replace(os.sep, "/"))
        if not match:
            continue
        span = int(match.group(1))
        if span in found:
            raise DataError(f"{directory}: {found[span]} and {relative} are both span "
                            f"{span} of {pattern}; keep one.")
        found[span] = relative
    return found


def select(config: dc.DatasetConfig, data_dir: str,
           span: Optional[int] = None) -> SpanSelection:
    """The files a run reads: the latest span (or `span`), its window.

    Raises DataError naming the pattern and the spans found when the span
    asked for, or any span, is missing, or a per-span table has no file at or
    before the target.
    """
    if not has_spans(config):
        if span not in (None, 0):
            raise DataError(f"--span {span}: the dataset config {config.name!r} has no "
                            f"spans (no {dc.SPAN_PATTERN} in interactions.path).")
        return SpanSelection(0, (0,), {
            table: ((0 if table == "interactions" else None, getattr(config, table).path),)
            for table in TABLES})
    pattern = config.interactions.path
    found = available(data_dir, pattern)
    if not found:
        raise DataError(f"{os.path.abspath(data_dir)}: no file matches interactions.path "
                        f"{pattern!r} (the span is the digits in place of "
                        f"{dc.SPAN_PATTERN}).")
    target = max(found) if span is None else span
    if target not in found:
        raise DataError(f"--span {target}: no file {span_path(pattern, target)} in "
                        f"{os.path.abspath(data_dir)}; spans found: {_ranges(found)}.")
    window = tuple(s for s in sorted(found) if target - config.window < s <= target)
    files = {"interactions": tuple((s, found[s]) for s in window)}
    for table in ("users", "items"):
        table_pattern = getattr(config, table).path
        if dc.SPAN_PATTERN not in table_pattern:
            files[table] = ((None, table_pattern),)
            continue
        earlier = [s for s in available(data_dir, table_pattern) if s <= target]
        if not earlier:
            raise DataError(f"{os.path.abspath(data_dir)}: no {table} table for span "
                            f"{target}: no file matching {table_pattern!r} at or before "
                            "it.")
        latest = max(earlier)
        files[table] = ((latest, span_path(table_pattern, latest)),)
    return SpanSelection(target, window, files)


def _ranges(spans) -> str:
    """1, 2, 3, 5 -> '1-3, 5'."""
    ordered, parts = sorted(spans), []
    start = previous = ordered[0]
    for span in ordered[1:] + [None]:
        if span is not None and span == previous + 1:
            previous = span
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if span is not None:
            start = previous = span
    return ", ".join(parts)
