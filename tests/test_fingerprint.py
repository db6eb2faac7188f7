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
    custom = [c for c in built.components
              if type(c).__module__.startswith("tfx_recsys.components.")]
    assert {c.id for c in custom} >= {"InteractionsExampleGen", "AnomaliesGate", "Trainer",
                                      "RankingTrainer", "RetrievalEvaluator", "ScannPusher"}
    for component in custom:
        executor_class = component.executor_spec.executor_class
        assert component.exec_properties[fingerprint.CODE_FINGERPRINT_KEY] == \
            fingerprint.component_fingerprint(executor_class), component.id


def _closure(executor_module):
    return fingerprint.module_closure([executor_module])


def test_a_fingerprint_covers_what_the_executor_imports_and_nothing_else():
    evaluator = _closure("tfx_recsys.components.retrieval_evaluator.executor")
    pusher = _closure("tfx_recsys.components.scann_pusher.executor")
    example_gen = _closure("tfx_recsys.components.interactions_example_gen.executor")
    # An edit of two_stage.py reaches the evaluator and the pusher, not ExampleGen.
    assert "tfx_recsys.serving.two_stage" in evaluator and "tfx_recsys.serving.two_stage" in pusher
    assert "tfx_recsys.serving.two_stage" not in example_gen
    # Imported through another module, or inside a function, counts too.
    assert "tfx_recsys.data.splitting" in evaluator  # via baselines
    assert "tfx_recsys.data.tables" in example_gen
    # Only this project's modules: nothing of TFX, no component it does not use.
    for closure in (evaluator, pusher, example_gen):
        assert all(m.startswith("tfx_recsys") for m in closure)
        assert "tfx_recsys.cli" not in closure
    assert not any(m.startswith("tfx_recsys.components.scann_pusher") for m in evaluator)


def test_the_model_fingerprint_covers_the_models_and_their_imports():
    from tfx_recsys.fingerprint import _package_modules

    models = fingerprint.module_closure(_package_modules("tfx_recsys.models"))
    assert "tfx_recsys.models.two_tower" in models and "tfx_recsys.models.ncf" in models
    assert "tfx_recsys.config" in models and "tfx_recsys.dataset_config" in models
    assert "tfx_recsys.serving.two_stage" not in models


def test_an_edited_import_changes_the_fingerprint(tmp_path, monkeypatch):
    """A module reached only through another's import still counts."""
    package = tmp_path / "tfx_recsys"
    shutil.copytree(os.path.dirname(fingerprint.__file__), package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "_package_dir",
                        lambda name: str(package / os.path.join(*name.split(".")[1:]))
                        if name != "tfx_recsys" else str(package))
    before = fingerprint.modules_fingerprint(["tfx_recsys.data.ingest"])
    assert "tfx_recsys.errors" in fingerprint.module_closure(["tfx_recsys.data.ingest"])
    with open(package / "errors.py", "a") as f:
        f.write("\n# an edit\n")
    assert fingerprint.modules_fingerprint(["tfx_recsys.data.ingest"]) != before
    with open(package / "cli.py", "a") as f:  # not imported by ingest
        f.write("\n# an edit\n")
    after = fingerprint.modules_fingerprint(["tfx_recsys.data.ingest"])
    assert fingerprint.modules_fingerprint(["tfx_recsys.data.ingest"]) == after
