"""The native path (exporter/_lines.c) under AddressSanitizer and UndefinedBehaviorSanitizer,
and its coverage-guided fuzz target.

* The differential tests of tests/test_native.py run again in a child interpreter whose
  ``exporter._lines`` is a gcc ASan + UBSan build (tests/fuzz/build.py): every out-of-bounds
  read or write, use after free and undefined behaviour the C path reaches on the tests'
  inputs stops the child with a report, and the test fails on it.
* The fuzz target (tests/fuzz/target.py, atheris) runs for ``EXPORTER_FUZZ_SECONDS`` (30 by
  default) over a clang build with libFuzzer's coverage instrumentation and the same
  sanitizers, from the seed corpus (tests/fuzz/corpus) and the inputs of bugs found
  before (tests/fuzz/regressions); each input's outcome on the native path must be the
  Python path's (tests/fuzz/oracle.py). A crash, a sanitizer report or a disagreement
  fails the test with the input.
* In process, with the regular build: every seed and every regression input agrees.
* A canary module with a heap overflow, a signed overflow and a float-to-integer overflow
  (tests/fuzz/canary.c) proves each instrumented setup does report, so that a broken
  setup cannot pass quietly.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter import native
from tests.fuzz import build, oracle, sanitized, target

ROOT = build.ROOT
FUZZ = ROOT / "tests" / "fuzz"
CORPUS = FUZZ / "corpus"
REGRESSIONS = FUZZ / "regressions"
# A sanitizer's report or libFuzzer's own (a crash, an uncaught exception: the oracle's).
REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer"
                    r"|ERROR: LeakSanitizer|ERROR: libFuzzer|Uncaught Python exception")
# Every test of tests/test_native.py but those that start an interpreter of their own
# (they would load the repository's build, not this one), as the fast tier runs them
# (``-m``: each Hypothesis test with a 25th of its examples, see tests/conftest.py): ~25 s
# under ASan here, where all the examples take ~400 s. The fuzz run below is the breadth;
# the full file under ASan is ``python -m tests.fuzz.sanitized DIR tests/test_native.py``
# (tests/fuzz/README.md).
DIFFERENTIAL = ("tests/test_native.py", "-m", "not e2e", "-k", "not memory")
MIN_DIFFERENTIAL_TESTS = 60
FUZZ_SECONDS = int(os.environ.get("EXPORTER_FUZZ_SECONDS", "30"))
FUZZ_SEED = int(os.environ.get("EXPORTER_FUZZ_SEED", "1"))  # 0: libFuzzer picks one


def inputs(directory: Path) -> list[Path]:
    """The fuzz inputs in ``directory`` (not the README, not dotfiles)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix != ".md")


