"""The optional libraries of table formats, imported only when a table is used, each named by its extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError

EXTRAS = {"deltalake": "delta", "pyiceberg": "iceberg"}


def require(module: str) -> ModuleType:
    """Import `module` (deltalake, pyiceberg or one of their submodules), or exit 2 naming the extra to install."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".", 1)[0] != top:
            raise
        extra = EXTRAS[top]
        raise ConfigError(
            f"{extra.capitalize()} tables need the '{top}' package; install it with: pip install 'batchscore[{extra}]'."
        ) from None
