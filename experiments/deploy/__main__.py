"""``python -m experiments.deploy``: an alias of ``credit-fl deploy``."""

import sys

from experiments.deploy.cli import main

sys.exit(main())
