"""DVC stage `train_base`: baseA and baseB of every split and seed."""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["train-bases", "--runs", sys.argv[1]])
