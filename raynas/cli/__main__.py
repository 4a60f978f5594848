"""``python -m raynas.cli``: the ``raynas`` command."""

import sys

from raynas.cli import main

sys.exit(main())
