"""``python -m frankensplit``."""

import sys

from frankensplit.cli import main

sys.exit(main())