def run(args: list[str], toolchain: build.Toolchain, timeout: float
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=toolchain.env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def report_of(output: str) -> str | None:
    """The first sanitizer or libFuzzer report in ``output``, with some context."""
    match = REPORT.search(output)
    if match is None:
        return None
    start = output.rfind("\n", 0, max(0, match.start() - 2000)) + 1
    return output[start:match.start() + 6000]


@pytest.fixture(scope="module")
def gcc_sanitizers() -> build.Toolchain:
    return build.sanitizers()


@pytest.fixture(scope="module")
def clang_fuzzing() -> build.Toolchain:
    return build.fuzzing()


@pytest.fixture(scope="module")
def sanitized_lines(tmp_path_factory: pytest.TempPathFactory,
                    gcc_sanitizers: build.Toolchain) -> Path:
    """The directory of exporter/_lines.c built with ASan + UBSan (gcc)."""
    out = tmp_path_factory.mktemp("asan")
    build.build(out, gcc_sanitizers)
    return out


@pytest.fixture(scope="module")
def fuzzing_lines(tmp_path_factory: pytest.TempPathFactory,
                  clang_fuzzing: build.Toolchain) -> Path:
    """The directory of exporter/_lines.c built for the fuzzer (clang, coverage, ASan,
    UBSan)."""
    out = tmp_path_factory.mktemp("fuzz")
    build.build(out, clang_fuzzing)
    return out


# ====================================================================================
# The setups do report: a canary module with one bug of each kind
# ====================================================================================

CANARY_CASES = [
    pytest.param("read_past_end(b'abc')", "heap-buffer-overflow", id="heap-overflow"),
    pytest.param("overflow(1)", "signed integer overflow", id="signed-overflow"),
    pytest.param("to_int(1e300)", "is outside the range of representable values",
                 id="float-cast-overflow"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("toolchain_name", ["gcc_sanitizers", "clang_fuzzing"])
@pytest.mark.parametrize(("call", "expected"), CANARY_CASES)
def test_each_instrumented_setup_reports_a_known_bug(
        toolchain_name: str, call: str, expected: str, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    toolchain: build.Toolchain = request.getfixturevalue(toolchain_name)
    build.build(tmp_path, toolchain, source=build.CANARY, name="_canary")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import _canary; _canary.{call}"
    proc = run([sys.executable, "-c", code], toolchain, timeout=120)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert expected in proc.stderr, proc.stderr[-3000:]


# ====================================================================================
# The differential tests under ASan + UBSan
# ====================================================================================


@pytest.mark.e2e
def test_native_differential_tests_pass_under_asan_and_ubsan(
        sanitized_lines: Path, gcc_sanitizers: build.Toolchain) -> None:
    proc = run([sys.executable, "-m", "tests.fuzz.sanitized", str(sanitized_lines),
                *DIFFERENTIAL, "-q", "-p", "no:cacheprovider"], gcc_sanitizers, timeout=900)
    output = proc.stdout + proc.stderr
    assert f"{sanitized.MARK} {sanitized_lines}" in proc.stdout, output[-3000:]
    report = report_of(output)
    assert report is None, report
    assert proc.returncode == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None and int(passed.group(1)) >= MIN_DIFFERENTIAL_TESTS, output[-2000:]


# ====================================================================================
# The fuzz target, for a bounded time
# ====================================================================================


def describe(artifacts: list[Path]) -> str:
    return "; ".join(f"{p.name}: {p.read_bytes()[:2000]!r}" for p in artifacts)


@pytest.mark.e2e
def test_fuzzing_the_native_path_finds_no_crash_and_no_disagreement(
        fuzzing_lines: Path, clang_fuzzing: build.Toolchain, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    """Fails with the input (keep it under tests/fuzz/regressions/ once fixed)."""
    dictionary, found, artifacts = tmp_path / "jsonl.dict", tmp_path / "found", tmp_path / "art"
    found.mkdir()
    artifacts.mkdir()
    target.write_dict(dictionary)
    seeds = [str(d) for d in (CORPUS, REGRESSIONS) if inputs(d)]
    proc = run([sys.executable, "-m", "tests.fuzz.target", str(fuzzing_lines),
                f"-max_total_time={FUZZ_SECONDS}", f"-seed={FUZZ_SEED}", "-max_len=4096",
                f"-dict={dictionary}", "-timeout=60", "-rss_limit_mb=4096",
                "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(found), *seeds],
               clang_fuzzing, timeout=FUZZ_SECONDS + 600)
    output = proc.stdout + proc.stderr
    crashes = sorted(artifacts.iterdir())
    assert not crashes, f"{describe(crashes)}\n{report_of(output) or output[-6000:]}"
    report = report_of(output)
    assert report is None, report
    assert proc.returncode == 0, output[-6000:]
    # the C module's coverage reached libFuzzer (else it would fuzz blind)
    counters = re.search(r"Loaded 1 modules\s+\((\d+) inline 8-bit counters\)", output)
    assert counters is not None, output[:3000]
    finals = re.findall(r"cov: (\d+) ft: (\d+)", output)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    assert finals and runs is not None, output[-3000:]
    cov, ft = map(int, finals[-1])
    record_property("fuzz", {"edges": int(counters.group(1)), "cov": cov, "ft": ft,
                             "runs": int(runs.group(1))})
    assert int(runs.group(1)) > len(inputs(CORPUS)), output[-3000:]
    assert cov >= 300, f"the seeds reach only {cov} edges of {counters.group(1)}"


# ====================================================================================
# The seeds and the regressions, in process (the regular build)
# ====================================================================================


@pytest.fixture
def bind_fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The model's constraints computed once, not per binding (see
    ``tests.fuzz.sanitized.cache_model_spec``)."""
    assert native.available(), "exporter._lines is not importable: the C build failed"
    spec = getattr(native, "model_spec", None)
    if spec is not None and not hasattr(spec, "cache_info"):
        monkeypatch.setattr(native, "model_spec", functools.cache(spec))
    yield


@pytest.mark.parametrize("path", [pytest.param(p, id=f"{p.parent.name}/{p.name}")
                                  for p in inputs(CORPUS) + inputs(REGRESSIONS)])
@pytest.mark.usefixtures("bind_fast")
def test_each_fuzz_input_agrees_on_both_paths(path: Path) -> None:
    """Each seed and each input of a bug found (replayed here on every run)."""
    assert oracle.check(path.read_bytes()) is not None


def test_the_seeds_cover_every_entry_point_and_kind() -> None:
    """The corpus starts the fuzzer at every entry point and every event kind."""
    from exporter.events import KINDS

    data = [p.read_bytes() for p in inputs(CORPUS)]
    assert {oracle.Config.of(d[0]).entry for d in data} == set(oracle.ENTRIES)
    for kind in KINDS:
        assert any(f'"kind":"{kind}"'.encode() in d for d in data), kind


@pytest.mark.e2e
def test_the_otlp_span_reader_under_asan_and_ubsan(gcc_sanitizers: build.Toolchain,
                                                   tmp_path: Path) -> None:
    """exporter/_otlp.c built with gcc's ASan and UBSan reads valid requests as the protobuf
    binding does and survives thousands of mangled and random bodies without a report."""
    module = build.build(tmp_path / "otlp", gcc_sanitizers, ROOT / "exporter" / "_otlp.c",
                         "_otlp")
    done = run([sys.executable, "-m", "tests.fuzz.otlp_child", str(module)], gcc_sanitizers,
               timeout=300)
    output = done.stdout + done.stderr
    assert report_of(output) is None, report_of(output)
    assert done.returncode == 0, output[-4000:]
    checked = re.search(r"checked (\d+)", done.stdout)
    assert checked is not None and int(checked.group(1)) > 5000, done.stdout[-2000:]
