"""Runs a compiled KFP v2 pipeline spec task by task, as KFP's launcher does.

A test harness, not a product runner: it reads only the compiled file (a
`.yaml` pipeline spec for the open-source backend, or a Vertex `.json`
PipelineJob) and executes it the way a cluster would, one process per task:

* order: the DAG's `dependentTasks` and the producers of each task's inputs;
  independent tasks may run side by side (`parallel`);
* each container task gets its `ExecutorInput`: input artifacts from upstream
  outputs, typed by the consuming component's input definitions (TFX picks
  its artifact class by the type's title), each with a `name` (TFX hashes it
  into the artifact id), `uri` and `metadata`; input parameters from
  constants, the run's runtime parameters (spec defaults, overridden) and
  upstream output parameters; output artifacts with fresh URIs (only their
  parent directories are created, as KFP's launcher does), output parameter
  files, and `outputFile` for the ExecutorOutput;
* the container's command and args with placeholders substituted (`{{$}}`,
  `{{$.inputs.parameters['k']}}`, `{{$.inputs.artifacts['k'].uri}}`,
  `{{$.outputs.artifacts['k'].uri}}`, `{{$.outputs.parameters['k'].output_file}}`),
  run in the venv or, with `image=`, inside the built image (buildah run);
* afterwards the ExecutorOutput (artifact metadata, output parameters) is
  read back, as the launcher publishes it;
* caching as KFP's: a task with caching enabled whose cache key (input
  artifact names, input parameter values, output types, image, command and
  args) matches an earlier execution reuses that execution's outputs;
* backend rules: "kfp" (the open-source backend) runs container tasks only
  and refuses resolver executors and lifecycle hooks, as that backend does;
  "vertex" also runs the ExampleGen driver hook (`lifecycle.preCacheCheck`,
  before the cache check) and resolver tasks, whose filters it evaluates
  against the artifacts of earlier runs in the launcher's store, newest
  match first (what Vertex ML Metadata answers).

State across runs (the "metadata store": artifacts and the cache) is a JSON
file under `store_dir`. Each task's ExecutorInput and log are kept in its
task directory. Per task it records the state, wall time and peak memory
(the largest peak RSS, VmHWM, of the task's processes, sampled from /proc:
the launcher's own rusage would count the launcher's memory, which a forked
child shares until it execs).

  python tests/kfp_launcher.py SPEC --root DIR [--param NAME=VALUE ...]
      [--parallel N] [--in-image localhost/tfx-recsys] [--mount DIR ...]
"""

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from typing import Any, Dict, List, Optional, Sequence

import yaml

BACKENDS = ("kfp", "vertex")
_TYPES = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str,
          "BOOLEAN": bool}
_PLACEHOLDER = re.compile(r"\{\{\$(?:\.(inputs|outputs)\.(parameters|artifacts)"
                          r"\['([^']+)'\](?:\.(uri|path|output_file))?)?\}\}")
_FILTER_CLAUSE = re.compile(r'^(schema_title|name|uri)="(.*)"$|^state=(LIVE)$'
                            r'|^metadata\.([\w.-]+)\.(number_value|string_value)=(.+)$')


class LaunchError(RuntimeError):
    """A task failed, or the spec holds what the backend would refuse."""


@dataclasses.dataclass
class TaskResult:
    name: str
    state: str  # SUCCEEDED, CACHED, SKIPPED (resolver/none), FAILED
    seconds: float = 0.0
    max_rss_mb: float = 0.0
    task_dir: str = ""
    executor_input: Optional[dict] = None
    outputs: Dict[str, List[dict]] = dataclasses.field(default_factory=dict)
    parameters: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunResult:
    run_id: str
    parameters: Dict[str, Any]
    tasks: Dict[str, TaskResult]
    seconds: float

    def table(self) -> str:
        """One line per task: state, seconds, peak MB (executed tasks)."""
        lines = [f"{'task':<28} {'state':<10} {'seconds':>8} {'peak MB':>8}"]
        for name, task in self.tasks.items():
            lines.append(f"{name:<28} {task.state:<10} {task.seconds:8.1f} "
                         f"{task.max_rss_mb:8.0f}")
        lines.append(f"{'(run)':<28} {'':<10} {self.seconds:8.1f}")
        return "\n".join(lines)


