"""DVC stage `similarity`: linear CKA between networks, layer by layer (beyond the paper).

python pipelines/similarity.py CKA_CSV RUNS_CSV... (every checkpoint read must have the md5 that
its row in the runs tables records)"""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["similarity", "--out", sys.argv[1], *[a for p in sys.argv[2:] for a in ("--runs", p)]])
