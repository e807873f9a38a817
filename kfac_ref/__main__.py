"""``python -m kfac_ref`` — see :mod:`kfac_ref.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
