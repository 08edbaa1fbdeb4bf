"""DVC stage `transfer`: BnB, BnB+, AnB, AnB+ and RnB at every cut, from the base checkpoints."""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["transfer", "--runs", sys.argv[1], *(["--bases", sys.argv[2]] if sys.argv[2:] else [])])
