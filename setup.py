"""Build of the compiled feature kernel (``realtime_ser._kernel``); everything else is in pyproject.toml.

The kernel is optional: without a C/C++ compiler the install still succeeds (with a warning) and
``realtime_ser.features`` runs its numpy reference implementation, about five times slower, with the
same values (``realtime_ser.features.IMPLEMENTATION`` says which one runs).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# No FMA contraction: a*b + c must round as numpy's loops round it (see realtime_ser/_kernel.c).
UNIX_FLAGS = ["-O3", "-ffp-contract=off"]
MSVC_FLAGS = ["/O2", "/fp:precise"]


class BuildKernel(build_ext):
    def build_extensions(self) -> None:
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else UNIX_FLAGS
        for ext in self.extensions:
            ext.extra_compile_args = list(flags)
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "realtime_ser._kernel",
            sources=["realtime_ser/_kernel.c", "realtime_ser/_fft.cpp"],
            language="c++",  # links the C++ runtime for pocketfft (realtime_ser/_vendor/pocketfft)
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernel},
)
