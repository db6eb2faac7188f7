"""Makes ml-metadata and TFDV load on hosts with glibc < 2.38 / libstdc++ < GCC 13.

Why this exists: the only Linux wheels of ml-metadata 1.21 and
tensorflow-data-validation 1.21 were built on a newer toolchain. Two of their
extension modules reference six symbols that older hosts (Debian 12: glibc
2.36, GCC 12) lack, so `import ml_metadata` (and with it all of TFX) fails:

  * `__isoc23_strtol`, `__isoc23_strtoul`, `__isoc23_strtoll`,
    `__isoc23_strtoull` (GLIBC_2.38): C23 spellings of the strto* family;
  * `__cxa_call_terminate` (CXXABI_1.3.15): terminate from a noexcept frame;
  * `std::ios_base_library_init()` (GLIBCXX_3.4.32): iostream initialisation.

The fix, applied per extension and only when that extension fails to load:

  1. compile a tiny shared library (`SHIM_SOURCE`, with the host's g++) that
     defines those symbols in terms of what the host has, and put it beside
     the extension;
  2. add it as a NEEDED entry with an `$ORIGIN` run path (patchelf);
  3. mark the extension's version requirements on the missing versions as
     weak (VER_FLG_WEAK in `.gnu.version_r`), so the loader no longer refuses
     the file; the symbols then bind to the shim's unversioned definitions.

Each extension is patched as a copy that is renamed over the installed file:
uv installs packages as hard links into its cache, and an in-place edit would
also change every other environment made from that cache.

Running it again is a no-op: an extension that already loads is left alone.
Usage: `python -m tfx_recsys.platform_compat [--check]` (exit 1 with --check
if something still does not load).
"""

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import List, NamedTuple, Optional

# Extension modules (relative to site-packages) known to need the shim.
EXTENSIONS = (
    "ml_metadata/metadata_store/pywrap/metadata_store_extension.so",
    "tensorflow_data_validation/pywrap/tensorflow_data_validation_extension.so",
)
# Symbol versions the shim stands in for; their references are made weak.
SHIMMED_VERSIONS = frozenset({"GLIBC_2.38", "CXXABI_1.3.15", "GLIBCXX_3.4.32"})
SHIM_NAME = "librecsys_glibc_shim.so"
VER_FLG_WEAK = 0x2

SHIM_SOURCE = r"""
#include <cstdlib>
#include <exception>
#include <ios>
#include <cxxabi.h>

extern "C" {
long __isoc23_strtol(const char* s, char** end, int base) {
  return std::strtol(s, end, base);
}
unsigned long __isoc23_strtoul(const char* s, char** end, int base) {
  return std::strtoul(s, end, base);
}
long long __isoc23_strtoll(const char* s, char** end, int base) {
  return std::strtoll(s, end, base);
}
unsigned long long __isoc23_strtoull(const char* s, char** end, int base) {
  return std::strtoull(s, end, base);
}
// Called by GCC >= 13 code when an exception leaves a noexcept function.
void __cxa_call_terminate(void* exception) noexcept {
  if (exception) __cxxabiv1::__cxa_begin_catch(exception);
  std::terminate();
}
}

namespace std {
// GCC 13 moved iostream initialisation into this function; older libstdc++
// initialises the standard streams through ios_base::Init instead.
void ios_base_library_init() { static ios_base::Init init; }
}
"""


class LoadResult(NamedTuple):
    path: str
    ok: bool
    error: str


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def try_load(path: str) -> LoadResult:
    """dlopen()s `path` in a child process, so a failure leaves no trace here."""
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, path],
                          capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    error = (lines[-1] if lines else f"exit code {proc.returncode}") if proc.returncode else ""
    return LoadResult(path, proc.returncode == 0, error)


