"""Build the C++ grammar engine `toolken._grammar` (pybind11, C++17, -O3).

Everything else (metadata, the `toolken.kernels` subpackage from `kernels/`) is declared in
pyproject.toml.
"""
import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# compile the engine's translation units in parallel (all cores; TOOLKEN_BUILD_JOBS=N to limit)
ParallelCompile("TOOLKEN_BUILD_JOBS").install()

sources = sorted(glob.glob(os.path.join("csrc", "*.cc")))
headers = sorted(glob.glob(os.path.join("csrc", "*.h")))  # a header edit rebuilds the extension

ext_modules = [
    Pybind11Extension(
        "toolken._grammar",
        sources,
        include_dirs=["csrc"],
        depends=headers,
        cxx_std=17,
        extra_compile_args=["-O3"],
        define_macros=[("NDEBUG", None)],
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
