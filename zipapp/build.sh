#!/usr/bin/env bash
# Build one self-contained zipapp of Portero with shiv.
#
#   bash zipapp/build.sh                 # -> dist/portero.pyz, with the compiled wheels (orjson...):
#                                        #    runs only on the CPython version and platform it was built on
#   bash zipapp/build.sh --portable      # -> dist/portero.pyz, pure Python: any platform, CPython 3.11+
#   bash zipapp/build.sh [--portable] OUT.pyz
#
# Needs only a Python 3.11+ (`python3`, or the interpreter named by $PYTHON) with the venv module: the
# build environment (a venv with shiv) is created under build/zipapp-venv on first use and reused. Run
# the result with `python3 dist/portero.pyz serve --config portero.toml`.
#
# --portable leaves out the optional compiled accelerators (Portero falls back to the standard library
# without them) and strips the C speedups of dependencies that have a pure-Python fallback. Any other
# compiled dependency fails the portable build instead of producing a file that would not run elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# Optional compiled dependencies of Portero itself: imported in a try/except with a fallback.
OPTIONAL_COMPILED="orjson ahocorasick_rs"
# Dependencies whose compiled extension module is optional (the package falls back to pure Python).
PURE_FALLBACK="markupsafe"

PORTABLE=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --portable) PORTABLE=1 ;;
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "build.sh: unknown option $arg (expected --portable or an output file)" >&2
      exit 2
      ;;
    *) OUT="$arg" ;;
  esac
done
OUT="${OUT:-dist/portero.pyz}"
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "build.sh: needs Python 3.11 or newer; '$PY' is $("$PY" --version 2>&1 || echo missing)" >&2
  echo "          (set PYTHON=/path/to/python3.11 to use another interpreter)" >&2
  exit 1
fi

# The build environment: reused while it matches the interpreter's version.
VENV=build/zipapp-venv
want="$("$PY" -c 'import sys; print(sys.version.split()[0])')"
have="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "build.sh: creating the build environment $VENV (Python $want)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
if ! "$VPY" -c 'import shiv, setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null; then
  # A current pip and the project's build backend, so that builds skip pip's isolated build env.
  "$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip "setuptools>=68" "shiv>=1.0"
fi

# Install Portero and its dependencies into a staging site-packages, then zip that.
STAGE="build/zipapp-site"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$(dirname "$OUT")"
"$VPY" -m pip install --quiet --disable-pip-version-check --no-build-isolation --target "$STAGE" .
if [ "$PORTABLE" = 1 ]; then
  # Remove the optional compiled distributions (every file their RECORD lists) and the C speedups
  # of the dependencies that fall back to pure Python.
  "$VPY" - "$STAGE" "$OPTIONAL_COMPILED" "$PURE_FALLBACK" <<'EOF'
import pathlib, shutil, sys
stage, optional, fallback = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
norm = lambda name: name.lower().replace("-", "_").replace(".", "_")
for info in stage.glob("*.dist-info"):
    name = norm(info.name.split("-", 1)[0])
    if name not in optional and name not in fallback:
        continue
    for line in (info / "RECORD").read_text().splitlines():
        path = stage / line.split(",", 1)[0]
        if name in optional or path.suffix in (".so", ".pyd"):
            path.unlink(missing_ok=True)
    if name in optional:
        shutil.rmtree(info, ignore_errors=True)
for d in sorted(stage.rglob("*"), reverse=True):  # directories the removals emptied
    if d.is_dir() and not any(d.iterdir()):
        d.rmdir()
EOF
fi
rm -rf "$STAGE/bin"

# Which distributions carry compiled code (from their RECORD files).
COMPILED="$(
  "$VPY" - "$STAGE" <<'EOF'
import pathlib, sys
stage = pathlib.Path(sys.argv[1])
names = []
for record in sorted(stage.glob("*.dist-info/RECORD")):
    files = [line.split(",", 1)[0] for line in record.read_text().splitlines()]
    if any((stage / f).is_file() and f.endswith((".so", ".pyd")) for f in files):
        names.append(record.parent.name.split("-", 1)[0])
print(", ".join(names))
EOF
)"
if [ "$PORTABLE" = 1 ] && [ -n "$COMPILED" ]; then
  echo "build.sh: --portable: these dependencies still contain compiled code: $COMPILED" >&2
  echo "          (add them to OPTIONAL_COMPILED or PURE_FALLBACK in $0 if they can do without it)" >&2
  exit 1
fi

"$VPY" -m shiv --compressed --reproducible \
  --console-script portero \
  --python "/usr/bin/env python3" \
  --site-packages "$STAGE" \
  --output-file "$OUT"
rm -rf "$STAGE"

size="$(du -h "$OUT" | cut -f1)"
if [ "$PORTABLE" = 1 ]; then
  echo "$OUT: portable, pure Python, for CPython 3.11+ on any platform ($size; left out: ${OPTIONAL_COMPILED// /, }; C speedups stripped: ${PURE_FALLBACK// /, })"
else
  platform="$("$VPY" -c 'import platform, sys; print(f"{platform.python_implementation()} {sys.version_info[0]}.{sys.version_info[1]} on {platform.system()} {platform.machine()}")')"
  echo "$OUT: for $platform ($size; compiled dependencies: ${COMPILED:-none})"
  echo "  (build with --portable for a pure-Python file that runs on any platform with CPython 3.11+)"
fi
