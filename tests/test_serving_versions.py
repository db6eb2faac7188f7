"""The serving pieces without HTTP: version handling, micro-batching, the
InferenceService, and `recsys rollback`'s all-or-nothing publishing."""

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import yaml

from tfx_recsys import storage
from tfx_recsys.serving import batching, deploy
from tfx_recsys.serving.batching import BatchingSettings, MicroBatcher
from tfx_recsys.serving.protocol import Batch, RequestError
from tfx_recsys.serving.versions import (LoadedVersion, Signature, VersionManager,
                                         candidate_versions)

ROLES = ("retrieval", "retrieval_bruteforce", "retrieval_embeddings")


# --------------------------------------------------------------------------
# VersionManager, with a fake loader and clock


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_version_dir(model_dir, version, pb=b"model"):
    path = os.path.join(model_dir, str(version))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(pb)
    return path


def fake_loader(calls):
    """Loads a version dir whose saved_model.pb says b"model"; raises otherwise."""
    def load(path, version):
        calls.append(version)
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            if f.read() != b"model":
                raise ValueError(f"version {version} is broken")
        return LoadedVersion(version=version, path=path, signatures={}, model=None)
    return load


def test_candidates_are_complete_numbered_dirs_newest_first(tmp_path):
    for version in (3, 10, 7):
        make_version_dir(str(tmp_path), version)
    os.makedirs(tmp_path / "12")                       # no saved_model.pb yet
    make_version_dir(str(tmp_path), "9" * 200)         # not an int64 version number
    make_version_dir(str(tmp_path), ".staging-20")
    assert candidate_versions(str(tmp_path)) == [10, 7, 3]
    assert candidate_versions(str(tmp_path / "missing")) == []


def test_the_newest_loadable_version_is_served_and_failures_retried_with_back_off(tmp_path):
    model_dir, calls, clock = str(tmp_path), [], FakeClock()
    manager = VersionManager(model_dir, loader=fake_loader(calls), clock=clock,
                             retry_initial_seconds=1, retry_max_seconds=4)
    make_version_dir(model_dir, 1)
    make_version_dir(model_dir, 3, pb=b"half-copied")
    make_version_dir(model_dir, 2)
    assert manager.poll()
    # 3 failed, so 2 (newer than nothing) is served; never 1.
    assert manager.current.version == 2 and calls == [3, 2]
    [failure] = manager.failures()
    assert (failure.version, failure.attempts, failure.retry_at) == (3, 1, 1.0)
    assert "version 3 is broken" in failure.error
    # Not due yet: not tried. Then retried at 1, 3 (2 s later), 7, 11 (capped at 4 s).
    assert not manager.poll() and calls == [3, 2]
    for now, attempts in ((1.0, 2), (3.0, 3), (7.0, 4), (11.0, 5)):
        clock.now = now - 0.01
        manager.poll()
        assert manager.failures()[0].attempts == attempts - 1
        clock.now = now
        manager.poll()
        assert manager.failures()[0].attempts == attempts
    assert manager.current.version == 2
    # The copy completes: the next due retry serves it, and the failure is gone.
    make_version_dir(model_dir, 3)
    clock.now = 15.0
    assert manager.poll() and manager.current.version == 3
    assert manager.failures() == []
    # Older versions are never loaded again; a removed failed version is forgotten.
    make_version_dir(model_dir, 2)
    make_version_dir(model_dir, 4, pb=b"broken")
    manager.poll()
    assert [f.version for f in manager.failures()] == [4]
    shutil.rmtree(os.path.join(model_dir, "4"))
    manager.poll()
    assert manager.failures() == [] and manager.current.version == 3


def test_start_serves_what_is_there_and_swaps_notify(tmp_path):
    model_dir, calls = str(tmp_path), []
    make_version_dir(model_dir, 5)
    manager = VersionManager(model_dir, loader=fake_loader(calls), poll_seconds=0.05)
    swapped = []
    manager.on_swap(lambda loaded: swapped.append(loaded.version))
    manager.start()
    try:
        assert manager.current.version == 5 and swapped == [5]
        make_version_dir(model_dir, 6)
        deadline = __import__("time").monotonic() + 10
        while manager.current.version != 6 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.02)
        assert manager.current.version == 6 and swapped == [5, 6]
    finally:
        manager.stop()


# --------------------------------------------------------------------------
# MicroBatcher, on a fake signature


