"""The coverage-guided fuzz target of the native line path (atheris, libFuzzer inside).

``python -m tests.fuzz.target EXT_DIR [LIBFUZZER ARGS] [CORPUS DIRS]``, with the
environment of ``tests.fuzz.build.fuzzing`` (atheris's ``asan_with_fuzzer.so``
preloaded): EXT_DIR holds the extension compiled by clang with libFuzzer's coverage
instrumentation, ASan and UBSan. Each input goes through ``tests.fuzz.oracle.check``: the
native path against the Python path, so a disagreement stops the run as a crash does
(the input is written as ``crash-*`` under ``-artifact_prefix``).

Why atheris over a C harness embedding Python: the oracle is the Python path itself
(msgspec, the model, the Python handlers), which a C harness would have to call back into
anyway; atheris is libFuzzer with that call already made, and the instrumented
extension's edge counters, PC table and comparison traces register with the libFuzzer
that atheris's runtime carries, so the guidance is the C parser's own coverage (the
Python code is left uninstrumented: it is the oracle, and instrumenting it would cost
speed and steer the fuzzer toward the decoder's branches instead).

``--dict PATH`` writes a libFuzzer dictionary of the model's tokens (kinds, field names,
enum values, JSON spellings) and exits: the run in the suite passes it with ``-dict=``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import msgspec

from tests.fuzz import sanitized

JSON_TOKENS = (b'{"', b'"}', b'":"', b'":', b'","', b",", b"null", b"true", b"false", b"NaN",
               b"Infinity", b"-Infinity", b"-0", b"0.0", b"1e308", b"1e-400", b"1E+2",
               b"18446744073709551616", b"9007199254740993", b"\\u0000", b"\\u00e9",
               b"\\ud83d", b'\\"', b"\\\\", b"\\/", "\u00e9".encode(), b"\xff", b" ",
               b"\t", b"\r", b"\n")


def _literals(info: msgspec.inspect.Type) -> list[str]:
    """The string values of the Literal types in ``info`` (through unions, metadata)."""
    if isinstance(info, msgspec.inspect.LiteralType):
        return [v for v in info.values if isinstance(v, str)]
    if isinstance(info, msgspec.inspect.UnionType):
        return [v for t in info.types for v in _literals(t)]
    if isinstance(info, msgspec.inspect.Metadata):
        return _literals(info.type)
    return []


def tokens() -> list[bytes]:
    """The model's words (every kind, field name and enum value, quoted) and JSON's."""
    from exporter.events import EVENT_TYPES, KIND_OF

    words: set[str] = set()
    for cls in EVENT_TYPES:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        words.add(KIND_OF[cls])
        for field in info.fields:
            words.add(field.encode_name)
            words.update(_literals(field.type))
    return [f'"{w}"'.encode() for w in sorted(words)] + list(JSON_TOKENS)


def write_dict(path: Path) -> None:
    """A libFuzzer dictionary: one quoted token a line, other than printable ASCII as
    ``\\xNN``."""
    def quoted(token: bytes) -> str:
        return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                             for b in token) + '"'

    path.write_text("".join(f"{quoted(t)}\n" for t in tokens()))


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--dict"]:
        write_dict(Path(argv[2]))
        return 0
    origin = sanitized.load(Path(argv[1]))
    print(sanitized.MARK, origin, json.dumps(argv[2:]), flush=True)
    sanitized.cache_model_spec()
    logging.disable(logging.CRITICAL)  # every rejection is logged: millions of lines
    import atheris

    from tests.fuzz.oracle import check  # imports exporter.native: after ``load``

    def one_input(data: bytes) -> None:
        check(data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
