#!/usr/bin/env bash
# Runs every herald test: formatting-independent unit and integration tests
# (real server processes on loopback) and, once they exist, the real-browser
# tests. Installs what it needs; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (unit + integration, real servers on 127.0.0.1)"
cargo test --all-targets --locked
