import sys

from aikd.cli import main

sys.exit(main())
