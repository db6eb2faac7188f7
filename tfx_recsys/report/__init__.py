"""`recsys report`: one self-contained HTML page per pipeline run.

Two steps, so the page can be tested without a pipeline: gather.py reads
what a run left (ML Metadata, its files, the pushed model) into plain data,
render.py turns that into HTML (charts.py draws the SVG, report.css styles
it). `write_report` does both and writes `<root>/reports/<run>.html`.
"""

import os
import re
from typing import Optional

from tfx_recsys.report.gather import gather_report_data
from tfx_recsys.report.render import render_report

REPORTS_DIR = "reports"


def report_path(root: str, run_id: str) -> str:
    """`<root>/reports/<run id>.html`, with characters unsafe in file names as '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", run_id)
    return os.path.join(os.path.abspath(root), REPORTS_DIR, f"{name}.html")


def write_report(root: str, run_id: Optional[str] = None) -> str:
    """Writes the page of one run (default: the newest); returns its path."""
    data = gather_report_data(root, run_id)
    path = report_path(root, data["run"]["id"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staged = path + ".tmp"
    with open(staged, "w", encoding="utf-8") as f:
        f.write(render_report(data))
    os.replace(staged, path)
    return path
