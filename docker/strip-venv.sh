#!/bin/sh
# Build-stage only: drop what no process imports from the image's virtualenv: the packages' own test
# suites (scipy, numpy, ...) and onnx's backend test data, about 70 MB together.
set -eu
venv=${1:-/srv/.venv}
find "$venv" -depth -type d -path "*/site-packages/*" -name tests -exec rm -rf {} +
rm -rf "$venv"/lib/python3*/site-packages/onnx/backend/test/data
