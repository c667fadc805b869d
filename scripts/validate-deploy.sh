#!/usr/bin/env bash
# Validate Sinal's deployment files without a Docker engine and without starting nginx.
#
#   scripts/validate-deploy.sh [--compose FILE] [--nginx FILE]
#
# - docker-compose.yml: `docker-compose config -q` (Debian's docker-compose 1.29 parses
#   and validates the file without an engine). Run with an empty environment and no
#   .env file, plus a placeholder JWT_SECRET (the file requires one), so the result does
#   not depend on the caller's shell.
# - nginx.conf: `nginx -t` (Debian's nginx). The upstreams name the compose service
#   `app`, which resolves only inside Docker, and nginx -t resolves upstream hosts. So
#   nginx -t runs in a private mount namespace whose /etc/hosts maps app to 127.0.0.1
#   (the exact file is tested; needs root or CAP_SYS_ADMIN). Where that is not possible,
#   or with SINAL_NGINX_APP_HOST=copy, it tests a temporary copy in which only the
#   `server app:PORT` lines read `server 127.0.0.1:PORT`. No server is started; the
#   error log goes to stderr and the pid file nginx -t touches to a temporary folder.
#
# Missing tools are installed with apt-get (Debian packages docker-compose and nginx,
# without recommends, so no Docker engine), as root, without letting the package start
# nginx. With SINAL_NO_APT=1 a missing tool is an error instead.
#
# Exit status: 0 all files valid; 1 a file is invalid or missing; 2 bad usage;
# 3 a tool is missing and cannot be installed.
set -euo pipefail

readonly PROG=validate-deploy
readonly POLICY_RC=/usr/sbin/policy-rc.d
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_FILE_PATH=$REPO_ROOT/docker-compose.yml
NGINX_CONF_PATH=$REPO_ROOT/nginx.conf
# nginx lives in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

WORK_DIR=$(mktemp -d)
POLICY_RC_CREATED=0
APT_UPDATED=0

cleanup() {
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f "$POLICY_RC"
    fi
    rm -rf "$WORK_DIR"
}
trap cleanup EXIT

