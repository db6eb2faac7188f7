"""MovieLens-100K in the native format, fetched from the recbole wheel on PyPI.

Why PyPI: the recbole 1.2.1 wheel ships ML-100K as three small tab-separated
"atomic" files, and PyPI is reachable wherever `pip install` works, which is
not true of the GroupLens site (and GroupLens' zip has no checksum we could
pin). The wheel's sha256 is pinned, so the data is exactly what was checked.
Only the three ML-100K files are read out of the wheel; recbole itself is
never installed or imported.

What the atomic files look like (recbole 1.2.1; checked by hand):

* headers carry ``name:type`` suffixes (``user_id:token``,
  ``timestamp:float``), and the items file names its columns
  ``movie_title`` and ``class``;
* ``ml-100k.inter``: 100,000 rows, ratings 1-5, integer timestamps, not
  in time order (kept in file order here);
* ``ml-100k.user``: 943 users, ages 7-73, zip codes are strings (leading
  zeros such as ``01002``, Canadian codes such as ``T8H1N``);
* ``ml-100k.item``: 1,682 items; titles contain commas (about 400, e.g.
  ``Usual Suspects, The``) and non-ASCII UTF-8 (``Misérables, Les``); 22
  titles appear under two item ids (MovieLens itself has these duplicates;
  every item is kept); genres are space-separated (``Children's``,
  ``Film-Noir``, ``Sci-Fi``). Two broken rows: item 267 is the MovieLens
  placeholder (title and release_year ``unkonwn``, genre ``unknown``), and
  item 1412 has release_year ``V`` because its title ends in ``(1995)``
  (the original title was ``... (1995) (V)``).

The conversion therefore: strips the type suffixes and maps columns by name;
writes release_year empty when it is not a year, unless the title ends in
``(YYYY)``, in which case that year is used and removed from the title; drops
the pseudo-genre ``unknown`` (an empty genres field already means unknown);
joins genres with ``|``; and keeps every interaction, user and item.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tfx_recsys.data import native
from tfx_recsys.errors import DataError, UserError, location

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = (
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
_WHEEL_GLOB_PREFIX = "recbole-1.2.1-"

# Atomic file name (as extracted, flat) -> its path inside the wheel.
_ATOMIC_DIR_IN_WHEEL = "recbole/dataset_example/ml-100k"
INTER_FILE = "ml-100k.inter"
USER_FILE = "ml-100k.user"
ITEM_FILE = "ml-100k.item"
ATOMIC_FILES = (INTER_FILE, USER_FILE, ITEM_FILE)

DATASET_DIRNAME = "movielens-100k"
COMPLETE_MARKER = ".complete"
CACHE_ENV_VAR = "RECSYS_CACHE_DIR"

# Native column -> recbole column name (after the ":type" suffix is removed).
_INTERACTION_SOURCE = {"user_id": "user_id", "item_id": "item_id",
                       "rating": "rating", "timestamp": "timestamp"}
_USER_SOURCE = {c: c for c in native.USER_COLUMNS}
_ITEM_SOURCE = {"item_id": "item_id", "title": "movie_title",
                "release_year": "release_year", "genres": "class"}

_UNKNOWN_GENRE = "unknown"
_YEAR = re.compile(r"\d{4}")
_TITLE_WITH_YEAR = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)$")
_STDERR_TAIL_LINES = 20


class FetchError(UserError, RuntimeError):
    """Downloading the dataset failed (no network, no pip, PyPI down...)."""


# --------------------------------------------------------------------------
# Fetching


def default_cache_dir() -> str:
    """$RECSYS_CACHE_DIR, else $XDG_CACHE_HOME/tfx-recsys, else ~/.cache/tfx-recsys."""
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(xdg, "tfx-recsys"))


def fetch_movielens_100k(cache_dir: Optional[str] = None,
                         force: bool = False) -> str:
    """Returns a native-format directory holding MovieLens-100K.

    A complete copy in `<cache_dir>/movielens-100k` (its marker file holds
    the pinned wheel hash) is returned as is, without touching the network,
    unless `force`. Otherwise the recbole wheel is downloaded with pip, its
    sha256 checked, the three ML-100K files extracted and converted in a
    staging directory next to the target, and the staging directory renamed
    into place, so an interrupted fetch never leaves a half-written dataset.

    Raises FetchError when the download fails and DataError when the wheel
    or its files are not what was pinned.
    """
    cache_dir = os.path.abspath(cache_dir or default_cache_dir())
    target = os.path.join(cache_dir, DATASET_DIRNAME)
    if not force and is_complete(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{DATASET_DIRNAME}-",
                                     dir=cache_dir) as work:
        wheel = download_recbole_wheel(os.path.join(work, "wheel"))
        verify_sha256(wheel, RECBOLE_WHEEL_SHA256)
        atomic_dir = extract_ml100k(wheel, os.path.join(work, "atomic"))
        staged = os.path.join(work, "native")
        convert_recbole_ml100k(atomic_dir, staged)
        _write_marker(staged)
        _move_into_place(staged, target, trash=os.path.join(work, "old"))
    return target


def is_complete(dataset_dir: str) -> bool:
    """True if `dataset_dir` is a finished fetch of the pinned wheel."""
    marker = os.path.join(dataset_dir, COMPLETE_MARKER)
    try:
        with open(marker, encoding="utf-8") as f:
            if f.read().strip() != RECBOLE_WHEEL_SHA256:
                return False
    except OSError:
        return False
    return all(os.path.isfile(os.path.join(dataset_dir, name))
               for name in native.TABLES)


def _write_marker(dataset_dir: str) -> None:
    """Written last: its presence means every other file is complete."""
    with open(os.path.join(dataset_dir, COMPLETE_MARKER), "w",
              encoding="utf-8") as f:
        f.write(RECBOLE_WHEEL_SHA256 + "\n")


def _move_into_place(staged: str, target: str, trash: str) -> None:
    """Renames `staged` to `target`, replacing an old or partial `target`.

    The old directory is first moved aside (into `trash`, which the caller
    deletes) because a directory cannot be renamed over a non-empty one. If
    another process finished the same fetch in between, its copy is kept.
    """
    if os.path.lexists(target):
        os.rename(target, trash)
    try:
        os.rename(staged, target)
    except OSError:
        if not is_complete(target):
            raise


def download_recbole_wheel(dest_dir: str) -> str:
    """Downloads the pinned recbole wheel into `dest_dir`; returns its path."""
    os.makedirs(dest_dir, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--only-binary=:all:", RECBOLE_REQUIREMENT, "-d", dest_dir]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        raise FetchError(f"Could not run pip to download MovieLens-100K "
                         f"({' '.join(command)}): {e}") from None
    if result.returncode != 0:
        raise FetchError(
            f"Downloading MovieLens-100K failed: `{' '.join(command)}` exited "
            f"with status {result.returncode}. The dataset comes from the "
            f"{RECBOLE_REQUIREMENT} wheel on PyPI, so this needs pip and "
            "access to PyPI (or a configured index/proxy: PIP_INDEX_URL, "
            "HTTPS_PROXY). Alternatively use the synthetic dataset. pip "
            f"said:\n{_tail(result.stderr or result.stdout)}")
    wheels = sorted(name for name in os.listdir(dest_dir)
                    if name.startswith(_WHEEL_GLOB_PREFIX)
                    and name.endswith(".whl"))
    if not wheels:
        raise FetchError(
            f"pip reported success but left no {_WHEEL_GLOB_PREFIX}*.whl in "
            f"{dest_dir}. pip said:\n{_tail(result.stdout)}")
    return os.path.join(dest_dir, wheels[0])


def _tail(text: str, lines: int = _STDERR_TAIL_LINES) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def verify_sha256(path: str, expected: str) -> None:
    """DataError unless the file's sha256 is `expected`.

    The conversion relies on the exact content checked by hand; a different
    file (a re-uploaded wheel, a tampering mirror) must not pass silently.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise DataError(
            f"{location(path)}: sha256 is {digest.hexdigest()}, "
            f"expected {expected}. The downloaded {RECBOLE_REQUIREMENT} wheel "
            "is not the pinned one; check your package index or proxy, then "
            "fetch again.")


