"""Build of the compiled feature kernel (``realtime_ser._kernel``); everything else is in pyproject.toml.

The kernel is optional: without a C/C++ compiler the install still succeeds (with a warning) and
``realtime_ser.features`` runs its numpy reference implementation, several times slower, with the
same values (``realtime_ser.features.IMPLEMENTATION`` says which one runs). On x86-64 the same source
is built a second time for AVX2 (``realtime_ser._kernel_avx2``), chosen at the first feature call where
the CPU has it (``realtime_ser.features.kernel.selected``).

The feature layout is written once, in ``realtime_ser/features/spec.py``: this build generates the
kernel's header ``ser_spec.h`` from it (``spec.c_header()``) into the build directory.
"""

import importlib.util
import platform
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# No FMA contraction: a*b + c must round as numpy's loops round it (see realtime_ser/_kernel.c).
UNIX_FLAGS = ["-O3", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]
AVX2_FLAGS = {"unix": ["-mavx2"], "msvc": ["/arch:AVX2"]}
SOURCES = ["realtime_ser/_kernel.c", "realtime_ser/_fft.cpp"]
SPEC_PY = Path(__file__).resolve().parent / "realtime_ser" / "features" / "spec.py"
SPEC_HEADER = "ser_spec.h"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def spec_header() -> str:
    """``ser_spec.h`` from ``realtime_ser/features/spec.py``, loaded by path (standard library only)."""
    found = importlib.util.spec_from_file_location("_realtime_ser_feature_spec", SPEC_PY)
    assert found is not None and found.loader is not None, SPEC_PY
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module.c_header()


class BuildKernel(build_ext):
    def build_extensions(self) -> None:
        generated = Path(self.build_temp) / "ser_generated"
        generated.mkdir(parents=True, exist_ok=True)
        header = generated / SPEC_HEADER
        text = spec_header()
        if not header.exists() or header.read_text() != text:  # unchanged: keep the timestamp (no rebuild)
            header.write_text(text)
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            ext.include_dirs = [*ext.include_dirs, str(generated)]
            ext.depends = [*ext.depends, str(header), str(SPEC_PY)]
            ext.extra_compile_args = list(MSVC_FLAGS if msvc else UNIX_FLAGS)
            if ext.name.endswith("_avx2"):
                ext.extra_compile_args += AVX2_FLAGS["msvc" if msvc else "unix"]
        super().build_extensions()


def kernel(name: str) -> Extension:
    return Extension(f"realtime_ser.{name}", sources=SOURCES, define_macros=[("SER_MODULE", name)],
                     language="c++",  # links the C++ runtime for pocketfft (realtime_ser/_vendor/pocketfft)
                     optional=True)


setup(
    ext_modules=[kernel("_kernel")] + ([kernel("_kernel_avx2")] if X86_64 else []),
    cmdclass={"build_ext": BuildKernel},
)
