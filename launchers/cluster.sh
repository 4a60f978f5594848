#!/usr/bin/env bash
# Submit a search to an existing Ray cluster through the Ray Jobs API and follow its logs; the job
# runs `raynas search --address auto <search flags>` with this folder and raynas' code shipped, e.g.
#   launchers/cluster.sh http://HEAD:8265 --space small_cnn --num-trials 8
# Launcher options (--tracking-uri, --storage, --env, --no-wait, …): `raynas launch cluster --help`.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: launchers/cluster.sh http://HEAD:8265 [raynas search flags]" >&2
  exit 2
fi
address=$1
shift
exec raynas launch cluster --address "$address" -- "$@"
