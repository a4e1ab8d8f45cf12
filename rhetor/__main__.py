"""``python -m rhetor`` is the ``rhetor`` command."""

from rhetor.cli import main

raise SystemExit(main())