def load_spec(path: str):
    """(pipeline spec dict, default pipeline root, backend) of a compiled file."""
    with open(path) as f:
        if path.endswith(".json"):
            job = json.load(f)
            return (job["pipelineSpec"],
                    job.get("runtimeConfig", {}).get("gcsOutputDirectory"), "vertex")
        documents = [d for d in yaml.safe_load_all(f) if d]
    [spec] = [d for d in documents if "pipelineInfo" in d]
    return spec, spec.get("defaultPipelineRoot"), "kfp"


def _constant(value_spec: dict):
    """A runtimeValue's constant (schema 2.1 `constant`, or 2.0 `constantValue`)."""
    if "constant" in value_spec:
        return value_spec["constant"]
    legacy = value_spec["constantValue"]
    for key in ("stringValue", "doubleValue"):
        if key in legacy:
            return legacy[key]
    return int(legacy["intValue"])


def _typed(value, parameter_type: str):
    kind = _TYPES.get(parameter_type)
    if kind is None or value is None:
        return value
    if kind is int:
        return int(float(value)) if isinstance(value, (int, float, str)) else value
    if kind is bool and isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return kind(value)


class _Store:
    """Artifacts of every run and the cache: what KFP keeps in ML Metadata."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "store.json")
        self.lock = threading.Lock()
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.data = json.load(f)
        else:
            self.data = {"next_id": 1, "runs": 0, "artifacts": [], "cache": {}}

    def save(self) -> None:
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(self.path + ".tmp", self.path)

    def new_id(self) -> int:
        with self.lock:
            self.data["next_id"] += 1
            return self.data["next_id"] - 1

    def record(self, artifact: dict, schema_title: str) -> None:
        with self.lock:
            self.data["artifacts"].append(dict(artifact, schemaTitle=schema_title,
                                               state="LIVE"))

    def query(self, conditions: List, input_artifacts: Dict[str, List[dict]]):
        """The newest LIVE artifact meeting every condition, or None."""
        for artifact in reversed(self.data["artifacts"]):
            if all(condition(artifact) for condition in conditions):
                return artifact
        return None


def _schema_title(artifact_type: dict) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return yaml.safe_load(artifact_type["instanceSchema"]).get("title", "system.Artifact")


class Launcher:
    """Executes a compiled spec; see the module docstring.

    spec_path: the compiled .yaml (backend "kfp") or .json (backend "vertex").
    store_dir: where the store (artifacts, cache) and task logs live; the
      same directory across runs makes them one deployment's history.
    pipeline_root: artifact root (default: the spec's).
    image: run every container task inside this image with buildah
      (`mounts` are bound at the same paths); None: in this machine's
      environment, with `python` from `python_bin`'s directory.
    parallel: tasks of this run at once at most.
    slots: a semaphore every task process holds while it runs, shared by
      launchers that run side by side (so that together they run no more
      processes than it allows); None: no limit but `parallel`.
    env: extra environment of every task.
    """

    def __init__(self, spec_path: str, store_dir: str, pipeline_root: Optional[str] = None,
                 image: Optional[str] = None, mounts: Sequence[str] = (),
                 parallel: int = 1, env: Optional[Dict[str, str]] = None,
                 python_bin: str = sys.executable,
                 slots: Optional[threading.Semaphore] = None):
        self.spec, default_root, self.backend = load_spec(spec_path)
        self.pipeline_root = pipeline_root or default_root
        if not self.pipeline_root:
            raise LaunchError("no pipeline root: the spec names none, pass pipeline_root")
        self.store = _Store(store_dir)
        self.store_dir = store_dir
        self.image = image
        self.mounts = list(mounts)
        self.parallel = max(1, parallel)
        self.slots = slots
        self.env = dict(env or {})
        self.bin_dir = os.path.dirname(os.path.abspath(python_bin))
        self._check_backend_rules()

    # -- the spec --------------------------------------------------------

    def _check_backend_rules(self) -> None:
        executors = self.spec["deploymentSpec"]["executors"]
        for label, executor in executors.items():
            kinds = set(executor)
            allowed = {"container", "importer"} | ({"resolver"} if self.backend == "vertex"
                                                   else set())
            if not kinds <= allowed:
                raise LaunchError(f"{self.backend} backend: executor {label} is "
                                  f"{', '.join(sorted(kinds - allowed))}")
            if "importer" in kinds:
                raise LaunchError(f"executor {label}: importer tasks are not implemented "
                                  "in this launcher")
            if self.backend == "kfp" and executor.get("container", {}).get("lifecycle"):
                raise LaunchError(f"kfp backend: executor {label} has lifecycle hooks")
        for name, task in self.spec["root"]["dag"]["tasks"].items():
            component = self.spec["components"][task["componentRef"]["name"]]
            if "dag" in component or task.get("triggerPolicy") or task.get("iteratorPolicy") \
                    or "parameterIterator" in task or "artifactIterator" in task:
                raise LaunchError(f"task {name}: sub-DAGs, conditions and loops are not "
                                  "implemented in this launcher")

    def _order(self) -> List[str]:
        tasks = self.spec["root"]["dag"]["tasks"]
        self._upstream = {}
        for name, task in tasks.items():
            upstream = set(task.get("dependentTasks", []))
            for kind, key in (("artifacts", "taskOutputArtifact"),
                              ("parameters", "taskOutputParameter")):
                for source in task.get("inputs", {}).get(kind, {}).values():
                    if key in source:
                        upstream.add(source[key]["producerTask"])
            unknown = upstream - set(tasks)
            if unknown:
                raise LaunchError(f"task {name} depends on unknown {sorted(unknown)}")
            self._upstream[name] = upstream
        # Of the tasks ready at once, those with the most tasks after them
        # start first (a scheduling choice: a backend promises no order).
        downstream = {name: set() for name in tasks}
        for name in tasks:
            stack = list(self._upstream[name])
            while stack:
                upstream = stack.pop()
                if name not in downstream[upstream]:
                    downstream[upstream].add(name)
                    stack.extend(self._upstream[upstream])
        self._priority = {name: (-len(downstream[name]), name) for name in tasks}
        order, done = [], set()
        while len(order) < len(tasks):
            ready = sorted(n for n in tasks if n not in done and self._upstream[n] <= done)
            if not ready:
                raise LaunchError("the DAG has a cycle")
            order.extend(ready)
            done.update(ready)
        return order

    def root_parameters(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        declared = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise LaunchError(f"unknown runtime parameters {sorted(unknown)}")
        values = {}
        for name, definition in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "defaultValue" in definition:
                value = definition["defaultValue"]
            elif definition.get("isOptional"):
                continue
            else:
                raise LaunchError(f"runtime parameter {name} has no default: give it")
            values[name] = _typed(value, definition.get("parameterType"))
        return values

    # -- a run -----------------------------------------------------------

    def run(self, parameters: Optional[Dict[str, Any]] = None,
            run_id: Optional[str] = None) -> RunResult:
        """Runs every task; raises LaunchError (with the log's tail) when one fails."""
        started = time.monotonic()
        with self.store.lock:
            self.store.data["runs"] += 1
            number = self.store.data["runs"]
        run_id = run_id or f"run-{number}"
        root_values = self.root_parameters(parameters or {})
        order = self._order()
        results: Dict[str, TaskResult] = {}
        pending = list(order)
        running: Dict[futures.Future, str] = {}
        failure = None
        with futures.ThreadPoolExecutor(self.parallel) as pool:
            while pending or running:
                if failure is None:
                    ready = sorted((n for n in pending if self._upstream[n] <= set(results)),
                                   key=self._priority.get)
                    for name in ready[:self.parallel - len(running)]:
                        pending.remove(name)
                        running[pool.submit(self._run_task, name, run_id, root_values,
                                            results)] = name
                if not running:
                    break
                done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    try:
                        results[name] = future.result()
                    except LaunchError as e:
                        failure = failure or e
                self.store.save()
        if failure is not None:
            raise failure
        return RunResult(run_id=run_id, parameters=root_values,
                         tasks={n: results[n] for n in order},
                         seconds=time.monotonic() - started)

    def _run_task(self, name: str, run_id: str, root_values: Dict[str, Any],
                  results: Dict[str, TaskResult]) -> TaskResult:
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        task_dir = os.path.join(self.pipeline_root, self.spec["pipelineInfo"]["name"],
                                run_id, name)
        inputs = self._inputs(task, component, root_values, results)
        if "resolver" in executor:
            return self._resolve(name, executor["resolver"], component, inputs, task_dir)
        return self._container(name, task, component, executor["container"], inputs,
                               task_dir)

    def _inputs(self, task: dict, component: dict, root_values: Dict[str, Any],
                results: Dict[str, TaskResult]) -> dict:
        definitions = component.get("inputDefinitions", {})
        parameters = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in source:
                value = _constant(source["runtimeValue"])
            elif "componentInputParameter" in source:
                if source["componentInputParameter"] not in root_values:
                    continue
                value = root_values[source["componentInputParameter"]]
            elif "taskOutputParameter" in source:
                producer = source["taskOutputParameter"]
                value = results[producer["producerTask"]].parameters[
                    producer["outputParameterKey"]]
            else:
                raise LaunchError(f"input parameter {key}: unsupported source {source}")
            parameters[key] = value
        for key, definition in definitions.get("parameters", {}).items():
            if key not in parameters and "defaultValue" in definition:
                parameters[key] = definition["defaultValue"]
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in source:
                raise LaunchError(f"input artifact {key}: unsupported source {source}")
            producer = source["taskOutputArtifact"]
            upstream = results[producer["producerTask"]].outputs.get(
                producer["outputArtifactKey"], [])
            artifact_type = definitions["artifacts"][key]["artifactType"]
            # The consumer's declared type, as KFP hands artifacts over.
            artifacts[key] = [{"name": a["name"], "type": artifact_type, "uri": a["uri"],
                               "metadata": a.get("metadata", {})} for a in upstream]
        return {"parameterValues": parameters,
                "artifacts": {k: {"artifacts": v} for k, v in artifacts.items() if v}}

    def _artifact_name(self) -> str:
        number = self.store.new_id()
        if self.backend == "vertex":
            return f"projects/local/locations/local/metadataStores/default/artifacts/{number}"
        return str(number)

    def _container(self, name: str, task: dict, component: dict, container: dict,
                   inputs: dict, task_dir: str) -> TaskResult:
        outputs_spec = component.get("outputDefinitions", {})
        output_file = os.path.join(task_dir, "executor_output.json")
        executor_input = {
            "inputs": inputs,
            "outputs": {
                "artifacts": {
                    key: {"artifacts": [{
                        "name": self._artifact_name(),
                        "type": spec["artifactType"],
                        "uri": os.path.join(task_dir, key),
                        "metadata": {}}]}
                    for key, spec in outputs_spec.get("artifacts", {}).items()},
                "parameters": {key: {"outputFile": os.path.join(task_dir, "parameters", key)}
                               for key in outputs_spec.get("parameters", {})},
                "outputFile": output_file,
            },
        }
        _check_executor_input(executor_input)
        os.makedirs(task_dir, exist_ok=True)
        # KFP's launcher makes only the parents of output paths.
        for spec in executor_input["outputs"]["artifacts"].values():
            os.makedirs(os.path.dirname(spec["artifacts"][0]["uri"]), exist_ok=True)
        os.makedirs(os.path.join(task_dir, "parameters"), exist_ok=True)
        result = TaskResult(name=name, state="SUCCEEDED", task_dir=task_dir,
                            executor_input=executor_input)

        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook:  # Vertex: the driver runs first; its output feeds the cache key
            self._execute(name + ".preCacheCheck", hook["command"], hook.get("args", []),
                          container, executor_input, task_dir, result)
            driver_output = _read_json(output_file) or {}
            executor_input["inputs"]["parameterValues"].update(
                driver_output.get("parameterValues", {}))

        cache_key = None
        if task.get("cachingOptions", {}).get("enableCache"):
            cache_key = _cache_key(executor_input, outputs_spec, container)
            hit = self.store.data["cache"].get(cache_key)
            if hit is not None:
                result.state = "CACHED"
                result.outputs, result.parameters = hit["outputs"], hit["parameters"]
                _write_json(os.path.join(task_dir, "executor_input.json"), executor_input)
                return result

        _write_json(os.path.join(task_dir, "executor_input.json"), executor_input)
        self._execute(name, container.get("command", []), container.get("args", []),
                      container, executor_input, task_dir, result)
        executor_output = _read_json(output_file) or {}
        for key, listed in executor_input["outputs"]["artifacts"].items():
            artifact = dict(listed["artifacts"][0])
            written = executor_output.get("artifacts", {}).get(key, {}).get("artifacts", [])
            if written:
                artifact["metadata"] = written[0].get("metadata", {})
                artifact["uri"] = written[0].get("uri") or artifact["uri"]
            result.outputs[key] = [artifact]
            self.store.record(artifact, _schema_title(artifact["type"]))
        for key, spec in outputs_spec.get("parameters", {}).items():
            if key in executor_output.get("parameterValues", {}):
                value = executor_output["parameterValues"][key]
            else:
                path = executor_input["outputs"]["parameters"][key]["outputFile"]
                if not os.path.exists(path):
                    raise LaunchError(f"task {name} wrote no output parameter {key}")
                with open(path) as f:
                    value = f.read()
            result.parameters[key] = _typed(value, spec.get("parameterType"))
        if cache_key is not None:
            with self.store.lock:
                self.store.data["cache"][cache_key] = {"outputs": result.outputs,
                                                       "parameters": result.parameters}
        return result

    def _execute(self, label: str, command: List[str], args: List[str], container: dict,
                 executor_input: dict, task_dir: str, result: TaskResult) -> None:
        argv = [_substitute(a, executor_input) for a in list(command) + list(args)]
        log_path = os.path.join(task_dir, f"{label.replace('/', '_')}.log")
        scratch = tempfile.mkdtemp(prefix="tmp-", dir=task_dir)  # the pod's /tmp
        if self.image:
            argv = self._in_image(argv, scratch)
            env = dict(os.environ)
        else:
            env = dict(os.environ, PATH=self.bin_dir + os.pathsep + os.environ["PATH"],
                       TMPDIR=scratch, **self.env)
        if self.slots is not None:
            self.slots.acquire()
        try:
            started = time.monotonic()
            with open(log_path, "wb") as log:
                process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                           env=env, cwd=scratch if not self.image else None)
                peak = _PeakMemory(process.pid)
                process.wait()
                peak.stop()
        finally:
            if self.slots is not None:
                self.slots.release()
        result.seconds += time.monotonic() - started
        result.max_rss_mb = max(result.max_rss_mb, peak.mb)
        shutil.rmtree(scratch, ignore_errors=True)
        if process.returncode != 0:
            result.state = "FAILED"
            with open(log_path, "rb") as f:
                tail = f.read()[-4000:].decode(errors="replace")
            raise LaunchError(f"task {label} failed (exit {process.returncode}); "
                              f"log {log_path}:\n{tail}")

    def _in_image(self, argv: List[str], scratch: str) -> List[str]:
        """buildah run in a fresh working container of the image: bind mounts
        at the same paths, the scratch dir as /tmp, the host network."""
        # The scratch dir is the pod's /tmp: mounted first, so that mounts
        # below /tmp (pytest's directories) are not hidden by it.
        volumes = ["-v", f"{scratch}:/tmp:rw"]
        for path in sorted(set(self.mounts + [self.pipeline_root, self.store_dir])):
            volumes += ["-v", f"{path}:{path}:rw"]
        script = ('set -e; c=$(buildah from --pull-never "$0"); '
                  'trap \'buildah rm "$c" >/dev/null\' EXIT; '
                  'buildah run --isolation chroot --network host "$@" "$c" -- '
                  + " ".join(_shell_quote(a) for a in argv))
        return ["bash", "-c", script, self.image, *volumes,
                *[x for k, v in self.env.items() for x in ("--env", f"{k}={v}")]]

    # -- Vertex resolver tasks --------------------------------------------

    def _resolve(self, name: str, resolver: dict, component: dict, inputs: dict,
                 task_dir: str) -> TaskResult:
        result = TaskResult(name=name, state="SUCCEEDED", task_dir=task_dir)
        started = time.monotonic()
        input_artifacts = {k: v["artifacts"] for k, v in inputs["artifacts"].items()}
        for key, query in resolver.get("outputArtifactQueries", {}).items():
            conditions = _parse_filter(query["filter"], input_artifacts)
            found = None if conditions is None else self.store.query(conditions,
                                                                     input_artifacts)
            result.outputs[key] = [] if found is None else [
                {k: v for k, v in found.items() if k in ("name", "uri", "metadata", "type")}]
        result.seconds = time.monotonic() - started
        if not any(result.outputs.values()):
            result.state = "SKIPPED"  # nothing matched: consumers get no artifact
        return result


class _PeakMemory:
    """Samples the peak RSS (VmHWM) of a process and its descendants every
    `interval` seconds until stop(); `mb` is the largest one seen. A peak
    reached in the last interval before a process ends can be missed."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.mb = 0.0
        self._pid, self._interval = pid, interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _tree(self) -> List[int]:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        # pid (comm) state ppid ...: comm may hold spaces.
                        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        tree, frontier = [self._pid], [self._pid]
        while frontier:
            frontier = [p for p, parent in parents.items() if parent in frontier]
            tree.extend(frontier)
        return tree

    def _sample(self) -> None:
        while not self._stopped.wait(self._interval):
            for pid in self._tree():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.mb = max(self.mb, int(line.split()[1]) / 1024)
                                break
                except OSError:
                    continue


def _parse_filter(text: str, input_artifacts: Dict[str, List[dict]]):
    """A Vertex ML Metadata filter ("a AND b ...") as predicates over stored
    artifacts; None if a placeholder names an input artifact that is absent
    (Vertex then resolves nothing)."""
    conditions = []
    for clause in text.split(" AND "):
        clause = clause.strip()
        missing: List[str] = []
        clause = re.sub(r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.metadata\['([^']+)'\]\}\}",
                        lambda m: _filled(m, input_artifacts, missing), clause)
        if missing:
            return None
        match = _FILTER_CLAUSE.match(clause)
        if not match:
            raise LaunchError(f"unsupported filter clause {clause!r}")
        field, value, live, meta_key, meta_kind, meta_value = match.groups()
        if field == "schema_title":
            conditions.append(lambda a, v=value: a["schemaTitle"] == v)
        elif field in ("name", "uri"):
            conditions.append(lambda a, f=field, v=value: a[f] == v)
        elif live:
            conditions.append(lambda a: a["state"] == "LIVE")
        else:
            wanted = (float(meta_value) if meta_kind == "number_value"
                      else meta_value.strip('"'))
            conditions.append(lambda a, k=meta_key, w=wanted:
                              a.get("metadata", {}).get(k) == w)
    return conditions


def _filled(match, input_artifacts, missing) -> str:
    key, metadata_key = match.groups()
    listed = input_artifacts.get(key) or []
    if not listed:
        missing.append(key)
        return ""
    value = listed[0].get("metadata", {}).get(metadata_key, "")
    if isinstance(value, float) and value.is_integer():
        value = repr(value)  # what Vertex prints of a number: e.g. 3.9e+18
    return str(value)


def _substitute(arg: str, executor_input: dict) -> str:
    def value(match):
        where, kind, key, attribute = match.groups()
        if where is None:
            return json.dumps(executor_input, sort_keys=True)
        section = executor_input[where]
        if kind == "parameters":
            if where == "outputs":
                return section["parameters"][key]["outputFile"]
            found = section["parameterValues"][key]
            return found if isinstance(found, str) else json.dumps(found)
        artifact = section["artifacts"][key]["artifacts"][0]
        return artifact["uri"]  # .uri and .path: one filesystem here

    return _PLACEHOLDER.sub(value, arg)


def _check_executor_input(executor_input: dict) -> None:
    """Parses as KFP's own ExecutorInput proto (a typo fails here, not in TFX)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())


def _cache_key(executor_input: dict, outputs_spec: dict, container: dict) -> str:
    """KFP's cache key: input artifact names, input parameter values, output
    artifact and parameter types, image, command and args."""
    inputs = executor_input["inputs"]
    key = {
        "inputArtifactNames": {k: [a["name"] for a in v["artifacts"]]
                               for k, v in inputs.get("artifacts", {}).items()},
        "inputParameterValues": inputs.get("parameterValues", {}),
        "outputArtifactsSpec": {k: v["artifactType"]
                                for k, v in outputs_spec.get("artifacts", {}).items()},
        "outputParametersSpec": {k: v.get("parameterType")
                                 for k, v in outputs_spec.get("parameters", {}).items()},
        "containerSpec": {"image": container.get("image"),
                          "cmdArgs": list(container.get("command", []))
                          + list(container.get("args", []))},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="compiled .yaml (KFP) or .json (Vertex)")
    parser.add_argument("--root", required=True,
                        help="the launcher's store and logs (and default artifact root)")
    parser.add_argument("--pipeline-root", help="artifact root (default: the spec's)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--in-image", metavar="IMAGE",
                        help="run every task inside this image (buildah run)")
    parser.add_argument("--mount", action="append", default=[],
                        help="a host directory the tasks need inside the image "
                             "(bound at the same path), repeatable")
    args = parser.parse_args(argv)
    params = dict(p.split("=", 1) for p in args.param)
    launcher = Launcher(args.spec, os.path.join(args.root, "launcher"),
                        pipeline_root=args.pipeline_root or os.path.join(args.root, "pipeline"),
                        image=args.in_image, mounts=args.mount, parallel=args.parallel)
    try:
        result = launcher.run(params)
    except LaunchError as e:
        print(f"kfp_launcher: {e}", file=sys.stderr)
        return 1
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
