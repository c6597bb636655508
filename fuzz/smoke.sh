#!/usr/bin/env bash
# Fuzzing smoke run, for CI and before a commit: builds the fuzz targets and runs each for
# FUZZ_SECONDS (default 30) from the committed seeds. Exits non-zero if a target crashes
# (panic, failed assertion, sanitizer report, timeout or OOM); the input is then in
# fuzz/artifacts/<target>/ and its hex is printed.
#
# Works from a clean checkout: installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if it
# is missing. Uses the nightly toolchain when rustup has one (`cargo +nightly fuzz`), and
# otherwise the default (stable) toolchain with RUSTC_BOOTSTRAP=1, which lets it accept the
# -Z flags cargo-fuzz passes.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (space-separated, default: all),
# FUZZ_STABLE=1 (use the stable fallback even where nightly exists).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-decode roundtrip}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/smoke.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "${FUZZ_STABLE:-0}" != 1 ] && cargo +nightly --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  toolchain="nightly ($(cargo +nightly --version))"
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
  toolchain="default toolchain with RUSTC_BOOTSTRAP=1 ($(cargo --version))"
fi
echo "fuzz/smoke.sh: $(cargo fuzz --version), $toolchain, ${seconds}s per target: $targets"

"${fuzz[@]}" build

status=0
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "==== fuzz target $t (${seconds}s)"
  # corpus/<t> (ignored by git) takes what the run finds; the committed seeds are read only.
  if ! "${fuzz[@]}" run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    status=1
    echo "fuzz/smoke.sh: target $t FAILED; inputs:" >&2
    find "artifacts/$t" -type f -newer "$marker" | while read -r f; do
      printf '  %s  %s\n' "$f" "$(od -An -v -tx1 "$f" | tr -d ' \n' | cut -c1-2000)" >&2
    done
  fi
done
if [ "$status" -eq 0 ]; then
  echo "fuzz/smoke.sh: no crash"
fi
exit "$status"
