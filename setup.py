"""Build of the compiled feature kernel (``realtime_ser._kernel``); everything else is in pyproject.toml.

The kernel is optional: without a C/C++ compiler the install still succeeds (with a warning) and
``realtime_ser.features`` runs its numpy reference implementation, several times slower, with the
same values (``realtime_ser.features.IMPLEMENTATION`` says which one runs). On x86-64 the same source
is built a second time for AVX2 (``realtime_ser._kernel_avx2``), chosen at import where the CPU has it.
"""

import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# No FMA contraction: a*b + c must round as numpy's loops round it (see realtime_ser/_kernel.c).
UNIX_FLAGS = ["-O3", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]
AVX2_FLAGS = {"unix": ["-mavx2"], "msvc": ["/arch:AVX2"]}
SOURCES = ["realtime_ser/_kernel.c", "realtime_ser/_fft.cpp"]
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


class BuildKernel(build_ext):
    def build_extensions(self) -> None:
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
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
