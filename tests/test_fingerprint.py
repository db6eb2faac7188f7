"""Code fingerprints: what makes an edit of our code invalidate TFX's cache."""

import os
import shutil

from tfx_recsys import fingerprint


def test_files_fingerprint_follows_names_and_contents(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    (package / "notes.txt").write_text("not code")
    before = fingerprint.files_fingerprint([str(package)])
    assert before == fingerprint.files_fingerprint([str(package)])  # stable
    (package / "notes.txt").write_text("still not code")
    assert fingerprint.files_fingerprint([str(package)]) == before
    (package / "a.py").write_text("x = 2\n")
    edited = fingerprint.files_fingerprint([str(package)])
    assert edited != before
    os.rename(package / "a.py", package / "b.py")
    assert fingerprint.files_fingerprint([str(package)]) != edited
    # A copy elsewhere hashes the same: paths count relative to their top.
    shutil.copytree(package, tmp_path / "copy")
    assert fingerprint.files_fingerprint([str(tmp_path / "copy")]) == \
        fingerprint.files_fingerprint([str(package)])


def test_every_custom_component_carries_the_fingerprint_of_its_code(tmp_path):
    from tfx_recsys import dataset_config
    from tfx_recsys.pipeline import pipeline

    dataset = dataset_config.load(dataset_config.builtin_path("synthetic"))
    built = pipeline.create_pipeline("p", str(tmp_path), str(tmp_path), dataset.to_dict(),
                                     str(tmp_path / "schema"), str(tmp_path / "serving"))
    carried = {c.id: c.exec_properties.get(fingerprint.CODE_FINGERPRINT_KEY)
               for c in built.components}
    for component in fingerprint.COMPONENT_SOURCES:
        assert carried[component] == fingerprint.component_fingerprint(component)
    # Each covers its own package and the modules it runs, so an edit of
    # two_stage.py reaches the evaluator and the pusher, not ExampleGen.
    sources = fingerprint.COMPONENT_SOURCES
    assert "tfx_recsys.two_stage" in sources["RetrievalEvaluator"]
    assert "tfx_recsys.two_stage" in sources["ScannPusher"]
    assert "tfx_recsys.two_stage" not in sources["InteractionsExampleGen"]


def test_component_sources_exist():
    for modules in fingerprint.COMPONENT_SOURCES.values():
        for module in modules:
            assert os.path.exists(fingerprint._source_path(module)), module
