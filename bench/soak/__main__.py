"""`python -m bench.soak` (what scripts/soak runs)."""

import sys

from . import main

sys.exit(main())
