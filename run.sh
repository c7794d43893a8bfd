#!/usr/bin/env bash
# Newcomer entry point.
#   ./run.sh            install into .venv, then start the runtime (built-in demo when no model is given)
#   ./run.sh test       install into .venv, then run the test suite
#   ./run.sh ARGS...    install, then `edge-runtime ARGS...` (e.g. ./run.sh serve --model export.zip)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
if [ "${1:-}" = "test" ]; then
  shift
  exec .venv/bin/python -m pytest "$@"
fi
if [ $# -eq 0 ]; then
  set -- serve --port "${EDGE_RUNTIME_PORT:-8080}"
fi
exec .venv/bin/edge-runtime "$@"
