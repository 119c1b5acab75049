"""Lumina: self-hosted observability for LLM applications.

The names re-exported here are the public plugin API (see ``lumina_core.plugin_api``); plugins import
only these.
"""

from lumina_core.plugin_api import *  # noqa: F403
from lumina_core.plugin_api import __all__ as _plugin_api

__version__ = "0.1.0"

__all__ = [*_plugin_api, "__version__"]
