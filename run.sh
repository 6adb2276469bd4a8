#!/usr/bin/env bash
# The two entry points on a fresh machine (needs only Python >= 3.11 with pip):
#   ./run.sh demo   create .venv if missing, install vaanet, run the quick ablation study (synthetic set)
#   ./run.sh test   create .venv if missing, install vaanet with its test extra, run the test suite
# Both are idempotent: the install is redone only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV=.venv
stamp="$VENV/.installed-$(cksum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
case "${1:-}" in
    demo) shift; exec "$VENV/bin/python" experiments/ablation.py "$@" ;;
    test) shift; exec "$VENV/bin/python" -m pytest tests -q "$@" ;;
    *) echo "usage: ./run.sh demo|test [args...]" >&2; exit 2 ;;
esac
