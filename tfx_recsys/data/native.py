"""The native format: the three CSV files `movielens.py` and `synthetic.py`
write.

datasets/movielens-100k.yaml and datasets/synthetic.yaml describe these
files; like any dataset they are read through their config by
`tables.py` (there is no second reader here). The native contract:

* ``interactions.csv``: ``user_id,item_id,rating,timestamp`` -- ids are
  strings, rating a number, timestamp integer seconds since the epoch;
* ``users.csv``: ``user_id,age,gender,occupation,zip_code`` -- age an integer;
* ``items.csv``: ``item_id,title,release_year,genres`` -- release_year an
  integer or empty when unknown; genres joined with ``|``, possibly empty.

Files are UTF-8 with a header row, comma-separated and quoted the way the
``csv`` module does by default. Only the standard library is used here: the
CLI imports this module and must start fast.
"""

import csv
import os
from collections import abc
from typing import Dict, Iterable, Mapping, Sequence, Tuple, Union


INTERACTIONS_FILE = "interactions.csv"
USERS_FILE = "users.csv"
ITEMS_FILE = "items.csv"

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = ("item_id", "title", "release_year", "genres")

GENRE_SEPARATOR = "|"

# File name -> header, in the order the files are written.
TABLES: Dict[str, Tuple[str, ...]] = {
    INTERACTIONS_FILE: INTERACTION_COLUMNS,
    USERS_FILE: USER_COLUMNS,
    ITEMS_FILE: ITEM_COLUMNS,
}

_ENCODING = "utf-8"
# "\n" rather than the csv default "\r\n": the files are meant for Unix tools
# and line-based readers; the reader accepts both.
_LINE_TERMINATOR = "\n"

Row = Union[Mapping[str, object], Sequence[object]]


# --------------------------------------------------------------------------
# Writing


def write_dataset(path: str, interactions: Iterable[Row], users: Iterable[Row],
                  items: Iterable[Row]) -> Dict[str, str]:
    """Writes the three native files into directory `path` (created if needed).

    Each table is any iterable of rows (a generator is fine, nothing is held
    in memory). A row is either a mapping keyed by the column names or a
    sequence in column order. Values are written with `str()`, except None
    (written empty) and, in the genres column, a list or tuple of genre
    names (joined with GENRE_SEPARATOR).

    Each file is written under a temporary name and renamed into place, so a
    crash never leaves a truncated file that looks complete. Callers that need
    the directory as a whole to appear atomically (the MovieLens cache) write
    into a staging directory and rename that.

    Returns {file name: absolute path}, keyed by INTERACTIONS_FILE,
    USERS_FILE and ITEMS_FILE.
    """
    directory = os.path.abspath(os.fspath(path))
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, rows in ((INTERACTIONS_FILE, interactions), (USERS_FILE, users),
                       (ITEMS_FILE, items)):
        paths[name] = os.path.join(directory, name)
        _write_table(paths[name], TABLES[name], rows)
    return paths


def _write_table(path: str, columns: Tuple[str, ...],
                 rows: Iterable[Row]) -> None:
    partial = path + ".partial"
    genres_index = columns.index("genres") if "genres" in columns else None
    with open(partial, "w", newline="", encoding=_ENCODING) as f:
        writer = csv.writer(f, lineterminator=_LINE_TERMINATOR)
        writer.writerow(columns)
        writer.writerows(_format_row(row, columns, genres_index) for row in rows)
    os.replace(partial, path)


def _format_row(row: Row, columns: Tuple[str, ...],
                genres_index: int = None) -> Sequence[object]:
    """One row as values in column order, for csv.writer.

    csv.writer itself writes None as an empty field and other values with
    str(), so a plain tuple of the right length passes through untouched:
    that keeps writing a million rows fast.
    """
    if isinstance(row, dict) or not isinstance(row, (tuple, list)):
        if isinstance(row, abc.Mapping):
            row = [row[c] for c in columns]
        else:
            row = list(row)
    if len(row) != len(columns):
        raise ValueError(f"a row needs {len(columns)} values "
                         f"({','.join(columns)}), got {row!r}")
    if genres_index is not None:
        row = list(row)
        row[genres_index] = format_genres(row[genres_index])
    return row


def format_genres(genres: Union[str, Sequence[str], None]) -> str:
    """Genre names as the genres field: joined with GENRE_SEPARATOR.

    A string is taken as already formatted. A name that contains the
    separator would silently become two genres, so it is refused.
    """
    if genres is None:
        return ""
    if isinstance(genres, str):
        return genres
    for genre in genres:
        if GENRE_SEPARATOR in genre:
            raise ValueError(f"genre name {genre!r} contains the separator "
                             f"{GENRE_SEPARATOR!r}")
    return GENRE_SEPARATOR.join(genres)


# --------------------------------------------------------------------------
# Spans: a dataset replayed as data that arrives in batches

SPANS_DIR = "spans"
# The dataset config's interactions.path for what write_spans writes.
SPAN_INTERACTIONS_PATH = f"{SPANS_DIR}/{{SPAN}}/{INTERACTIONS_FILE}"


def write_spans(source_dir: str, out_dir: str, num_spans: int) -> list:
    """Replays a native dataset as `num_spans` spans by global time.

    The interactions, ordered by timestamp (then file order), are cut into
    num_spans runs of equal count (a timestamp shared by two runs stays in
    the earlier) and written as out_dir/spans/<k>/interactions.csv, k = 1..
    num_spans; users.csv and items.csv are copied as static tables (every
    item's content is known from the start, as a catalogue is).

    Returns the last timestamp of each span.
    """
    if num_spans < 1:
        raise ValueError(f"num_spans must be at least 1, got {num_spans}")
    with open(os.path.join(source_dir, INTERACTIONS_FILE), newline="",
              encoding=_ENCODING) as f:
        reader = csv.reader(f)
        header = next(reader)
        timestamp = header.index("timestamp")
        rows = sorted(enumerate(reader), key=lambda pair: (int(pair[1][timestamp]),
                                                           pair[0]))
    if len(rows) < num_spans:
        raise ValueError(f"{len(rows)} interactions cannot make {num_spans} spans")
    ends, start = [], 0
    for k in range(1, num_spans + 1):
        end = len(rows) * k // num_spans
        while 0 < end < len(rows) and rows[end][1][timestamp] == rows[end - 1][1][timestamp]:
            end += 1
        span_rows = [row for _, row in rows[start:end]]
        _write_table(os.path.join(_made(out_dir, SPANS_DIR, str(k)), INTERACTIONS_FILE),
                     tuple(header), span_rows)
        ends.append(int(span_rows[-1][timestamp]) if span_rows else None)
        start = max(start, end)
    for name in (USERS_FILE, ITEMS_FILE):
        with open(os.path.join(source_dir, name), newline="", encoding=_ENCODING) as f:
            reader = csv.reader(f)
            columns = tuple(next(reader))
            _write_table(os.path.join(_made(out_dir), name), columns, list(reader))
    return ends


def _made(*parts: str) -> str:
    path = os.path.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path
