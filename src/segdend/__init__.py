"""segdend: deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segdend")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
