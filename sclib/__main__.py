import sys

from sclib.cli import main

sys.exit(main())
