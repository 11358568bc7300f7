"""``python -m betavae``: the ``betavae`` command."""
import sys

from betavae.cli import main

if __name__ == "__main__":
    sys.exit(main())
