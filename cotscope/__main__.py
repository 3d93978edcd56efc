"""``python -m cotscope``: the command-line interface."""

from cotscope.cli import main

raise SystemExit(main())