class _Function:
    """A "signature" that echoes its inputs and records each call's rows."""

    def __init__(self):
        self.calls = []

    def __call__(self, user_id, exclude):
        import tensorflow as tf

        self.calls.append(int(user_id.shape[0]))
        if b"poison" in user_id.numpy().tolist():
            raise tf.errors.InvalidArgumentError(None, None, "poison in the batch")
        return {"user_id": user_id, "exclude": exclude}


def _fake_version(function):
    import tensorflow as tf

    specs = {"user_id": tf.TensorSpec([None], tf.string),
             "exclude": tf.TensorSpec([None, None], tf.string)}
    signature = Signature(function=function, inputs=specs, outputs={})
    return LoadedVersion(version=1, path="", signatures={"s": signature}, model=None)


def _batch(user, excludes):
    exclude = np.empty((1, len(excludes)), dtype=object)
    exclude[0, :] = [e.encode() for e in excludes]
    return Batch("s", {"user_id": np.array([user.encode()], dtype=object),
                       "exclude": exclude}, rows=1)


def test_stack_pads_lists_per_batch():
    batches = [_batch("a", ["1"]), _batch("b", ["2", "3", "4"]), _batch("c", [])]
    stacked = batching.stack(batches, {"user_id": None, "exclude": None})
    assert stacked["user_id"].tolist() == [b"a", b"b", b"c"]
    assert stacked["exclude"].tolist() == [[b"1", b"", b""], [b"2", b"3", b"4"],
                                           [b"", b"", b""]]


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    function = _Function()
    version = _fake_version(function)
    batcher = MicroBatcher(BatchingSettings(max_batch_size=4, timeout_ms=50))
    requests = [_batch(f"u{i}", [str(j) for j in range(i % 3)]) for i in range(10)]

    async def main():
        return await asyncio.gather(*(batcher.run(version, b) for b in requests))

    try:
        answers = asyncio.run(main())
    finally:
        batcher.close()
    # 10 requests, at most 4 rows a call, gathered within the window: 3 calls.
    assert function.calls == [4, 4, 2]
    for i, answer in enumerate(answers):
        assert answer["user_id"].tolist() == [f"u{i}".encode()]
        width = answer["exclude"].shape[1]
        assert answer["exclude"].tolist() == [[str(j).encode() for j in range(i % 3)]
                                              + [b""] * (width - i % 3)]


def test_a_rejected_request_fails_alone_and_the_others_are_answered():
    function = _Function()
    version = _fake_version(function)
    batcher = MicroBatcher(BatchingSettings(timeout_ms=50))
    users = ["a", "poison", "b"]

    async def main():
        return await asyncio.gather(*(batcher.run(version, _batch(u, [])) for u in users),
                                    return_exceptions=True)

    try:
        first, poisoned, last = asyncio.run(main())
    finally:
        batcher.close()
    assert function.calls == [3, 1, 1, 1]   # the batch, then one by one
    assert first["user_id"].tolist() == [b"a"] and last["user_id"].tolist() == [b"b"]
    assert isinstance(poisoned, RequestError) and poisoned.status == 400
    assert "poison in the batch" in poisoned.message


def test_without_a_window_one_request_runs_at_once():
    function = _Function()
    version = _fake_version(function)
    batcher = MicroBatcher(BatchingSettings())

    async def main():
        return await batcher.run(version, _batch("a", ["1"]))

    try:
        answer = asyncio.run(main())
    finally:
        batcher.close()
    assert function.calls == [1] and answer["user_id"].tolist() == [b"a"]


# --------------------------------------------------------------------------
# The signature called directly (its function's flat call)


def _saved_version(tmp_path, name="m"):
    """A loaded SavedModel's version whose signature reads a variable (a
    captured input) and takes its inputs in another order than sorted."""
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                      tf.TensorSpec([None], tf.float32)])
        def serve(self, user_id, age):
            return {"user": user_id, "score": age * self.weight}

    path = str(tmp_path / name)
    module = Module()
    tf.saved_model.save(module, path, signatures={"s": module.serve})
    loaded = tf.saved_model.load(path)
    function = loaded.signatures["s"]
    signature = Signature(function=function, inputs=dict(function.structured_input_signature[1]),
                          outputs=function.structured_outputs)
    return LoadedVersion(version=1, path=path, signatures={"s": signature}, model=loaded)


