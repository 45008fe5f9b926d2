"""`python -m studio` starts Chainrule Studio."""

from studio.app import main

raise SystemExit(main())
