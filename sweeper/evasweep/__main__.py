"""`python -m evasweep --workers 4 --train my_app.py ...` (see evasweep/workers.py)."""

import sys

from evasweep.workers import main

sys.exit(main())
