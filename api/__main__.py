import sys

from netc.cli import main

sys.exit(main())
