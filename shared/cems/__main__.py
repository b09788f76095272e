"""`python -m cems` is the `cems` command."""

from cems.cli import main

raise SystemExit(main())
