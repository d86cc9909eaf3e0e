"""``python -m streamq``: the operator CLI (see ``streamq.cli``)."""

import sys

from .cli import main

sys.exit(main())
