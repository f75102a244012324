"""Instrumented builds of exporter/_lines.c, each into a directory of its own.

Why a separate build: the sanitizers have to be compiled into the extension (the
interpreter itself is not instrumented, its allocations are seen through ``malloc`` once
``PYTHONMALLOC=malloc``), and the repository's ``exporter/_lines*.so`` must never be
replaced under the processes that use it. The runtime of the sanitizers is preloaded
into the interpreter (``LD_PRELOAD``): it has to come first among the libraries, before
the extension that needs it is loaded.

Two toolchains:

* ``sanitizers()``: gcc with ASan + UBSan, for the native differential tests
  (tests/test_native_sanitized.py);
* ``fuzzing()``: clang with ASan + UBSan and libFuzzer's coverage
  instrumentation (``-fsanitize=fuzzer-no-link``: edge counters, the PC table and
  comparison tracing), for the atheris fuzz target (tests/fuzz/target.py). Its runtime is
  atheris's ``asan_with_fuzzer.so`` (ASan, UBSan's handlers and libFuzzer in one library),
  so the coverage of the C parser reaches atheris's libFuzzer.

``python -m tests.fuzz.build [--fuzzer] OUT`` builds one and prints the environment to run
it with (scripts/build-sanitized).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "exporter" / "_lines.c"
# A module with one memory bug and one undefined behaviour: the sanitizers must see both.
CANARY = Path(__file__).resolve().parent / "canary.c"
# A double out of an integer's range converted to it is undefined too, and a number
# parser's kind of bug; gcc leaves it out of "undefined". Every report stops the process
# (and fails the test or the fuzz run) rather than printing and going on.
SANITIZE = ("-fsanitize=address,undefined,float-cast-overflow", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all")
COMPILE = ("-fPIC", "-O1", "-g", "-Wall", "-Wextra")
# CPython leaks by design at exit; the interpreter's own allocator would hide the objects
# from ASan, so it allocates with malloc; every report aborts (non-zero exit, no recovery).
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:strict_string_checks=1"
                    ":detect_stack_use_after_return=1:check_initialization_order=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "PYTHONMALLOC": "malloc",
}


@dataclass(frozen=True)
class Toolchain:
    """How to compile the instrumented extension and what to preload to run it."""

    compiler: str
    flags: tuple[str, ...]
    preload: tuple[Path, ...]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the runtime preloaded and
        the sanitizer options set."""
        env = dict(os.environ if base is None else base)
        env.update(SANITIZER_ENV)
        env["LD_PRELOAD"] = " ".join(str(p) for p in self.preload)
        return env


def _runtime(compiler: str, name: str) -> Path:
    """The compiler's own copy of a sanitizer runtime (``gcc -print-file-name``)."""
    found = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True,
                           text=True, check=True).stdout.strip()
    path = Path(found)
    if not path.is_absolute() or not path.exists():
        raise FileNotFoundError(f"{compiler} has no {name} (libasan/libubsan missing?)")
    return path.resolve()


def sanitizers(compiler: str = "gcc") -> Toolchain:
    """gcc's ASan and UBSan (libasan, libubsan): the sanitizer build of the tests."""
    return Toolchain(compiler, SANITIZE,
                     (_runtime(compiler, "libasan.so"), _runtime(compiler, "libubsan.so")))


def atheris_dir() -> Path:
    """Where atheris keeps its runtimes (``atheris.path()``), found without importing
    atheris: its import loads a libFuzzer of its own into the process."""
    spec = importlib.util.find_spec("atheris")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("atheris is not installed (the test extra: scripts/test)")
    return Path(spec.origin).resolve().parent.parent


def fuzzing(runtimes: Path | None = None, compiler: str = "clang") -> Toolchain:
    """clang's coverage instrumentation for libFuzzer plus ASan and UBSan, run with the
    runtime that atheris ships (in ``runtimes``, by default ``atheris_dir()``)."""
    runtime = (runtimes or atheris_dir()) / "asan_with_fuzzer.so"
    if not runtime.exists():
        raise FileNotFoundError(runtime)
    return Toolchain(compiler, ("-fsanitize=fuzzer-no-link", *SANITIZE), (runtime,))


def build(out: Path, toolchain: Toolchain, source: Path = SOURCE, name: str = "_lines"
          ) -> Path:
    """Compile ``source`` into ``out`` as the extension module ``name`` (by default
    ``exporter._lines``'s); returns its path. No ``-DNDEBUG`` and no ``-fwrapv`` (the
    release build has both): asserts stay on and a signed overflow is reported, not
    defined away.

    The object is linked without the sanitizer flags: the runtime is the preloaded one,
    never linked into the module (clang would otherwise want its own static ASan part,
    another Debian package, next to the runtime atheris brings)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    obj, partial = target.with_suffix(".o"), target.with_suffix(".tmp")
    include = sysconfig.get_paths()["include"]
    for command in ([toolchain.compiler, "-c", *COMPILE, *toolchain.flags, "-I", include,
                     str(source), "-o", str(obj)],
                    [toolchain.compiler, "-shared", str(obj), "-o", str(partial), "-lm"]):
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed:\n{proc.stderr[-4000:]}")
    obj.unlink()
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for the instrumented module")
    parser.add_argument("--fuzzer", action="store_true",
                        help="clang + libFuzzer coverage (needs atheris installed)")
    args = parser.parse_args(argv)
    toolchain = fuzzing() if args.fuzzer else sanitizers()
    module = build(args.out, toolchain)
    print(f"built {module}", file=sys.stderr)
    for name in ("LD_PRELOAD", *SANITIZER_ENV):
        print(f"export {name}={shlex.quote(toolchain.env({})[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
