"""``python -m kernel``: see cli.py."""

from __future__ import annotations

import sys

from kernel.cli import main  # (absolute: runnable by path too)

if __name__ == "__main__":
    sys.exit(main())
