"""``python -m gvt_core.cli``: the same as the ``gvt`` command."""

from gvt_core.cli import main

raise SystemExit(main())
