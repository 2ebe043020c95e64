"""``python -m xception``: the same as the ``xception`` command."""

import sys

from .cli.main import console

sys.exit(console())
