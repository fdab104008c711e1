"""``python -m realtime_ser``: the same as the ``realtime-ser`` command."""

import sys

from .cli import main

sys.exit(main())
