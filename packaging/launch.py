"""Entry point of the packaged app: the window without arguments, the CLI with them."""

import multiprocessing
import sys

from cellsearch_gui.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
