import sys

from merging_core.cli import main

sys.exit(main())
