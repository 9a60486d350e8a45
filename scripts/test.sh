#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and the whole test suite with doc tests.
# It first makes sure the services the tests talk to are up (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/services.sh ]; then
  scripts/services.sh up
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check: optional features"
cargo check -p ratelimit-redis --features tls
cargo check -p ratelimit-redis -p ratelimit-dynamodb --features fuzzing  # the hooks fuzz/ uses
cargo check -p ratelimit-anomaly  # without any of its optional features
for feature in tokio tower forest nab scenarios; do  # each on its own: it names all it needs
  cargo check -p ratelimit-anomaly --features "$feature"
done
echo "== cargo doc: no warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo package: the library crates as crates.io would get them"
cargo package --no-verify --quiet -p ratelimit-core -p ratelimit-redis -p ratelimit-dynamodb \
  -p ratelimit-tower -p ratelimit-anomaly
echo "== cargo test"
# ratelimit-anomaly's dev-dependency on itself turns on all its features for its tests, so the NAB
# and scenario tests run here too.
cargo test --workspace --no-fail-fast
