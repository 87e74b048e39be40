"""Build the native pieces of toolken (pybind11, C++17, -O3):

- ``toolken._grammar`` from ``csrc/``: the grammar engine (JSON Schema -> token bitmask);
- ``toolken.kernels._bitmask_cpu`` from ``kernels/csrc/``: the CPU loop of
  ``apply_token_bitmask_`` (the kernels' own native piece; they never import the engine).

Everything else (metadata, the `toolken.kernels` subpackage from `kernels/`) is declared in
pyproject.toml.
"""
import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# compile the translation units in parallel (all cores; TOOLKEN_BUILD_JOBS=N to limit)
ParallelCompile("TOOLKEN_BUILD_JOBS").install()


def native(name: str, folder: str) -> Pybind11Extension:
    """Extension `name` from every .cc in `folder`; a header edit there rebuilds it."""
    return Pybind11Extension(
        name,
        sorted(glob.glob(os.path.join(folder, "*.cc"))),
        include_dirs=[folder],
        depends=sorted(glob.glob(os.path.join(folder, "*.h"))),
        cxx_std=17,
        extra_compile_args=["-O3"],
        define_macros=[("NDEBUG", None)],
    )


ext_modules = [
    native("toolken._grammar", "csrc"),
    native("toolken.kernels._bitmask_cpu", os.path.join("kernels", "csrc")),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
