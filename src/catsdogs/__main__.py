import sys

from catsdogs.cli import main

# The guard matters: prepare's worker processes may re-import this module when they start.
if __name__ == "__main__":
    sys.exit(main())
