"""``python -m hf_cft.app MODEL`` (the page) and ``python -m hf_cft.app space MODEL SPACE`` (the Space)."""

import sys

from .command import main

sys.exit(main())
