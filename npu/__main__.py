"""``python -m npu``: the ``npu`` command (for a checkout whose console script points
elsewhere, e.g. a git worktree sharing another checkout's virtual environment)."""

import sys

from npu.cli import main

sys.exit(main())
