"""The native line path (exporter/_lines.c) is an optional extension: without a C
compiler the install still succeeds and the Python path does all the work."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("exporter._lines", ["exporter/_lines.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror"])])
