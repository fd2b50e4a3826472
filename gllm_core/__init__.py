"""gllm_core: what plugin authors import — hooks, plugin host, store, weights, backend contract, nn."""

__version__ = "0.1.0"

from .errors import GllmError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

__all__ = ["GllmError", "hookimpl", "__version__"]
