"""The glibc compatibility step: the stack imports, and the patch itself works."""

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from tfx_recsys import platform_compat

HOST_HAS_GLIBC_2_38 = tuple(int(x) for x in platform.libc_ver()[1].split(".")[:2]) >= (2, 38)


@pytest.mark.integration
@pytest.mark.parametrize("statement", [
    "import ml_metadata.metadata_store.pywrap.metadata_store_extension",
    "import tensorflow_data_validation",
    "import tfx_bsl.public.tfxio",
    "from scann.scann_ops.py import scann_ops",
    "import tensorflow_recommenders",
])
def test_stack_imports_in_a_fresh_process(statement):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run([sys.executable, "-c", statement], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_installed_extensions_load_and_a_second_run_changes_nothing():
    paths = [os.path.join(platform_compat.site_packages(), r)
             for r in platform_compat.EXTENSIONS]
    before = [os.stat(p).st_mtime_ns for p in paths]
    results = platform_compat.ensure_compatible(verbose=False)
    assert all(r.ok for r in results), results
    assert [os.stat(p).st_mtime_ns for p in paths] == before


def _library_needing_glibc_2_38(directory):
    """A shared library that references __isoc23_strtol@GLIBC_2.38.

    Linked against a stand-in libc.so.6 that defines that version, so at run
    time the host's real libc is asked for it: the same failure as the
    ml-metadata and TFDV extensions on an old host.
    """
    fake = os.path.join(directory, "fake")
    os.makedirs(fake)
    with open(os.path.join(fake, "v.map"), "w") as f:
        f.write("GLIBC_2.38 { global: __isoc23_strtol; };\n")
    with open(os.path.join(fake, "f.c"), "w") as f:
        f.write("long __isoc23_strtol(const char* s, char** e, int b) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-nostdlib",
                    f"-Wl,--version-script={fake}/v.map", "-Wl,-soname,libc.so.6",
                    "-o", f"{fake}/libc.so.6", f"{fake}/f.c"], check=True)
    source = os.path.join(directory, "needs_new.c")
    with open(source, "w") as f:
        f.write("extern long __isoc23_strtol(const char*, char**, int);\n"
                "long parse(const char* s) { return __isoc23_strtol(s, 0, 10); }\n")
    library = os.path.join(directory, "libneeds_new.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-nostdlib", "-o", library, source,
                    f"{fake}/libc.so.6"], check=True)
    return library


def test_patch_makes_a_too_new_library_load_and_work(tmp_path):
    library = _library_needing_glibc_2_38(str(tmp_path))
    if not HOST_HAS_GLIBC_2_38:
        assert not platform_compat.try_load(library).ok
    assert platform_compat.weak_version_offsets(library)

    shim = os.path.join(tmp_path, "built", platform_compat.SHIM_NAME)
    os.makedirs(os.path.dirname(shim))
    platform_compat.build_shim(shim)
    platform_compat.patch_extension(library, shim)
    platform_compat.patch_extension(library, shim)  # idempotent

    assert platform_compat.try_load(library).ok
    loaded = ctypes.CDLL(library)
    loaded.parse.restype = ctypes.c_long
    assert loaded.parse(b"12345") == 12345  # forwarded to the host's strtol
    assert os.path.exists(os.path.join(tmp_path, platform_compat.SHIM_NAME))


def test_patch_replaces_the_file_instead_of_writing_through_hard_links(tmp_path):
    library = _library_needing_glibc_2_38(str(tmp_path))
    cache_copy = os.path.join(tmp_path, "cache_copy.so")
    os.link(library, cache_copy)  # as uv's cache does
    with open(cache_copy, "rb") as f:
        original = f.read()
    shim = os.path.join(tmp_path, platform_compat.SHIM_NAME)
    platform_compat.build_shim(shim)
    platform_compat.patch_extension(library, shim)
    with open(cache_copy, "rb") as f:
        assert f.read() == original
    with open(library, "rb") as f:
        assert f.read() != original


def test_missing_compiler_is_an_actionable_error(tmp_path):
    with pytest.raises(RuntimeError, match="not found.*make setup"):
        platform_compat.build_shim(str(tmp_path / "x.so"), compiler="no-such-g++")
