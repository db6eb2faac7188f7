"""Data errors, the fast check of a configured dataset, and the native format.

`DataError` is how every data problem reaches the user (the CLI prints it as
one line). `validate_dataset(config, data_dir)` checks, before the pipeline
starts, that every table a dataset config names exists, is non-empty, is in
the configured format and has the configured columns (any order, extra
columns ignored); reading the tables is `tables.py`'s job, typing their rows
`ingest.py`'s.

The native format is what `movielens.py` and `synthetic.py` write and
datasets/movielens-100k.yaml and datasets/synthetic.yaml describe: a
directory of three CSV files. The functions below that read it with fixed
columns (`validate_dataset_dir`, `read_table`) serve the tools that read
those files directly (baselines, the CLI's lookups); the pipeline reads any
dataset through its config. The native contract:

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
from typing import Dict, Iterable, Iterator, Mapping, Sequence, Tuple, Union

INTERACTIONS_FILE = "interactions.csv"
USERS_FILE = "users.csv"
ITEMS_FILE = "items.csv"

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
ITEM_COLUMNS = ("item_id", "title", "release_year", "genres")

GENRE_SEPARATOR = "|"

# File name -> expected header, in the order the files are checked.
TABLES: Dict[str, Tuple[str, ...]] = {
    INTERACTIONS_FILE: INTERACTION_COLUMNS,
    USERS_FILE: USER_COLUMNS,
    ITEMS_FILE: ITEM_COLUMNS,
}

_ENCODING = "utf-8"
_BOM = "\ufeff"
# "\n" rather than the csv default "\r\n": the files are meant for Unix tools
# and line-based readers; the reader accepts both.
_LINE_TERMINATOR = "\n"

Row = Union[Mapping[str, object], Sequence[object]]


class DataError(ValueError):
    """Bad input data.

    The message names the file (full path) and, where it applies, the line
    (1-based, the header is line 1) and the column, and says how to fix it.
    It is a ValueError so callers that treat bad arguments alike need nothing
    special; it is its own class so the CLI can print it without a traceback.
    """


def location(path: str, line: int = None, column: str = None) -> str:
    """``/abs/file.csv, line 7, column 'rating'``: the prefix of every error."""
    where = os.path.abspath(path)
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column '{column}'"
    return where


# --------------------------------------------------------------------------
# Checking a configured dataset


def validate_dataset(config, data_dir: str) -> Dict[str, str]:
    """Checks the tables of a dataset config in `data_dir`, fast.

    Every configured file must exist (all missing ones are reported at
    once), be non-empty, be readable in the configured format, have the
    configured columns (a misspelled one comes with the close match) and at
    least one data row. Only the header (CSV), the footer (Parquet) or the
    first records (TFRecord) are read; row-level problems are ExampleGen's.

    config: a dataset_config.DatasetConfig.
    Returns {table: absolute path} for 'interactions', 'users' and 'items'.
    Raises DataError naming the file and what to do.
    """
    from tfx_recsys.data import tables

    directory = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise DataError(
            f"{directory}: the data directory {what}. Pass the directory that "
            f"holds the tables the dataset config {config.name!r} names.")
    sources = tables.sources(config, directory)
    missing = [s for s in sources.values() if not os.path.exists(s.path)]
    if missing:
        raise DataError(
            f"{directory}: missing "
            + ", ".join(f"{s.relative_path} ({s.table}.path)" for s in missing)
            + f". The dataset config {config.name!r} names these files relative "
            "to the data directory; put them there or fix the paths.")
    for source in sources.values():
        tables.check_table(source)
    return {table: source.path for table, source in sources.items()}


# --------------------------------------------------------------------------
# Checking a native directory (fixed columns)


def validate_dataset_dir(path: str) -> Dict[str, str]:
    """Checks that `path` holds the three native files with the right headers.

    Only the structure is checked (existence, header, at least one data row),
    not every row: that is cheap enough to run before starting a long
    pipeline, and row errors are reported by `read_table` with their line
    numbers anyway.

    Returns {file name: absolute path}, keyed by INTERACTIONS_FILE,
    USERS_FILE and ITEMS_FILE. Raises DataError on the first problem.
    """
    directory = os.path.abspath(os.fspath(path))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise DataError(
            f"{directory}: the dataset directory {what}. Pass a directory "
            f"holding {', '.join(TABLES)} (see the native format in "
            "tfx_recsys/data/native.py).")
    paths = {name: os.path.join(directory, name) for name in TABLES}
    _check_files_present(directory, paths)
    for name, columns in TABLES.items():
        _check_not_empty(paths[name])
        with open(paths[name], "rb") as f:
            reader = csv.reader(_decoded_lines(paths[name], f))
            _check_header(paths[name], _read_header(paths[name], reader),
                          columns)
            _check_has_rows(paths[name], reader, columns)
    return paths


def _check_files_present(directory: str, paths: Mapping[str, str]) -> None:
    """Reports every missing file at once: fixing them one by one is tedious."""
    missing = [name for name, p in paths.items() if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{directory}: missing {', '.join(missing)}. A dataset directory "
            f"needs all of {', '.join(paths)}, each with a header row.")


def _check_not_empty(path: str) -> None:
    if os.path.getsize(path) == 0:
        raise DataError(
            f"{location(path)}: the file is empty. It needs at least the "
            f"header row: {','.join(TABLES[os.path.basename(path)])}.")


def _check_has_rows(path: str, reader, columns: Sequence[str]) -> None:
    """A table with only its header is as useless as a missing one: every
    interaction needs its user's and item's rows."""
    for _ in _data_rows(path, reader, tuple(columns)):
        return
    raise DataError(
        f"{location(path)}: the file has a header but no data rows. Add the "
        "rows, or check that the right directory was given.")


def _read_header(path: str, reader) -> list:
    """The first row of `reader`; DataError if there is none."""
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise _unreadable(path, 1, e) from None
    if not header:
        raise DataError(
            f"{location(path, 1)}: no header row. The first line must name "
            "the columns.")
    return header


def _check_header(path: str, header: Sequence[str],
                  expected: Sequence[str]) -> None:
    """The header must be exactly `expected`, in that order.

    Order matters because other tools may read the files by position; the
    message names the missing and unexpected columns so the fix is obvious.
    """
    header = [h.strip() for h in header]
    if list(header) == list(expected):
        return
    missing = [c for c in expected if c not in header]
    unexpected = [c for c in header if c not in expected]
    problems = []
    if missing:
        problems.append("missing column(s) " + ", ".join(f"'{c}'" for c in missing))
    if unexpected:
        problems.append("unexpected column(s) "
                        + ", ".join(f"'{c}'" for c in unexpected))
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        problems.append("duplicated column(s) "
                        + ", ".join(f"'{c}'" for c in duplicated))
    if not problems:
        problems.append("the columns are in a different order")
    raise DataError(
        f"{location(path, 1)}: wrong header: {'; '.join(problems)}. The "
        f"header must be exactly: {','.join(expected)} (found: "
        f"{','.join(header)}).")


# --------------------------------------------------------------------------
# Reading


def read_table(path: str, columns: Sequence[str]
               ) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Yields (line number, row) for each data row of one native CSV file.

    `row` maps each of `columns` to its raw string value; typing the values
    is the caller's job (it knows which column is what). The line number is
    where the row starts in the file (1-based, header = line 1), so it stays
    right when a quoted value spans lines. Blank lines are skipped.

    Raises DataError, naming the file and line, for a wrong header, a row
    with the wrong number of fields, or text that is not valid CSV/UTF-8.
    """
    path = os.fspath(path)
    columns = tuple(columns)
    with open(path, "rb") as f:
        reader = csv.reader(_decoded_lines(path, f))
        _check_header(path, _read_header(path, reader), columns)
        yield from _data_rows(path, reader, columns)


