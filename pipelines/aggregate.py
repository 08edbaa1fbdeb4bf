"""DVC stage `aggregate`: merge the runs tables; accuracies, gaps and Table 1 with intervals."""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["analyze", *[a for path in sys.argv[1:] for a in ("--runs", path)]])
