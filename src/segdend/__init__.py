"""segdend: deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segdend")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from segdend.api import Network  # noqa: E402
from segdend.config import RunConfig  # noqa: E402
from segdend.errors import SegdendError  # noqa: E402
from segdend.presets import build_config  # noqa: E402

__all__ = ["Network", "RunConfig", "SegdendError", "build_config", "__version__"]
