"""The run report: render_report on hand-made data, then a real run's page in
headless Chromium (DOM, console, screenshot)."""

import os
import re
import shutil
import subprocess

import pytest

from tfx_recsys import report
from tfx_recsys.report import gather, render

_CHOSEN_RING = 'r="9"'
SECTIONS = ("header", "metrics", "slices", "scann", "lineage", "recommendations")


def _overall(recall10, ndcg10):
    return {"recall@10": recall10, "recall@50": min(1.0, recall10 * 2), "ndcg@10": ndcg10,
            "hit_rate@10": 0.5, "mrr@10": 0.3, "top_k_accuracy@10": 0.1,
            "coverage@50": 0.7, "novelty@10": 12.5, "diversity@10": 0.8,
            "num_users": 60, "num_pairs": 217, "num_items": 80}


def _trial(searched, recall, latency):
    return {"settings": {"num_leaves": 9, "num_leaves_to_search": searched,
                         "num_reordering_candidates": 80},
            "recall": recall, "latency_ms_p50": latency, "latency_ms_p99": latency * 3,
            "full_share": 1.0}


def _data():
    """A full report's data: blessed, pushed, with a last blessed model."""
    slices = {"user_activity:5-19": _overall(0.4, 0.3), "user_activity:1-4": _overall(0.2, 0.1),
              "user:warm": _overall(0.45, 0.33),
              "item_popularity:tail": {"recall@10": 0.02, "recall@50": 0.9, "num_pairs": 93}}
    chosen = _trial(5, 0.97, 0.02)
    return {
        "run": {"id": "2026-01-02T03:04:05.678901", "date": "2026-01-02 03:04:05 UTC",
                "root": "/runs/x", "data_path": "/data/ml", "dataset": "movielens-100k",
                "ran": 9, "cached": 0, "failed": 0},
        "model_name": "two_tower",
        "evaluation": {
            "top_ks": [10, 50], "num_items": 80, "num_eval_users": 60,
            "model": {"overall": _overall(0.61, 0.52), "slices": slices},
            "baselines": {name: {"overall": _overall(r, r * 0.8), "slices": slices}
                          for name, r in (("most_popular", 0.36), ("item_knn", 0.58),
                                          ("ease", 0.49))},
            "baselines_skipped": {},
            "last_blessed": {"overall": _overall(0.6, 0.5), "slices": slices,
                             "uri": "/runs/x/pipeline/Model/3", "artifact_id": 3},
            "blessing": {"blessed": True, "reason": "ok",
                         "checks": ["ok: recall@10 0.61 >= threshold 0.0000",
                                    "ok: recall@10 0.61 beats most_popular 0.36",
                                    "ok: recall@10 0.61 >= last blessed 0.60 - 0.0"],
                         "gate": {"metric": "recall@10"}}},
        "push": {"ran": True, "pushed": True, "version": "1795853151",
                 "destination": "/runs/x/serving/retrieval/1795853151", "reason": None,
                 "figures": {"index_recall": 0.98, "index_recall_k": 10,
                             "index_latency_ms_p50": 0.02, "exact_search_latency_ms_p50": 0.01,
                             "serving_latency_ms_p50": 0.27, "serving_latency_ms_p99": 0.8,
                             "num_items": 80, "top_k": 80},
                 "tuning": {"trials": [_trial(1, 0.35, 0.019), _trial(2, 0.7, 0.0195),
                                       chosen, _trial(9, 1.0, 0.021)],
                            "chosen": chosen, "exact_latency_ms_p50": 0.01, "num_queries": 30,
                            "gate": {"recall_k": 10, "target_recall": 0.95,
                                     "max_latency_ms": 10.0}},
                 "tuning_note": None, "model_dir": "/runs/x/model"},
        "lineage_svg": '<svg xmlns="http://www.w3.org/2000/svg" width="500" height="80">'
                       '<rect id="lineage-box" x="1" y="1" width="9" height="9"/></svg>',
        "recommendations": {"model_dir": "/runs/x/model", "k": 3, "error": None, "users": [
            {"user_id": "u1", "features": {"user_id": "u1", "age": 24.0, "gender": "M"},
             "held_out": 2,
             "items": [{"item_id": "i7", "title": "Toy Story (1995)", "score": 3.2, "hit": True},
                       {"item_id": "i9", "title": "Heat (1995)", "score": 2.9, "hit": False},
                       {"item_id": "i3", "title": None, "score": 2.1, "hit": False}]}]},
    }


