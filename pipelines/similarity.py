"""DVC stage `similarity`: linear CKA between networks, layer by layer (beyond the paper)."""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["similarity", "--out", sys.argv[1]])
