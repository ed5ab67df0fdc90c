#!/usr/bin/env bash
# Run every experiment of the book for the given profiles, records into data/NAME/PROFILE.
# Resumable: rerunning skips finished records.  Usage: scripts/run_profiles.sh quick cpu
set -euo pipefail
cd "$(dirname "$0")/.."
for profile in "$@"; do
  for exp in specific-position intrinsic-dimension triangle-center depth-separation kth-largest probes; do
    .venv/bin/infoflow run "$exp" --profile "$profile" --out "data/$exp/$profile" --quiet
  done
done
