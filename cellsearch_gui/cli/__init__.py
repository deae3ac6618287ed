"""The `cellsearch` command line, one module per command group:

- ``common``: option groups shared by the commands (choices from ``core.options``, defaults from the core's
  dataclasses), turning options into core settings, running a job with progress bars
- ``gui``, ``project``, ``models``, ``experiments`` (evaluate, classify), ``segment``, ``search``
  (search-combinations), ``analyse`` (analyse-models): each ``add_parser(sub)`` registers its sub-command
  with its handler
- ``parser``: ``build_parser`` and ``main``
"""

from cellsearch_gui.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
