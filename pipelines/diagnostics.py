"""DVC stage `diagnostics`: model stitching, layer re-initialisation, interpolation after
fine-tuning and weight scale alone (beyond the paper, part 2).

python pipelines/diagnostics.py DIAGNOSTICS_CSV RUNS_CSV... (every checkpoint read must have the
md5 that its row in the runs tables records)"""

import sys

from transferability.cli import main

if __name__ == "__main__":
    main(["diagnostics", "--out", sys.argv[1], *[a for p in sys.argv[2:] for a in ("--runs", p)]])
