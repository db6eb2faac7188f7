"""Property: whatever the quoting, delimiter, encoding, duplicates and broken
lines of a CSV file, ingestion accounts for every row.

Hypothesis writes interactions files with csv.writer (random quoting style,
delimiter, line ending, encoding and byte-order mark), repeats some rows,
and inserts broken lines (a quote never closed, a wrong field count, a bad
value, blank lines). For each file, read through `ingest.parse_table` and
de-duplicated per user as ExampleGen does:

* every physical line is a row, a blank line or the continuation of a quoted
  value (header + rows + blank + continuation = lines in the file);
* every row written on one line is yielded at its own line number, accepted
  or rejected: no quote swallows it silently;
* rows read = accepted + rejected + duplicates removed (check_accounting);
* without broken lines and in the configured encoding, exactly the written
  rows come back (ids trimmed) and the duplicates counted are the repeats.
"""

import collections
import csv
import dataclasses
import io
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfx_recsys import dataset_config as dc
from tfx_recsys.data import ingest, tables

NOW = 1_700_000_000
SYNTHETIC = dc.load(dc.builtin_path("synthetic"))
HEADER = ("user_id", "item_id", "rating", "timestamp")
# Characters every encoding below can write, and the ones CSV must quote.
ALPHABET = "ab12 ,;|\t\"'\néßü"

ids = st.text(alphabet=ALPHABET, min_size=1, max_size=6)
rows = st.lists(st.tuples(ids, ids, st.sampled_from([1.0, 2.5, 4.0, 5.0]),
                          st.integers(0, NOW)), min_size=1, max_size=25)
BROKEN = ("blank", "wrong_field_count", "bad_timestamp", "unbalanced_quote")


@st.composite
def csv_files(draw):
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    written = draw(st.sampled_from(["utf-8", "latin-1", "cp1252"]))
    configured = draw(st.sampled_from([written, written, "utf-8"]))
    data_rows = draw(rows)
    # Exact repeats, inserted anywhere.
    for _ in range(draw(st.integers(0, 5))):
        data_rows.insert(draw(st.integers(0, len(data_rows))),
                         draw(st.sampled_from(data_rows)))
    broken = draw(st.lists(st.tuples(st.integers(0, len(data_rows)),
                                     st.sampled_from(BROKEN)), max_size=3))
    return dict(delimiter=delimiter, written=written, configured=configured,
                rows=data_rows, broken=broken,
                quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL,
                                              csv.QUOTE_NONNUMERIC])),
                terminator=draw(st.sampled_from(["\n", "\r\n"])),
                bom=written == "utf-8" and draw(st.booleans()))


def broken_line(kind, d):
    return {"blank": "",
            "wrong_field_count": f"u{d}i",
            "bad_timestamp": f"u{d}i{d}4{d}yesterday",
            "unbalanced_quote": f'u{d}"i, never closed{d}4{d}1'}[kind]


def write_file(spec, path):
    """Writes the file; returns {row index: its first line} of the rows
    written, and which of them span one line only."""
    d, terminator = spec["delimiter"], spec["terminator"]
    inserts = collections.defaultdict(list)
    for position, kind in spec["broken"]:
        inserts[position].append(broken_line(kind, d))
    text, line, first_lines = io.StringIO(), 1, {}
    writer = csv.writer(text, delimiter=d, quoting=spec["quoting"], lineterminator=terminator)
    writer.writerow(HEADER)
    for index, row in enumerate(spec["rows"] + [None]):
        for extra in inserts[index]:
            text.write(extra + terminator)
            line += 1
        if row is None:
            break
        first_lines[index] = line + 1
        writer.writerow(row)
        line += 1 + sum(str(v).count("\n") for v in row)
    content = ("\ufeff" if spec["bom"] else "") + text.getvalue()
    with open(path, "wb") as f:
        f.write(content.encode(spec["written"]))
    one_line = {i for i, row in enumerate(spec["rows"]) if not any("\n" in str(v) for v in row)}
    return first_lines, one_line


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(csv_files())
def test_every_row_is_accounted_for(spec):
    config = dataclasses.replace(SYNTHETIC, csv=dc.Csv(spec["delimiter"], spec["configured"]))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "interactions.csv")
        first_lines, one_line = write_file(spec, path)
        with open(path, "rb") as f:
            physical_lines = f.read().count(b"\n")
        stats = tables.ReadStats()
        read = list(ingest.parse_table(config, "interactions", directory, now=NOW,
                                       stats=stats))

    numbers = [n for n, _ in read]
    assert numbers == sorted(set(numbers))
    # Every physical line is accounted for.
    assert physical_lines == (stats.header_lines + len(read) + stats.blank_lines
                              + stats.continuation_lines)
    # No row written on one line disappears into another one's value.
    assert {first_lines[i] for i in one_line} <= set(numbers)

    rejected = [r for _, r in read if isinstance(r, ingest.Reject)]
    by_user = collections.defaultdict(list)
    for number, row in read:
        if not isinstance(row, ingest.Reject):
            by_user[row["user_id"]].append((number, row))
    kept, duplicates = [], []
    for user_rows in by_user.values():
        user_kept, user_duplicates = ingest.drop_duplicates(user_rows, config)
        kept += user_kept
        duplicates += user_duplicates
    report = ingest.build_report(config, rejected + duplicates,
                                 {"interactions": (len(read), 0)}, {"train": len(kept)},
                                 {"interactions": len(kept), "users": 0, "items": 0})
    ingest.check_accounting(report)
    entry = report["tables"]["interactions"]
    assert entry["rows"] == entry["accepted"] + entry["rejected"] + entry["duplicates"]

    if not spec["broken"] and spec["written"] == spec["configured"]:
        valid = [(u.strip(), i.strip(), float(r), t) for u, i, r, t in spec["rows"]
                 if u.strip() and i.strip()]
        got = [(r["user_id"], r["item_id"], r["rating"], r["timestamp"]) for _, r in kept]
        if len(one_line) == len(spec["rows"]):     # no value with a line break
            assert sorted(got) == sorted(set(valid))
            assert len(duplicates) == len(valid) - len(set(valid))
            assert len(rejected) == len(spec["rows"]) - len(valid)
