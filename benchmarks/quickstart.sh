#!/usr/bin/env bash
# Wall time and peak memory of `clinitune quickstart` from a cold model cache (the one-time
# GGUF import is included; installs are not). Prints the numbers recorded in RESULTS.md.
#   bash benchmarks/quickstart.sh [workdir]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
export CLINITUNE_CACHE="$WORK/cache"
/usr/bin/time -v "$ROOT/.venv/bin/clinitune" quickstart --run-dir "$WORK/run" 2> "$WORK/time.txt" \
  | tee "$WORK/summary.txt"
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$WORK/time.txt"
python3 - "$WORK/run/eval/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
b, f = m["models"]["base"], m["models"]["final"]
c = m["comparisons"]["final"]["held_out_loss"]
print(f"held-out loss base {b['held_out']['loss']:.3f} -> tuned {f['held_out']['loss']:.3f} "
      f"(diff {c['diff']:+.3f}, 95% CI [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}])")
print("timings (s):", m["timings_s"])
PY
