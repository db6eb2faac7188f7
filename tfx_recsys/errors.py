"""Errors written for the person running the pipeline, and how they are worded.

`UserError` is a problem that person fixes (bad data, a bad config, a run
already in progress): the CLI prints its message as one line, without a
traceback, and exits 1. `DataError` is the kind about input data; every
module that raises one imports it from here. Any other exception is a bug
and keeps its traceback.

Standard library only: the CLI imports this module and must start fast.
"""

import errno
import os
from typing import Optional


class UserError(Exception):
    """A problem the user fixes; the message says what and how, in one line."""


class DataError(UserError, ValueError):
    """Bad input data.

    The message names the file (full path) and, where it applies, the line
    (1-based, the header is line 1) and the column, and says how to fix it.
    It is a ValueError so callers that treat bad arguments alike need nothing
    special.
    """


class RunInProgressError(UserError, RuntimeError):
    """Another pipeline run holds the run root; wait for it or use another."""


def location(path: str, line: Optional[int] = None, column: Optional[str] = None) -> str:
    """``/abs/file.csv, line 7, column 'rating'``: the prefix of every error."""
    where = os.path.abspath(path)
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column '{column}'"
    return where


_OS_PROBLEMS = {
    errno.ENOENT: "no such file",
    errno.ELOOP: "a symlink loop (a link that points back to itself)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_problem(error: OSError) -> str:
    """What an OSError means, in a few words ("permission denied", "a symlink
    loop ..."), without the path (the caller names it)."""
    return _OS_PROBLEMS.get(error.errno) or (error.strerror or str(error)).lower()


def stat_problem(path: str) -> Optional[str]:
    """None when `path` can be stat-ed, else `os_problem` of why not; a
    symlink loop is told apart from a missing file."""
    try:
        os.stat(path)
    except OSError as e:
        return os_problem(e)
    return None
