"""rlaifv_lib: the library behind the RLAIF-V tutorial notebooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlaifv-lib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
