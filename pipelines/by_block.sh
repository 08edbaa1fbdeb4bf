#!/usr/bin/env bash
# Train a study one block at a time: the bases and then the transfers of one (split, seed), the
# random blocks first, then the dissimilar seeds. The networks, their rows and their files are
# exactly those of `dvc repro <its dvc.yaml>` (the same commands, on part of the study each), but
# a long study on a CPU finishes whole blocks as it goes instead of every base first; it resumes
# where it stopped (finished networks are skipped). Afterwards `dvc commit <its dvc.yaml>`
# records the checkpoints and tables in its dvc.lock.
#
#   pipelines/by_block.sh pipelines/whole/params.yaml [--set data.source=...]
set -euo pipefail
params=$1
shift
T=${TRANSFERABILITY:-.venv/bin/transferability}
PY=${PYTHON:-.venv/bin/python}
read -r results random dissimilar < <("$PY" - "$params" <<'EOF'
import sys

from transferability import config

c = config.load(sys.argv[1])
seeds = c.study.dissimilar_seeds if c.study.dissimilar_seeds is not None else c.study.seeds
print(c.study.results_dir, ",".join(map(str, c.split.random_seeds)),
      ",".join(map(str, seeds)) if c.split.dissimilar else "")
EOF
)
block() {  # the --set flags that narrow the study to one block
  "$T" train-bases --params "$params" "$@" --runs "$results/runs_bases.csv"
  "$T" transfer --params "$params" "$@" --runs "$results/runs_transfers.csv" \
    --bases "$results/runs_bases.csv"
}
for s in ${random//,/ }; do
  echo "== block random$s ($(date -u +%FT%TZ))"
  block --set "split.random_seeds=[$s]" --set split.dissimilar=false "${@}"
done
for s in ${dissimilar//,/ }; do
  echo "== block dissimilar/s$s ($(date -u +%FT%TZ))"
  block --set "split.random_seeds=[]" --set "study.dissimilar_seeds=[$s]" "${@}"
done
echo "== all blocks done ($(date -u +%FT%TZ))"
