"""`python -m mirage_py` runs the command line, exactly as the `mirage-py` script does."""

from .cli import main

raise SystemExit(main())