_INPUTS = {"user_id": np.array([b"a", b"b", b"c"], dtype=object),
           "age": np.array([1.0, float("nan"), 3.0], dtype=np.float32)}


def _public_answer(version):
    import tensorflow as tf

    signature = version.signatures["s"]
    out = signature.function(**{n: tf.constant(_INPUTS[n], dtype=s.dtype)
                                for n, s in signature.inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _assert_same(got, expected):
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_the_signature_is_called_directly_and_answers_as_its_public_call(
        tmp_path, monkeypatch):
    version = _saved_version(tmp_path)
    expected = _public_answer(version)
    # The first call compares both ways; the others go direct.
    _assert_same(batching.call_signature(version, "s", _INPUTS), expected)
    plan = batching._DIRECT[version.signatures["s"].function]
    assert plan is not None and plan[0] == ["age", "user_id"]   # the flat order
    direct, real = [], batching._CALL_FLAT
    monkeypatch.setattr(batching, "_CALL_FLAT",
                        lambda *args: direct.append(1) or real(*args))
    for _ in range(2):
        _assert_same(batching.call_signature(version, "s", _INPUTS), expected)
    assert len(direct) == 2


def test_a_direct_call_that_answers_differently_is_not_used(tmp_path, monkeypatch):
    version = _saved_version(tmp_path)
    expected = _public_answer(version)
    monkeypatch.setattr(batching, "_same", lambda a, b: False)
    for _ in range(2):
        _assert_same(batching.call_signature(version, "s", _INPUTS), expected)
    assert batching._DIRECT[version.signatures["s"].function] is None


@pytest.mark.parametrize("settings, message", [
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(timeout_ms=-1), "timeout_ms"),
    (dict(threads=0), "threads"),
])
def test_batching_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        BatchingSettings(**settings)


# --------------------------------------------------------------------------
# The KServe InferenceService


def test_deploy_writes_an_inference_service_that_round_trips_through_the_sdk(tmp_path):
    from kserve import V1beta1InferenceService

    output = tmp_path / "isvc.yaml"
    recsys = os.path.join(os.path.dirname(sys.executable), "recsys")
    proc = subprocess.run([recsys, "deploy", "--target", "kserve", "--output", str(output),
                           "--storage-uri", "gs://bucket/serving/retrieval",
                           "--image", "registry.example/tfx-recsys:abc123",
                           "--namespace", "recsys", "--serve-arg=--max-batch-size=128"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert str(output) in proc.stdout
    written = yaml.safe_load(output.read_text())
    assert written["apiVersion"] == "serving.kserve.io/v1beta1"
    assert written["kind"] == "InferenceService"
    assert written["metadata"] == {
        "name": "tfx-recsys", "namespace": "recsys",
        "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}}
    [container] = written["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "registry.example/tfx-recsys:abc123"
    assert container["command"] + container["args"] == [
        "recsys", "serve", "--model-dir", "/mnt/models", "--model-name", "retrieval",
        "--host", "0.0.0.0", "--port", "8080", "--max-batch-size=128"]
    assert {"name": "STORAGE_URI", "value": "gs://bucket/serving/retrieval"} in container["env"]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/models/retrieval/ready",
                                                      "port": 8080}
    # Through the SDK's own objects and back: nothing lost or added.
    isvc = deploy.from_dict(written)
    assert isinstance(isvc, V1beta1InferenceService)
    assert isvc.spec.predictor.containers[0].env[0].value == "gs://bucket/serving/retrieval"
    assert deploy.to_dict(isvc) == written
    settings = deploy.DeploySettings(
        storage_uri="gs://bucket/serving/retrieval", image="registry.example/tfx-recsys:abc123",
        namespace="recsys", serve_args=("--max-batch-size=128",))
    assert isvc == deploy.inference_service(settings)
    # The command in the container parses as `recsys serve` options.
    from tfx_recsys import cli

    args = cli.build_parser().parse_args(container["command"][1:] + container["args"])
    assert (args.model_dir, args.port, args.host, args.max_batch_size) == \
        ("/mnt/models", 8080, "0.0.0.0", 128)


def test_the_example_in_kubeflow_is_what_deploy_writes(tmp_path):
    """kubeflow/inferenceservice.yaml is `recsys deploy --target kserve`'s
    output with the default (placeholder) settings."""
    example = os.path.join(os.path.dirname(__file__), "..", "kubeflow",
                           "inferenceservice.yaml")
    with open(example) as f:
        assert f.read() == deploy.to_yaml(deploy.inference_service(deploy.DeploySettings()))


def test_deploy_writes_json_too(tmp_path):
    path = str(tmp_path / "isvc.json")
    deploy.write(deploy.inference_service(deploy.DeploySettings()), path)
    import json

    with open(path) as f:
        assert deploy.from_dict(json.load(f)).metadata.name == "tfx-recsys"


# --------------------------------------------------------------------------
# recsys rollback: refuses what does not load, publishes all or nothing


def _tree(root):
    """Every path under root (relative), for before/after comparisons."""
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


@pytest.fixture
def two_versions(tiny_run, tmp_path):
    """A run root with versions 100 and 200 of all three model dirs."""
    serving = tmp_path / "serving"
    [version] = os.listdir(tiny_run.serving_dir)
    for model in ROLES:
        source = os.path.join(os.path.dirname(tiny_run.serving_dir), model, version)
        for number in ("100", "200"):
            shutil.copytree(source, serving / model / number)
    return tmp_path


def rollback(root, *args):
    from tfx_recsys import cli

    return cli.main(["rollback", "--root", str(root), *args])


def test_rollback_refuses_a_version_that_does_not_load(two_versions, capsys):
    broken = two_versions / "serving" / "retrieval" / "100" / "variables"
    shutil.rmtree(broken)
    before = _tree(two_versions)
    assert rollback(two_versions, "--to", "100") == 1
    err = capsys.readouterr().err
    assert "version 100 does not load" in err and "nothing was changed" in err
    assert "Traceback" not in err
    assert _tree(two_versions) == before


def test_rollback_refuses_a_broken_exact_twin_too(two_versions, capsys):
    pb = two_versions / "serving" / "retrieval_bruteforce" / "100" / "saved_model.pb"
    pb.write_bytes(b"garbage")
    before = _tree(two_versions)
    assert rollback(two_versions) == 1
    assert "retrieval_bruteforce" in capsys.readouterr().err
    assert _tree(two_versions) == before


class _FullDisk:
    """shutil for tfx_recsys.storage, whose copytree runs out of space in its
    `fail_on_call`-th call, halfway through (one file already written)."""

    def __init__(self, fail_on_call):
        self.fail_on_call, self.calls = fail_on_call, 0

    def __getattr__(self, name):
        return getattr(shutil, name)

    def copytree(self, src, dst, **kwargs):
        self.calls += 1
        if self.calls != self.fail_on_call:
            return shutil.copytree(src, dst, **kwargs)
        copied = []

        def copy(s, d, **kw):
            if copied:
                raise OSError(errno.ENOSPC, "No space left on device", d)
            copied.append(d)
            return shutil.copy2(s, d, **kw)

        return shutil.copytree(src, dst, copy_function=copy, **kwargs)


@pytest.mark.parametrize("fail_on_call", [1, 3])
def test_rollback_on_a_full_disk_changes_nothing(two_versions, capsys, fail_on_call):
    """The first copy fails (nothing staged yet), or the last (two staged)."""
    before = _tree(two_versions)
    with mock.patch.object(storage, "shutil", _FullDisk(fail_on_call)):
        assert rollback(two_versions, "--to", "100") == 1
    err = capsys.readouterr().err
    assert "nothing was changed" in err and "No space left on device" in err
    assert "Traceback" not in err
    assert _tree(two_versions) == before


def test_a_failed_rename_takes_back_the_versions_already_published(two_versions, capsys):
    real, renames = os.rename, []

    def rename(src, dst):
        renames.append(dst)
        if os.path.basename(os.path.dirname(dst)) == "retrieval":  # the last one
            raise OSError(errno.EIO, "Input/output error", dst)
        return real(src, dst)

    before = _tree(two_versions)
    with mock.patch.object(storage.os, "rename", rename):
        assert rollback(two_versions, "--to", "100") == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert _tree(two_versions) == before


def test_rollback_publishes_every_model_dir(two_versions, capsys):
    assert rollback(two_versions, "--to", "100") == 0
    out = capsys.readouterr().out
    newest = max(int(v) for v in os.listdir(two_versions / "serving" / "retrieval"))
    assert f"version 100 is now served again as version {newest}" in out
    for model in ROLES:
        assert sorted(os.listdir(two_versions / "serving" / model)) == \
            sorted(["100", "200", str(newest)])