def _section_html(page: str, section_id: str) -> str:
    match = re.search(rf'<(section|header)[^>]*id="{section_id}".*?</\1>', page, re.S)
    assert match, f"no section {section_id}"
    return match.group(0)


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"\b(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    # The only URLs: the SVG namespace, and nothing is fetched from it.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "Content-Security-Policy" in page


# --------------------------------------------------------------------------
# render_report on hand-made data


def test_full_page_has_every_section_and_the_figures():
    page = render.render_report(_data())
    for section in SECTIONS:
        assert f'id="{section}"' in page
    header = _section_html(page, "header")
    for text in ("2026-01-02T03:04:05.678901", "2026-01-02 03:04:05 UTC", "/data/ml",
                 "movielens-100k", "blessed", "1795853151", "beats most_popular"):
        assert text in header
    assert header.count('<li class="ok">') == 3

    metrics = _section_html(page, "metrics")
    assert 'id="metrics-chart"' in metrics
    for column in ("two-tower", "most_popular", "item_knn", "ease", "last blessed"):
        assert f"<th>{column}</th>" in metrics
    assert '<td class="num best">0.6100</td>' in metrics  # recall@10: the model is best
    # Columns in the order of the brief: model, baselines, last blessed.
    order = [metrics.index(f"<th>{c}</th>") for c in
             ("two-tower", "most_popular", "item_knn", "ease", "last blessed")]
    assert order == sorted(order)

    slices = _section_html(page, "slices")
    rows = re.findall(r"<tr><td>([^<]+)</td>", slices)
    assert rows == ["1-4", "5-19", "warm", "tail"]  # activity by size, then users, items
    assert "0.0200" in slices and '<td class="num na">' in slices  # tail has recall only

    scann = _section_html(page, "scann")
    assert 'id="scann-chart"' in scann
    assert scann.count('class="chosen"') == 1 and "5 of 9 (chosen)" in scann
    assert "target 0.95" in scann and "exact search" in scann

    assert 'id="lineage-box"' in _section_html(page, "lineage")
    recs = _section_html(page, "recommendations")
    assert "Toy Story (1995)" in recs and "Heat (1995)" in recs
    assert '<li class="hit"><span>Toy Story (1995)' in recs
    assert '<li><span>i3 <span class="id">i3</span>' in recs  # no title: the id stands in
    assert "1 of 2 held-out items" in recs and "age 24 · gender M" in recs
    _assert_self_contained(page)


def test_every_text_is_escaped():
    evil = '<script>alert("x")</script> & "q"'
    data = _data()
    data["run"].update(id=evil, dataset=evil, data_path=evil, root=evil)
    data["model_name"] = evil
    data["evaluation"]["blessing"]["checks"].append("FAILED: " + evil)
    data["evaluation"]["baselines"][evil] = data["evaluation"]["baselines"]["ease"]
    data["evaluation"]["model"]["slices"]["user_activity:" + evil] = _overall(0.1, 0.1)
    data["evaluation"]["baselines_skipped"] = {evil: evil}
    data["push"]["version"] = evil
    data["push"]["destination"] = evil
    user = data["recommendations"]["users"][0]
    user["user_id"] = evil
    user["features"]["gender"] = evil
    user["items"][0]["title"] = evil
    user["items"][1]["item_id"] = evil

    page = render.render_report(data)
    assert "<script" not in page
    assert 'alert("x")' not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;q&quot;" in page
    assert '<li class="failed">FAILED: &lt;script&gt;' in page
    _assert_self_contained(page)


def test_refused_push_says_so_and_draws_no_lineage_or_recommendations():
    data = _data()
    data["push"] = {"ran": True, "pushed": False, "version": None,
                    "reason": "the model is not blessed", "figures": {}, "tuning": None}
    data["lineage_svg"] = None
    data["recommendations"] = None
    data["evaluation"]["blessing"].update(
        blessed=False, checks=["FAILED: recall@10 0.1 beats most_popular 0.36"])
    page = render.render_report(data)

    header = _section_html(page, "header")
    assert "not blessed" in header and '<li class="failed">' in header
    assert "not pushed: the model is not blessed" in header
    assert "Nothing was pushed: the model is not blessed." in _section_html(page, "scann")
    assert "scann-chart" not in page
    assert "No model was pushed" in _section_html(page, "lineage")
    assert "No model was pushed" in _section_html(page, "recommendations")


