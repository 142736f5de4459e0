"""``python -m sgdbayes``: the ``sgdbayes`` command line."""

import sys

from .cli import main

sys.exit(main())