def _decoded_lines(path: str, binary_file) -> Iterator[str]:
    """The file's lines as text, decoded one line at a time.

    Decoding per line (rather than through a text-mode file, which decodes
    in blocks) is what lets an encoding error name its line. A leading
    byte-order mark, which spreadsheet exports often add, is dropped: it
    would otherwise stick to the first column name.
    """
    for number, raw in enumerate(binary_file, start=1):
        try:
            line = raw.decode(_ENCODING)
        except UnicodeDecodeError as e:
            raise DataError(
                f"{location(path, number)}: not valid UTF-8 ({e.reason} at "
                f"byte {e.start} of the line). The file must be UTF-8; "
                "re-save it with that encoding.") from None
        yield line[1:] if number == 1 and line.startswith(_BOM) else line


def _data_rows(path: str, reader, columns: Tuple[str, ...]
               ) -> Iterator[Tuple[int, Dict[str, str]]]:
    next_line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise _unreadable(path, next_line, e) from None
        line, next_line = next_line, reader.line_num + 1
        if not fields:
            continue
        if len(fields) != len(columns):
            raise _wrong_field_count(path, line, fields, columns)
        yield line, dict(zip(columns, fields))


def _wrong_field_count(path: str, line: int, fields: Sequence[str],
                       columns: Sequence[str]) -> DataError:
    return DataError(
        f"{location(path, line)}: expected {len(columns)} fields "
        f"({','.join(columns)}), found {len(fields)}. A value containing a "
        "comma must be quoted (\"like, this\"); an unknown value must still "
        "have its (empty) field.")


def _unreadable(path: str, line: int, error: csv.Error) -> DataError:
    return DataError(
        f"{location(path, line)}: cannot be read as CSV ({error}). Check the "
        "quoting around that line.")


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

    Returns {file name: absolute path}, like `validate_dataset_dir`.
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
