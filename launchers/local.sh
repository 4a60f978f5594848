#!/usr/bin/env bash
# Start a search on this machine: a local Ray instance, MLflow in ./mlflow.db (or
# $MLFLOW_TRACKING_URI). Every `raynas search` flag passes through, e.g.
#   launchers/local.sh --space small_cnn --strategy grid --scheduler fifo
exec raynas search "$@"
