"""DVC stage `datasize`: baseB, BnB+ and AnB+ on smaller target sets (beyond the paper)."""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["datasize", "--runs", sys.argv[1], *(["--bases", sys.argv[2]] if sys.argv[2:] else [])])
