"""``python -m service.cli``: the ``rebalancer`` command."""

import sys

from . import main

sys.exit(main())
