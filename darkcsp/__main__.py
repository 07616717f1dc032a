"""``python -m darkcsp`` (and ``torchrun -m darkcsp``) runs the command line."""
import sys

from darkcsp.cli import main

sys.exit(main())
