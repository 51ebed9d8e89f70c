"""`python -m gsp_hub ...` (used by `accelerate launch -m gsp_hub train ...`)."""

import sys

from gsp_hub.cli import main

sys.exit(main())