def extract_ml100k(wheel: str, dest_dir: str) -> str:
    """Extracts only the three ML-100K atomic files, flat, into `dest_dir`.

    Members are read by their exact names and written under fixed names, so
    nothing else from the wheel lands on disk and no member path can escape
    `dest_dir`. Returns `dest_dir`.
    """
    os.makedirs(dest_dir, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in ATOMIC_FILES:
                member = f"{_ATOMIC_DIR_IN_WHEEL}/{name}"
                with archive.open(member) as src, open(
                        os.path.join(dest_dir, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{location(wheel)}: not the expected recbole wheel ({e}). "
            "Delete it and fetch again.") from None
    return dest_dir


# --------------------------------------------------------------------------
# Converting


def convert_recbole_ml100k(atomic_dir: str, out_dir: str) -> Dict[str, str]:
    """Converts recbole's ML-100K atomic files into the native format.

    `atomic_dir` holds ml-100k.inter, ml-100k.user and ml-100k.item (as
    written by `extract_ml100k`); the native files are written into
    `out_dir`. Every interaction, user and item is kept; see the module
    docstring for the value clean-ups. Raises DataError on a file that does
    not match the expected layout, or on an interaction whose user or item
    has no row (the pipeline joins on them).

    Returns {native file name: path}, like `native.write_dataset`.
    """
    paths = {name: os.path.join(atomic_dir, name) for name in ATOMIC_FILES}
    missing = [name for name, path in paths.items() if not os.path.isfile(path)]
    if missing:
        raise DataError(
            f"{location(atomic_dir)}: missing {', '.join(missing)}. "
            "Pass the directory holding recbole's ML-100K atomic files.")
    users = [_convert_user(row)
             for _, row in _read_atomic(paths[USER_FILE], _USER_SOURCE)]
    items = [_convert_item(row, paths[ITEM_FILE], line)
             for line, row in _read_atomic(paths[ITEM_FILE], _ITEM_SOURCE)]
    interactions = [
        _convert_interaction(row, paths[INTER_FILE], line)
        for line, row in _read_atomic(paths[INTER_FILE], _INTERACTION_SOURCE)]
    _check_unique_ids(paths[USER_FILE], [u[0] for u in users], "user_id")
    _check_unique_ids(paths[ITEM_FILE], [i[0] for i in items], "item_id")
    _check_references(paths[INTER_FILE], interactions,
                      {u[0] for u in users}, {i[0] for i in items})
    return native.write_dataset(out_dir, interactions, users, items)


def _read_atomic(path: str, source: Dict[str, str]
                 ) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Yields (line, {native column: raw value}) from one atomic file.

    Atomic files are plain tab-separated text without quoting, so lines are
    split on tabs rather than parsed with the csv module (which would treat
    a quote character in a title specially). Columns are found by name, so
    a reordering upstream cannot shuffle values silently.
    """
    with open(path, encoding="utf-8", newline="") as f:
        lines = iter(f)
        header = [_strip_type(h) for h in _split_line(next(lines, ""))]
        positions = _column_positions(path, header, source)
        for line_number, text in enumerate(lines, start=2):
            fields = _split_line(text)
            if fields == [""]:
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{location(path, line_number)}: expected "
                    f"{len(header)} tab-separated fields, found "
                    f"{len(fields)}. The atomic file is damaged; fetch the "
                    "dataset again.")
            yield line_number, {column: fields[i].strip()
                                for column, i in positions.items()}


def _split_line(text: str) -> List[str]:
    return text.rstrip("\r\n").split("\t")


def _strip_type(column: str) -> str:
    """``user_id:token`` -> ``user_id``."""
    return column.strip().split(":", 1)[0]


def _column_positions(path: str, header: Sequence[str],
                      source: Dict[str, str]) -> Dict[str, int]:
    missing = [name for name in source.values() if name not in header]
    if missing:
        raise DataError(
            f"{location(path, 1)}: missing column(s) "
            f"{', '.join(missing)} (header: {', '.join(header)}). This is not "
            "recbole's ML-100K layout.")
    return {column: header.index(name) for column, name in source.items()}


def _convert_interaction(row: Dict[str, str], path: str, line: int) -> tuple:
    _require_number(row["rating"], path, line, "rating")
    return (row["user_id"], row["item_id"], row["rating"],
            _integer_timestamp(row["timestamp"], path, line))


def _convert_user(row: Dict[str, str]) -> tuple:
    return tuple(row[c] for c in native.USER_COLUMNS)


def _convert_item(row: Dict[str, str], path: str, line: int) -> tuple:
    title, year = _title_and_year(row["title"], row["release_year"])
    return (row["item_id"], title, year, _genres(row["genres"], path, line))


def _title_and_year(title: str, release_year: str) -> Tuple[str, str]:
    """A valid year as is; else the year a title ends with; else empty.

    Item 1412 (``... Great Giving (1995)`` with year ``V``) is why the title
    is consulted: recbole split ``(1995) (V)`` at the wrong parenthesis.
    """
    if _YEAR.fullmatch(release_year):
        return title, release_year
    match = _TITLE_WITH_YEAR.match(title)
    if match:
        return match.group("title"), match.group("year")
    return title, ""


def _genres(raw: str, path: str, line: int) -> str:
    genres = [g for g in raw.split() if g != _UNKNOWN_GENRE]
    if any(native.GENRE_SEPARATOR in g for g in genres):
        raise DataError(
            f"{location(path, line, 'class')}: genre name contains "
            f"{native.GENRE_SEPARATOR!r} ({raw!r}), which the native format "
            "uses as the genre separator.")
    return native.GENRE_SEPARATOR.join(genres)


def _require_number(raw: str, path: str, line: int, column: str) -> None:
    try:
        float(raw)
    except ValueError:
        raise DataError(
            f"{location(path, line, column)}: expected a number, got "
            f"{raw!r}.") from None


def _integer_timestamp(raw: str, path: str, line: int) -> str:
    """recbole types timestamps as float; the native format wants integers."""
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise DataError(
            f"{location(path, line, 'timestamp')}: expected integer "
            f"seconds since the epoch, got {raw!r}.")
    return raw if raw.isdigit() else str(int(value))


def _check_unique_ids(path: str, ids: List[str], column: str) -> None:
    seen = set()
    for id_ in ids:
        if id_ in seen:
            raise DataError(
                f"{location(path, column=column)}: {id_!r} appears "
                "twice; ids must be unique.")
        seen.add(id_)


def _check_references(path: str, interactions: List[tuple],
                      user_ids: set, item_ids: set) -> None:
    """Every interaction must point at a known user and item: the pipeline
    joins on them and would otherwise fail much later, far from the cause."""
    for user_id, item_id, *_ in interactions:
        if user_id not in user_ids:
            raise DataError(
                f"{location(path, column='user_id')}: user {user_id!r} "
                f"is not in {USER_FILE}.")
        if item_id not in item_ids:
            raise DataError(
                f"{location(path, column='item_id')}: item {item_id!r} "
                f"is not in {ITEM_FILE}.")