def test_index_tuned_but_not_pushed_shows_trials_without_a_chosen_one():
    data = _data()
    data["push"].update(pushed=False, reason="no ScaNN setting reached recall@10 >= 0.95")
    data["push"]["tuning"]["chosen"] = None
    page = render.render_report(data)
    scann = _section_html(page, "scann")
    assert 'id="scann-chart"' in scann
    assert 'class="chosen"' not in scann and "(chosen)" not in scann
    assert ">chosen<" not in scann and _CHOSEN_RING not in scann
    assert "no ScaNN setting reached" in scann


def test_run_without_push_step_or_evaluation():
    data = _data()
    data.update(push=None, lineage_svg=None, recommendations=None, evaluation=None)
    page = render.render_report(data)
    assert "no push step in this run" in _section_html(page, "header")
    assert "No push step in this run" in _section_html(page, "scann")
    assert "No evaluation in this run." in _section_html(page, "metrics")
    assert "No sliced metrics" in _section_html(page, "slices")


def test_no_previous_blessed_model_drops_that_column():
    data = _data()
    data["evaluation"]["last_blessed"] = None
    page = render.render_report(data)
    metrics = _section_html(page, "metrics")
    assert "last blessed" not in metrics.replace("No previously blessed", "")
    assert "No previously blessed model to compare with." in metrics
    assert "last blessed" not in _section_html(page, "slices")


def test_recommendation_error_is_shown_not_raised():
    data = _data()
    data["recommendations"] = {"model_dir": None, "k": 10, "users": [],
                               "error": "the pushed model is no longer on disk"}
    recs = _section_html(render.render_report(data), "recommendations")
    assert "Could not ask the pushed model: the pushed model is no longer on disk" in recs


def test_minimal_data_renders():
    page = render.render_report({"run": {"id": "r1"}})
    for section in SECTIONS:
        assert f'id="{section}"' in page


def test_report_path_is_a_safe_file_name():
    path = report.report_path("/runs/x", "2026-01-02T03:04:05.678901")
    assert path == "/runs/x/reports/2026-01-02T03-04-05.678901.html"
    assert report.report_path("/r", "../a/b").startswith("/r/reports/")


