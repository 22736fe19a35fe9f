#!/usr/bin/env bash
# Pekko Streams peer benchmark: build (if needed) and run.
#
# stdout: one '#' header line, then one line per scenario:
#   PEER pekko <scenario> <items_per_second> <median_seconds> <items>
# Everything else (Maven output, JVM/Pekko noise, VERBOSE per-run times) goes to stderr.
#
# Env: ITEMS (default 10000000), WARMUP (3), ITERS (5), SCENARIOS (comma list, default all),
#      VERBOSE=1, JAVA (default java), MVN (default mvn), JAVA_OPTS (extra JVM flags, appended).
#
# Build: tries `mvn -o` first (works once ~/.m2 holds Pekko 1.7.0 and the pinned plugins); if
# that fails, builds online once, resolving from Maven Central into ~/.m2. Rebuilds only when
# pom.xml or src/ is newer than the last successful build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

. "$here/../lib.sh"
peer_build pekko
peer_check_java
peer_run
