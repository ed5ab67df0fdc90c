#!/usr/bin/env bash
# Run experiments of the book for one profile, records into data/NAME/PROFILE. Resumable: a rerun
# skips finished records.   Usage: scripts/run_profiles.sh PROFILE [EXPERIMENT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:?usage: scripts/run_profiles.sh PROFILE [EXPERIMENT ...]}
shift
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(specific-position intrinsic-dimension triangle-center depth-separation kth-largest probes)
for exp in "${experiments[@]}"; do
  .venv/bin/infoflow run "$exp" --profile "$profile" --out "data/$exp/$profile" --quiet
done