def test_tuning_file_name_is_the_pushers():
    # Read from the source: importing the executor loads TFX (slow).
    import ast

    from tfx_recsys import config

    path = os.path.join(config.REPO_ROOT, "components", "scann_pusher", "executor.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    [value] = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and [getattr(t, "id", None) for t in node.targets] == ["TUNING_FILE"]]
    assert gather.TUNING_FILE == value


def test_stylesheet_ships_as_package_data():
    # render.py reads report.css at run time: an installed (not editable)
    # package has it only if setup.py names it.
    import ast

    from tfx_recsys import config

    with open(os.path.join(config.REPO_ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    [package_data] = [ast.literal_eval(k.value) for node in ast.walk(tree)
                      if isinstance(node, ast.Call) for k in node.keywords
                      if k.arg == "package_data"]
    assert "report.css" in package_data["tfx_recsys.report"]
    css = os.path.join(os.path.dirname(render.__file__), "report.css")
    with open(css, encoding="utf-8") as f:
        assert f"<style>\n{f.read()}</style>" in render.render_report(_data())


def test_lineage_svg_gets_a_viewbox_to_scale():
    page = render.render_report(_data())
    assert 'viewBox="0 0 500 80"' in _section_html(page, "lineage")


# --------------------------------------------------------------------------
# A real run's page, opened in headless Chromium


def _chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        pytest.fail("chromium is not installed: run `make system-packages` "
                    "(Debian package chromium)")
    return path


def _run_chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(os.listdir(tmp_path))}"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Console messages (errors, CSP violations: anything fetched) are logged
    # as CONSOLE lines; the page has no scripts, so there must be none.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "\n".join(console)
    return proc


@pytest.fixture(scope="module")
def written_report(tiny_run):
    return report.write_report(tiny_run.root)


def test_written_report_of_the_newest_run(tiny_run, written_report):
    from tfx_recsys import lineage, run_summary

    runs = lineage.runs(run_summary.open_store(tiny_run.root))
    assert written_report == report.report_path(tiny_run.root, runs[-1]["run"])
    assert os.path.dirname(written_report) == os.path.join(tiny_run.root, "reports")
    assert report.write_report(tiny_run.root, runs[-1]["run"]) == written_report
    with pytest.raises(LookupError, match="no pipeline run 'nope'"):
        gather.gather_report_data(tiny_run.root, "nope")


def test_gathered_data_of_a_real_run(tiny_run, tiny_data):
    data = gather.gather_report_data(tiny_run.root)
    assert data["run"]["data_path"] == os.path.abspath(tiny_data)
    assert data["model_name"] == "two_tower"
    assert data["evaluation"]["blessing"]["blessed"]
    push = data["push"]
    assert push["pushed"] and push["tuning"]["chosen"] and push["tuning"]["trials"]
    assert data["lineage_svg"].startswith("<svg")
    recs = data["recommendations"]
    assert recs["error"] is None, recs["error"]
    assert len(recs["users"]) == gather.NUM_USERS
    for user in recs["users"]:
        assert len(user["items"]) == gather.TOP_K
        assert all(item["title"].startswith("Item ") for item in user["items"])
        assert user["features"]["user_id"] == user["user_id"]
    # The report shows what the served model answers for one user asked alone
    # with the features the page shows (the request follows the signature).
    import scann  # noqa: F401
    import tensorflow as tf

    user = recs["users"][0]
    serve = tf.saved_model.load(push["model_dir"]).signatures["serving_default"]
    _, specs = serve.structured_input_signature
    assert set(user["features"]) == set(specs)
    if any(spec.shape.rank != 1 for spec in specs.values()) or None in user["features"].values():
        return  # shown joined or as missing: not a request as they stand
    out = serve(**{name: tf.constant([user["features"][name]], spec.dtype)
                   for name, spec in specs.items()})
    assert [i.decode() for i in out["item_ids"].numpy()[0][:gather.TOP_K]] == [
        item["item_id"] for item in user["items"]]


def test_report_in_headless_chromium(written_report, tmp_path):
    with open(written_report, encoding="utf-8") as f:
        _assert_self_contained(f.read())
    url = "file://" + written_report
    dom = _run_chromium(tmp_path, "--dump-dom", url).stdout
    for section in SECTIONS:
        assert f'id="{section}"' in dom, f"section {section} missing from the DOM"
    assert 'id="metrics-chart"' in dom and 'id="scann-chart"' in dom
    recs = _section_html(dom, "recommendations")
    assert len(re.findall(r"<li[ >]", recs)) == gather.NUM_USERS * gather.TOP_K
    assert "Item " in recs

    screenshot = tmp_path / "report.png"
    _run_chromium(tmp_path, "--window-size=1280,3400", f"--screenshot={screenshot}", url)
    from PIL import Image

    with Image.open(screenshot) as image:
        image = image.convert("RGB")
        assert image.size == (1280, 3400)
        colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "the screenshot is (nearly) blank"
    counts = {rgb: n for n, rgb in colors}
    # The page background, the header's dark band and the model's bars.
    assert counts.get((0xf3, 0xf4, 0xf6), 0) > 10000
    assert counts.get((0x1e, 0x29, 0x3b), 0) > 10000
    assert counts.get((0x25, 0x63, 0xeb), 0) > 1000
    if os.environ.get("REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(screenshot, os.environ["REPORT_SCREENSHOT"])


def test_console_check_catches_a_fetch(tmp_path):
    """The harness above would see a page that loads anything (CSP violation)."""
    page = render.render_report(_data()).replace(
        "</main>", '<img alt="" src="https://example.invalid/x.png"></main>')
    path = tmp_path / "fetching.html"
    path.write_text(page, encoding="utf-8")
    with pytest.raises(AssertionError, match="Content Security Policy"):
        _run_chromium(tmp_path, "--dump-dom", f"file://{path}")
