import sys

from catsdogs.cli import main

sys.exit(main())
