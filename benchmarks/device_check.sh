#!/usr/bin/env bash
# The GPU machine's one call (README "One GPU"): install the carried wheels into a scratch folder with
# --no-index (that machine reaches no network), then run benchmarks/device_check.py with the image's python3.
#   device tool: command "bash benchmarks/device_check.sh", carry [".device-wheels"]; extra arguments pass on
#   (e.g. --only train,experiment to rerun two steps).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device_check_out}"
WHEELS="${DEVICE_WHEELS:-.device-wheels}"   # the dry run points this at wheels for its own Python
SITE="$(mktemp -d)"
trap 'rm -rf "$SITE"' EXIT
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
    || echo "device_check.sh: installing the carried wheels failed; the steps that import them will fail"
else
  echo "device_check.sh: no wheels in $WHEELS: run 'make gpu-wheels' before the call and carry .device-wheels"
fi
PYTHONPATH=".:$SITE${PYTHONPATH:+:$PYTHONPATH}" python3 benchmarks/device_check.py --out "$OUT" "$@"
