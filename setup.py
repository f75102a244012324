"""The native line path (exporter/_lines.c) and the OTLP span reader (exporter/_otlp.c)
are optional extensions: without a C compiler the install still succeeds and the Python
paths do all the work."""

from setuptools import Extension, setup

# -ffp-contract=off: no fused multiply-add, so the native cost is Rates.cost bit for bit.
FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]
setup(ext_modules=[
    Extension("exporter._lines", ["exporter/_lines.c"], optional=True, extra_compile_args=FLAGS),
    Extension("exporter._otlp", ["exporter/_otlp.c"], optional=True, extra_compile_args=FLAGS),
])
