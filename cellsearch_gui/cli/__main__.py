import sys

from cellsearch_gui.cli import main

sys.exit(main())
