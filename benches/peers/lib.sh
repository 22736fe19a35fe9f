# Shared by the JVM peer harnesses (benches/peers/*/run.sh); source it from the
# harness directory. Builds the Maven project when needed (offline first, then
# once online from Maven Central into ~/.m2), checks for Java 17+, and runs the
# main class keeping only '#' and 'PEER ' lines on stdout.
#
# Env: JAVA (default java), MVN (default mvn), JAVA_OPTS (extra JVM flags).

JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

# peer_build NAME: builds ./target if pom.xml or src/ changed since the last good build.
peer_build() {
  local name="$1" stamp="target/.build-ok" log
  if [[ -f "$stamp" && -d target/lib && -f target/classes/flowstage/peers/Main.class ]] &&
    [[ -z "$(find pom.xml src -newer "$stamp" -print -quit)" ]]; then
    return 0
  fi
  command -v "$MVN" >/dev/null || { echo "run.sh: '$MVN' not found (need Maven 3.6+)" >&2; exit 1; }
  log="$(mktemp "${TMPDIR:-/tmp}/$name-peer-mvn.XXXXXX")"
  if ! "$MVN" -q -B -o package >"$log" 2>&1; then
    echo "run.sh: offline build failed; resolving from Maven Central (first run)..." >&2
    if ! "$MVN" -q -B package >"$log" 2>&1; then
      echo "run.sh: Maven build failed; log follows" >&2
      cat "$log" >&2
      rm -f "$log"
      exit 1
    fi
  fi
  rm -f "$log"
  touch "$stamp"
}

# peer_check_java: Java 17+ required (the poms target release 17).
peer_check_java() {
  local jv
  jv="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  if [[ -z "$jv" || "${jv%%.*}" -lt 17 ]]; then
    echo "run.sh: need Java 17+, '$JAVA' reports '${jv:-unknown}'" >&2
    exit 1
  fi
}

# peer_run ARGS...: runs flowstage.peers.Main; stdout keeps only '#' and 'PEER ' lines,
# anything else goes to stderr. With pipefail, a JVM failure is the caller's exit status.
peer_run() {
  # shellcheck disable=SC2086
  "$JAVA" -Xms1g -Xmx1g ${JAVA_OPTS:-} -cp "target/classes:target/lib/*" flowstage.peers.Main "$@" \
    | while IFS= read -r line; do
        case "$line" in
          '#'* | 'PEER '*) printf '%s\n' "$line" ;;
          *) printf '%s\n' "$line" >&2 ;;
        esac
      done
}
