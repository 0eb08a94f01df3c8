#!/usr/bin/env bash
# Build one self-contained zipapp: dist/portero.pyz (run with `python3 portero.pyz serve ...`).
# Needs shiv (pip install shiv). The dependencies are pure Python, so the file runs on any
# platform with a CPython of the same minor version (3.11+).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist/portero.pyz}"
PY="${PYTHON:-python3}"
mkdir -p "$(dirname "$OUT")"
"$PY" -m shiv --compressed --reproducible \
  --console-script portero \
  --python "/usr/bin/env python3" \
  --output-file "$OUT" \
  .
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