def build_shim(output_path: str, compiler: str = "g++") -> None:
    """Compiles SHIM_SOURCE into a shared library at `output_path`."""
    if shutil.which(compiler) is None:
        raise RuntimeError(
            f"{compiler} not found: it is needed once to build {SHIM_NAME} for "
            "this host's old glibc. Install it (Debian: apt-get install g++) "
            "and run `make setup` again.")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "shim.cc")
        with open(source, "w") as f:
            f.write(SHIM_SOURCE)
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", output_path,
                        source], check=True)


def weak_version_offsets(path: str, versions=SHIMMED_VERSIONS) -> List[int]:
    """File offsets of the vna_flags fields of `versions` in .gnu.version_r."""
    from elftools.elf.elffile import ELFFile  # install-time dependency only

    offsets = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        section = elf.get_section_by_name(".gnu.version_r")
        if section is None:
            return offsets
        verneed_offset = section["sh_offset"]
        for verneed, vernaux_iter in section.iter_versions():
            aux_offset = verneed_offset + verneed["vn_aux"]
            for vernaux in vernaux_iter:
                if vernaux.name in versions:
                    # Elf64_Vernaux: vna_hash (4 bytes), vna_flags (2 bytes), ...
                    offsets.append(aux_offset + 4)
                aux_offset += vernaux["vna_next"]
            verneed_offset += verneed["vn_next"]
    return offsets


def _patchelf() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "patchelf")
    found = candidate if os.path.exists(candidate) else shutil.which("patchelf")
    if not found:
        raise RuntimeError("patchelf not found: it comes with the locked "
                           "dependencies; run `make setup`.")
    return found


def patch_extension(path: str, shim_path: str) -> None:
    """Links `path` against the shim and weakens its too-new version needs."""
    directory = os.path.dirname(path)
    local_shim = os.path.join(directory, SHIM_NAME)
    if os.path.abspath(shim_path) != os.path.abspath(local_shim):
        shutil.copyfile(shim_path, local_shim)
    patched = path + ".patching"
    shutil.copyfile(path, patched)  # a copy: never write through a hard link
    try:
        needed = subprocess.run([_patchelf(), "--print-needed", patched],
                                check=True, capture_output=True,
                                text=True).stdout.split()
        if SHIM_NAME not in needed:
            subprocess.run([_patchelf(), "--add-needed", SHIM_NAME, patched],
                           check=True)
        subprocess.run([_patchelf(), "--add-rpath", "$ORIGIN", patched],
                       check=True)
        with open(patched, "r+b") as f:
            for offset in weak_version_offsets(patched):
                f.seek(offset)
                f.write(VER_FLG_WEAK.to_bytes(2, "little"))
        os.chmod(patched, os.stat(path).st_mode)
        os.replace(patched, path)
    finally:
        if os.path.exists(patched):
            os.remove(patched)


def ensure_compatible(root: Optional[str] = None, verbose: bool = True) -> List[LoadResult]:
    """Patches every extension in EXTENSIONS that does not load; idempotent.

    Returns the load result of each extension after patching.
    """
    root = root or site_packages()
    results = []
    shim_dir = tempfile.mkdtemp()
    try:
        shim = None
        for relative in EXTENSIONS:
            path = os.path.join(root, relative)
            if not os.path.exists(path):
                results.append(LoadResult(path, False, "not installed"))
                continue
            result = try_load(path)
            if not result.ok:
                if verbose:
                    print(f"platform_compat: patching {relative} ({result.error})")
                if shim is None:
                    shim = os.path.join(shim_dir, SHIM_NAME)
                    build_shim(shim)
                patch_extension(path, shim)
                result = try_load(path)
            results.append(result)
    finally:
        shutil.rmtree(shim_dir, ignore_errors=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report, patch nothing")
    args = parser.parse_args(argv)
    if args.check:
        results = [try_load(os.path.join(site_packages(), r)) for r in EXTENSIONS]
    else:
        try:
            results = ensure_compatible()
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"platform_compat: {e}", file=sys.stderr)
            return 1
    for r in results:
        print(f"platform_compat: {'ok ' if r.ok else 'FAIL'} {r.path} {r.error}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
