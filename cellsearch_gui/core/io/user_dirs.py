"""Where CellSearch keeps per-user files: an environment variable wins, else the platform's own folder."""

from __future__ import annotations

import os
from pathlib import Path


def user_dir(env: str, kind: str) -> Path:
    """``kind``: cache, data or config (platformdirs' user_*_dir for the app 'cellsearch')."""
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    import platformdirs

    finder = {"cache": platformdirs.user_cache_dir, "data": platformdirs.user_data_dir,
              "config": platformdirs.user_config_dir}[kind]
    return Path(finder("cellsearch", appauthor=False))
