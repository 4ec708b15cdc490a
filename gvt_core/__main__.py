"""``python -m gvt_core``: the ``gvt`` command."""

from gvt_core.cli import main

raise SystemExit(main())
