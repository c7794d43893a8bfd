#!/usr/bin/env bash
# Newcomer entry point.
#   ./run.sh            install into .venv, then start the runtime (built-in demo when no model is given)
#   ./run.sh test       install into .venv, then run the test suite
#   ./run.sh ARGS...    install, then `edge-runtime ARGS...` (e.g. ./run.sh serve --model export.zip)
# Paths in ARGS are taken from the folder you run it in, like any command.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
PY=${PYTHON:-python3}
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "edge_runtime: creating $ROOT/.venv" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.installed-$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "edge_runtime: installing dependencies into .venv (first run: a few minutes)..." >&2
  (cd "$ROOT" && .venv/bin/python -m pip install -q --upgrade pip \
    && .venv/bin/python -m pip install -q --progress-bar on -e ".[dev]")
  touch "$stamp"
  echo "edge_runtime: installed" >&2
fi
if [ "${1:-}" = "test" ]; then
  shift
  cd "$ROOT"
  exec .venv/bin/python -m pytest "$@"
fi
if [ $# -eq 0 ]; then
  set -- serve --port "${EDGE_RUNTIME_PORT:-8080}"
fi
# Read here only: every other EDGE_RUNTIME_* variable is a setting, and `port` is not one.
unset EDGE_RUNTIME_PORT
exec "$ROOT/.venv/bin/edge-runtime" "$@"
