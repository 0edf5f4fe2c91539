"""``python -m imseg`` (also what ``torchrun -m imseg`` runs)."""

import sys

from imseg.cli import main

sys.exit(main())
