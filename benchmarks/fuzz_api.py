"""Bad input at scale: schemathesis over the OpenAPI description, and the fuzz targets longer.

``api`` (the default): a real exporter on loopback (authentication off, or on with a static
admin token: ``--auth``), and for every operation of docs/openapi.yaml ``--examples``
generated requests (tests/apifuzz.py: schemathesis's positive and negative cases, random
headers and query parameters on top), ``--workers`` operations at a time, each bounded by
``--route-seconds``. Prints, per route, the requests sent and the statuses answered, and
the check failures; exits 1 on any 5xx or failure.

``mutate``: the same routes, ``--examples`` requests each, from schemathesis's cases as
seeds mutated in plain Python (tests/apimutate.py: a thousand times faster to generate
than a schemathesis case here, so the exporter sets the pace), every answer checked
against the description the same way.

``targets``: the suite's fuzz targets with ``--multiplier`` times their Hypothesis examples
(tests/test_fuzz_routes.py, tests/test_otlp_intake_fuzz.py, tests/test_native.py) and the
coverage-guided native fuzzer (tests/test_native_sanitized.py) for ``--fuzz-seconds``.

    .venv/bin/python benchmarks/fuzz_api.py --examples 10000 --workers 2 --json out.json
    .venv/bin/python benchmarks/fuzz_api.py mutate --examples 10000 --workers 2
    .venv/bin/python benchmarks/fuzz_api.py targets --multiplier 20 --fuzz-seconds 600
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import apifuzz, apimutate  # noqa: E402
from tests.procs import Exporter  # noqa: E402
from tests.test_openapi_fuzz import TOKEN, exporter_config  # noqa: E402

TARGETS = ["tests/test_fuzz_routes.py", "tests/test_otlp_intake_fuzz.py",
           "tests/test_native.py"]
SANITIZED = "tests/test_native_sanitized.py"


def _one(args: tuple[str, str, int, str, dict[str, str] | None, float, int]
         ) -> tuple[str, int, dict[int, int], list[str], float]:
    """One route, with schemathesis alone (``api``) or its cases mutated (``mutate``)."""
    mode, label, index, url, headers, seconds, examples = args
    schema = apifuzz.load(url, headers)
    operation = apifuzz.operations(schema)[index]
    if mode == "mutate":
        mutated = apimutate.run_route(operation, schema.raw_schema, url, examples,
                                      headers=headers, seed=index + 1, time_limit=seconds)
        print(f"  {label}: {mutated.distinct} distinct of {mutated.requests} "
              f"({mutated.seeds} schemathesis seeds)", flush=True)
        return (label, mutated.requests, dict(mutated.statuses), mutated.failures,
                mutated.seconds)
    result = apifuzz.fuzz_operation(operation, url, examples, headers, time_limit=seconds,
                                    seed=index + 1)
    return label, result.requests, dict(result.statuses), result.failures, result.seconds


def run_api(ns: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-api-"))
    secured = ns.auth == "token"
    proc = Exporter(workdir, config=exporter_config(workdir, secured))
    headers = {"Authorization": f"Bearer {TOKEN}"} if secured else None
    started = time.monotonic()
    rows: list[tuple[str, int, dict[int, int], list[str], float]] = []
    try:
        ops = apifuzz.operations(apifuzz.load(proc.url, headers))
        jobs = [(ns.mode, apifuzz.label(op), i, proc.url, headers, ns.route_seconds,
                 ns.examples)
                for i, op in enumerate(ops)
                if not ns.route or apifuzz.label(op) in ns.route]
        with ProcessPoolExecutor(ns.workers) as pool:
            for row in pool.map(_one, jobs):
                rows.append(row)
                label, sent, statuses, failures, seconds = row
                print(f"{label:28} {sent:7} in {seconds:6.0f} s  "
                      f"{dict(sorted(statuses.items()))}  failures {len(failures)}",
                      flush=True)
        alive = proc.alive()
        traceback = "Traceback" in proc.log()
    finally:
        proc.stop()
    total: Counter[int] = Counter()
    for _label, _sent, statuses, _failures, _seconds in rows:
        total.update(statuses)
    server_errors = sum(n for status, n in total.items() if status >= 500)
    failures = [f"{label}: {f}" for label, _s, _st, fs, _sec in rows for f in fs]
    print(f"auth {ns.auth}: {sum(total.values())} requests over {len(rows)} routes in "
          f"{time.monotonic() - started:.0f} s; statuses {dict(sorted(total.items()))}; "
          f"5xx {server_errors}; check failures {len(failures)}; exporter alive {alive}, "
          f"traceback in its log {traceback}")
    for failure in failures[:40]:
        print("  ", failure)
    if ns.json:
        Path(ns.json).write_text(json.dumps({
            "auth": ns.auth, "examples": ns.examples, "routes": [
                {"route": label, "requests": sent, "seconds": round(seconds, 1),
                 "statuses": statuses, "failures": fs}
                for label, sent, statuses, fs, seconds in rows]}, indent=1))
    return 1 if server_errors or failures or not alive or traceback else 0


PLUGIN = '''
import os
from hypothesis import settings

def pytest_collection_modifyitems(config, items):
    factor = int(os.environ["FUZZ_API_MULTIPLIER"])
    for item in items:
        test = getattr(item, "obj", None)
        given = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(given, settings) and not getattr(test, "_fuzz_longer", False):
            test._hypothesis_internal_use_settings = settings(
                given, max_examples=given.max_examples * factor)
            test._fuzz_longer = True
'''


def run_targets(ns: argparse.Namespace) -> int:
    plugin_dir = Path(tempfile.mkdtemp(prefix="fuzz-longer-"))
    (plugin_dir / "fuzz_longer.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{plugin_dir}{os.pathsep}{ROOT}",
           "FUZZ_API_MULTIPLIER": str(ns.multiplier),
           "EXPORTER_FUZZ_SECONDS": str(ns.fuzz_seconds)}
    code = 0
    runs: list[tuple[str, list[str]]] = [(t, []) for t in ns.target or TARGETS]
    if ns.fuzz_seconds > 0:
        runs.append((SANITIZED, ["-k", "fuzzing_the"]))
    for target, extra in runs:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "fuzz_longer",
                               "-p", "no:cacheprovider", "--timeout", "0", target, *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)
        tail = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{target} {' '.join(extra)}: exit {done.returncode} in "
              f"{time.monotonic() - started:.0f} s: {tail}", flush=True)
        if done.returncode:
            code = 1
            print(done.stdout[-3000:], done.stderr[-2000:])
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("mode", nargs="?", choices=["api", "mutate", "targets"],
                        default="api")
    parser.add_argument("--examples", type=int, default=10_000, help="requests per route")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--route-seconds", type=float, default=900.0,
                        help="time limit per route")
    parser.add_argument("--auth", choices=["off", "token"], default="off")
    parser.add_argument("--route", action="append",
                        help='only this route, e.g. "POST /api/v1/events" (repeatable)')
    parser.add_argument("--json", help="write the per-route figures here")
    parser.add_argument("--multiplier", type=int, default=20,
                        help="targets: times each Hypothesis test's own max_examples")
    parser.add_argument("--fuzz-seconds", type=int, default=300,
                        help="targets: the coverage-guided native fuzzer's time (0: not run)")
    parser.add_argument("--target", action="append",
                        help=f"targets: a test file (repeatable; default {' '.join(TARGETS)})")
    ns = parser.parse_args()
    sys.exit(run_targets(ns) if ns.mode == "targets" else run_api(ns))


if __name__ == "__main__":
    main()
