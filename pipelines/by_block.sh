#!/usr/bin/env bash
# Train a study one block at a time: the bases and then the transfers of one (split, seed), the
# random blocks first, then the dissimilar seeds. The networks, their rows and their files are
# exactly those of `dvc repro <its dvc.yaml>` (the same commands, on part of the study each), but
# a long study on a CPU finishes whole blocks as it goes instead of every base first; it resumes
# where it stopped (finished networks are skipped). After each random split's blocks, those of
# the first beyond.blocks get their CKA and, where the study runs them, their diagnostics
# (`--block`: computed now, while the checkpoints are here; kept in the tables afterwards, on any
# machine). Afterwards `dvc commit <its dvc.yaml>` records the checkpoints and tables in its
# dvc.lock.
#
#   pipelines/by_block.sh pipelines/whole/params.yaml [--set data.source=...]
set -euo pipefail
params=$1
shift
T=${TRANSFERABILITY:-.venv/bin/transferability}
PY=${PYTHON:-.venv/bin/python}
read -r results random dissimilar sweep diagnostics < <("$PY" - "$params" <<'EOF'
import sys

from transferability import config

c = config.load(sys.argv[1])
seeds = c.study.dissimilar_seeds if c.study.dissimilar_seeds is not None else c.study.seeds
sweep = [f"random{s}/s{k}" for s in c.split.random_seeds for k in c.study.seeds]
print(c.study.results_dir, ",".join(map(str, c.split.random_seeds)) or "-",
      ",".join(map(str, seeds)) if c.split.dissimilar and seeds else "-",
      ",".join(sweep[: c.beyond.blocks]) or "-", "yes" if c.beyond.diagnostics else "no")
EOF
)
block() {  # the --set flags that narrow the study to one block
  "$T" train-bases --params "$params" "$@" --runs "$results/runs_bases.csv"
  "$T" transfer --params "$params" "$@" --runs "$results/runs_transfers.csv" \
    --bases "$results/runs_bases.csv"
}
read_checkpoints() {  # CKA and diagnostics of split random$1's blocks among the first beyond.blocks
  local s=$1 only=()
  shift
  for b in ${sweep//,/ }; do [[ $b == random$s/* ]] && only+=(--block "$b"); done
  [[ ${#only[@]} -gt 0 ]] || return 0
  "$T" similarity --params "$params" "$@" "${only[@]}"
  [[ $diagnostics == no ]] || "$T" diagnostics --params "$params" "$@" "${only[@]}"
}
for s in ${random//[,-]/ }; do
  echo "== block random$s ($(date -u +%FT%TZ))"
  block --set "split.random_seeds=[$s]" --set split.dissimilar=false "${@}"
  read_checkpoints "$s" "${@}"
done
for s in ${dissimilar//[,-]/ }; do
  echo "== block dissimilar/s$s ($(date -u +%FT%TZ))"
  block --set "split.random_seeds=[]" --set "study.dissimilar_seeds=[$s]" "${@}"
done
echo "== all blocks done ($(date -u +%FT%TZ))"
