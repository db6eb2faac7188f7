"""Keeps TFX from packaging itself for Beam runners that stage nothing.

Before every Beam-based component (ExampleGen, StatisticsGen, Transform, the
evaluator...), TFX 1.21's BaseBeamExecutor calls
`dependency_utils.make_beam_dependency_flags(beam_pipeline_args)`. Unless the
args already name a package (--setup_file, --extra_package, a container
image...), that copies TFX's installed source, 42 MB, into a fresh
`tempfile.mkdtemp()` directory, builds an sdist of it (about 1.3 s) and adds
`--extra_package=` for remote workers. Nothing ever removes the directory.
The in-process runners a local run uses (FnApiRunner, DirectRunner) start
their workers from this Python and never stage a package, so for them the
sdist is pure cost: a run left one 42 MB directory in /tmp per Beam
component, and a day of test and benchmark runs filled the disk.

`tfx_sdist_only_for_remote_runners()` makes TFX skip the sdist when the run's
runner is a local one and leaves every other runner (Dataflow, Flink, Spark)
with TFX's own behaviour. A remote runner's workers need this package too,
which that sdist does not hold: give them --setup_file or a container image
(see beam_options.beam_args), and TFX then builds nothing either.
"""

import contextlib
from typing import Iterator, List, Optional, Sequence

# Runners that execute the pipeline in this process or in worker processes
# started from this Python: nothing is staged. The default runner is
# DirectRunner.
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner",
                 "SwitchingDirectRunner")


def runner_name(beam_pipeline_args: Sequence[str]) -> Optional[str]:
    """The --runner of `beam_pipeline_args` ("--runner=X" or "--runner X"),
    without a module path; None when the args give none (Beam's default)."""
    args = list(beam_pipeline_args)
    name = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            name = args[i + 1]
    return name.rsplit(".", 1)[-1] if name else None


def stages_packages(beam_pipeline_args: Sequence[str]) -> bool:
    """Whether the runner of `beam_pipeline_args` ships packages to workers."""
    name = runner_name(beam_pipeline_args)
    return name is not None and name not in LOCAL_RUNNERS


@contextlib.contextmanager
def tfx_sdist_only_for_remote_runners() -> Iterator[None]:
    """Within the block, TFX's Beam executors build their sdist of TFX only
    for runners that stage packages (see the module docstring)."""
    from tfx.utils import dependency_utils

    tfx_flags = dependency_utils.make_beam_dependency_flags
    if getattr(tfx_flags, "_remote_only", False):  # nested: already in effect
        yield
        return

    def dependency_flags(beam_pipeline_args: List[str]) -> List[str]:
        if not stages_packages(beam_pipeline_args):
            return beam_pipeline_args
        return tfx_flags(beam_pipeline_args)

    dependency_flags._remote_only = True  # pylint: disable=protected-access
    dependency_utils.make_beam_dependency_flags = dependency_flags
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = tfx_flags