say() { printf '%s: %s\n' "$PROG" "$*"; }
fail() {
    local status=$1
    shift
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit "$status"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --compose) [[ $# -ge 2 ]] || fail 2 "--compose needs a file"; COMPOSE_FILE_PATH=$2; shift 2 ;;
        --nginx) [[ $# -ge 2 ]] || fail 2 "--nginx needs a file"; NGINX_CONF_PATH=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) fail 2 "unknown argument: $1 (see --help)" ;;
    esac
done

absolute_path() {
    local path=$1
    [[ -f $path ]] || fail 1 "no such file: $path"
    printf '%s/%s\n' "$(cd "$(dirname "$path")" && pwd)" "$(basename "$path")"
}
COMPOSE_FILE_PATH=$(absolute_path "$COMPOSE_FILE_PATH")
NGINX_CONF_PATH=$(absolute_path "$NGINX_CONF_PATH")

# --- tools --------------------------------------------------------------------------

install_debian_package() {
    local package=$1 status=0 nginx_pid_before=""
    if [[ $(id -u) != 0 ]]; then
        fail 3 "cannot install $package: not root (run: sudo apt-get install -y $package)"
    fi
    command -v apt-get >/dev/null 2>&1 \
        || fail 3 "cannot install $package: no apt-get on this machine"
    # Debian starts a packaged service unless policy-rc.d answers 101 ("denied").
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# temporary, from %s: do not start services\nexit 101\n' "$PROG" \
            >"$POLICY_RC"
        chmod 0755 "$POLICY_RC"
        POLICY_RC_CREATED=1
    fi
    if [[ -s /run/nginx.pid ]]; then
        nginx_pid_before=$(cat /run/nginx.pid)
    fi
    if [[ $APT_UPDATED == 0 ]]; then
        say "apt-get update"
        apt-get update -q || status=$?
        [[ $status == 0 ]] || fail 3 "apt-get update failed (status $status)"
        APT_UPDATED=1
    fi
    say "apt-get install -y --no-install-recommends $package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" \
        || status=$?
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f "$POLICY_RC"
        POLICY_RC_CREATED=0
    fi
    [[ $status == 0 ]] || fail 3 "apt-get install $package failed (status $status)"
    # Belt and braces: if the install started an nginx anyway, stop that one (only it).
    if [[ -s /run/nginx.pid ]]; then
        local nginx_pid
        nginx_pid=$(cat /run/nginx.pid)
        if [[ $nginx_pid != "$nginx_pid_before" ]] && kill -0 "$nginx_pid" 2>/dev/null; then
            say "stopping the nginx (pid $nginx_pid) that the package started"
            kill -QUIT "$nginx_pid" || true
        fi
    fi
}

ensure_tool() {
    local command_name=$1 package=$2
    if command -v "$command_name" >/dev/null 2>&1; then
        return 0
    fi
    if [[ ${SINAL_NO_APT:-0} == 1 ]]; then
        fail 3 "$command_name not found and SINAL_NO_APT=1: install the Debian package" \
            "'$package' (apt-get install -y --no-install-recommends $package) or unset SINAL_NO_APT"
    fi
    say "$command_name not found: installing Debian package $package"
    install_debian_package "$package"
    command -v "$command_name" >/dev/null 2>&1 \
        || fail 3 "$command_name still not found after installing $package"
}

ensure_tool docker-compose docker-compose
ensure_tool nginx nginx
say "tool: $(command -v docker-compose) ($(docker-compose version --short 2>/dev/null || echo '?'))"
say "tool: $(command -v nginx) ($(nginx -v 2>&1 | sed 's/^nginx version: //'))"

# --- docker-compose.yml -------------------------------------------------------------

check_compose() {
    local empty_env=$WORK_DIR/empty.env output status=0
    : >"$empty_env"
    output=$(env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 \
        JWT_SECRET=validate-deploy-placeholder \
        docker-compose --env-file "$empty_env" -f "$COMPOSE_FILE_PATH" config -q 2>&1) \
        || status=$?
    if [[ -n $output ]]; then
        printf '%s\n' "$output" | sed 's/^/    /'
    fi
    if [[ $status != 0 ]]; then
        say "compose: INVALID $COMPOSE_FILE_PATH (docker-compose config -q, status $status)"
        return 1
    fi
    say "compose: valid $COMPOSE_FILE_PATH (docker-compose config -q;" \
        "empty environment, no .env, placeholder JWT_SECRET)"
}

# --- nginx.conf ---------------------------------------------------------------------

nginx_test_in_namespace() {
    # Prints nginx's output; status 125 when the namespace itself could not be made.
    local hosts=$WORK_DIR/hosts
    { cat /etc/hosts; printf '127.0.0.1 app\n'; } >"$hosts"
    command -v unshare >/dev/null 2>&1 || return 125
    unshare --mount --propagation private true >/dev/null 2>&1 || return 125
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --propagation private sh -c '
        mount --bind "$1" /etc/hosts 2>/dev/null || exit 125
        exec nginx -t -e stderr -g "pid $3;" -c "$2" 2>&1
    ' sh "$hosts" "$NGINX_CONF_PATH" "$WORK_DIR/nginx.pid" 2>&1
}

nginx_test_on_copy() {
    local copy_dir=$WORK_DIR/nginx copy replaced
    mkdir -p "$copy_dir"
    copy=$copy_dir/nginx.conf
    sed -E 's/^([[:space:]]*server[[:space:]]+)app:/\1127.0.0.1:/' "$NGINX_CONF_PATH" >"$copy"
    replaced=$(diff "$NGINX_CONF_PATH" "$copy" | grep -c '^>' || true)
    say "nginx: copy with $replaced 'server app:PORT' line(s) pointed at 127.0.0.1"
    nginx -t -e stderr -g "pid $WORK_DIR/nginx.pid;" -p "$copy_dir/" -c "$copy" 2>&1
}

check_nginx() {
    local mode=${SINAL_NGINX_APP_HOST:-auto} output status=0 how
    case $mode in
        auto | namespace)
            output=$(nginx_test_in_namespace) || status=$?
            how="nginx -t on the file itself, app -> 127.0.0.1 in a private /etc/hosts"
            if [[ $status == 125 ]]; then
                [[ $mode == auto ]] || fail 3 "cannot make a private mount namespace (need root)"
                say "nginx: no private mount namespace here; testing a copy instead"
                status=0
                output=$(nginx_test_on_copy) || status=$?
                how="nginx -t on a copy with server app:PORT -> 127.0.0.1:PORT"
            fi
            ;;
        copy)
            output=$(nginx_test_on_copy) || status=$?
            how="nginx -t on a copy with server app:PORT -> 127.0.0.1:PORT"
            ;;
        *) fail 2 "SINAL_NGINX_APP_HOST must be auto, namespace or copy (got '$mode')" ;;
    esac
    printf '%s\n' "$output" | sed 's/^/    /'
    if [[ $status != 0 ]]; then
        say "nginx: INVALID $NGINX_CONF_PATH ($how, status $status)"
        return 1
    fi
    say "nginx: valid $NGINX_CONF_PATH ($how)"
}

# --- run ----------------------------------------------------------------------------

failures=0
check_compose || failures=$((failures + 1))
check_nginx || failures=$((failures + 1))
if [[ $failures != 0 ]]; then
    say "FAILED: $failures invalid file(s)"
    exit 1
fi
say "OK: docker-compose.yml and nginx.conf are valid"
