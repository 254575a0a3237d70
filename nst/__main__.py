"""`python -m nst`: the command line, which lives in `nst.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
