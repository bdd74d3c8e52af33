#!/usr/bin/env bash
# UAT container entrypoint. Starts the prompt server first (so /health answers from the start),
# fetches GIT_REF from REPO (shallow) into WORK_DIR and checks out exactly HEAD_SHA, runs
# APP_INSTALL_CMD, starts APP_START_CMD, and,
# when ALB_LISTENER_ARN is set, routes ${SESSION_ID}.${UAT_DOMAIN} to this task. It keeps PHASE_FILE
# current: cloning -> installing -> starting (the prompt server itself reports ready once the app
# answers on APP_PORT), or failed with the reason, after which the prompt server keeps running so
# /health shows it. On TERM it stops its children and removes the routing it created.
#
# Pool mode (a warm-pool task): started with UAT_POOL_TOKEN and without GIT_REF, HEAD_SHA and
# SESSION_ID, it writes the phase "waiting", hands the pool token to the prompt server in
# UAT_POOL_TOKEN_FILE and waits for UAT_CLAIM_FILE: the prompt server writes it, once, when
# `POST /claim` (bearer: the pool token) brings a valid {repo, git_ref, head_sha, session_id,
# prompt_token}, after writing the prompt token to UAT_PROMPT_TOKEN_FILE. The claim is checked
# again here (`take_claim`), the pool token's file is deleted, and from there on the task is a cold
# one: the same clone, install, start and routing, the same users, files and hidden environment.
#
# PHASE_FILE protocol (read by prompt_server.py): one JSON object, replaced atomically,
#   {"phase": "waiting|cloning|installing|starting|failed", "error": "why" | null, "updated_at": "..."}
#
# Who runs what. The pull request's code is not trusted, so it runs as a user of its own:
#   root      this script: it sets up the users' folders and secret files, supervises, and holds
#             the ALB routing; PR code cannot read a root process's /proc/<pid>/environ.
#   AGENT_UID the prompt server, the agent it starts, and the clone (git fetch, checkout). HOME is
#             AGENT_HOME (0700): PHASE_FILE, PROMPT_STATE, the job outputs and, in .uat-secrets/
#             (0700, files 0400), the prompt token and GIT_TOKEN. Neither token is in the prompt
#             server's or the agent's environment: the server reads UAT_PROMPT_TOKEN_FILE, git
#             reads GIT_TOKEN_FILE through the credential helper (the agent may push).
#   APP_UID   APP_INSTALL_CMD and APP_START_CMD (install, build, run), with HOME=APP_HOME, no
#             supplementary groups, no new privileges, and none of the secrets in APP_HIDDEN_ENV.
# The working tree WORK_DIR is the agent's, group APP_UID's group (setgid, so everything in it
# is), so the app can read it and the agent can edit what the app writes: WORK_DIR itself is
# group-writable and sticky (3775: the app makes node_modules, dist... at the top, but cannot
# rename or replace what the agent owns there, .git included); the agent works with umask 022
# (so .git, config and hooks included, stays the agent's alone: nothing the app writes is run by
# git) and the app with umask 002 (the agent, a member of the group, can change the app's files).
# Started as another user than root, the script cannot separate them: it refuses to run unless
# APP_UID is set empty, which runs everything as that one user (for development only: the app can
# then read both tokens).
#
# Environment [default]:
#   REPO                the base repository's clone URL (required)
#   GIT_REF             the ref to fetch from REPO, refs/pull/<n>/head: works for forks (required)
#   HEAD_SHA            the commit to run (required); when GIT_REF is elsewhere (a push raced the
#                       launch) the phase is failed with the reason: nothing falls back to another ref
#   BRANCH              the PR's branch, for display only: the local branch's name
#   GIT_TOKEN           HTTPS token for the clone and the agent's pushes; given to git by a
#                       credential helper that reads it from GIT_TOKEN_FILE (never printed)
#   UAT_PROMPT_TOKEN    the prompt server's bearer token, handed over in UAT_PROMPT_TOKEN_FILE
#   UAT_POOL_TOKEN      pool mode (see above): the bearer token of POST /claim, until the claim
#   AGENT_UID [1001]  APP_UID [1002] (empty: no separation, see above)  APP_HOME [/home/app]
#   AGENT_HOME [$HOME]
#   WORK_DIR [$AGENT_HOME/app]  PHASE_FILE [$AGENT_HOME/phase.json]
#   PROMPT_STATE [$AGENT_HOME/prompt-state.json]
#   APP_PORT [3001]  PROMPT_PORT [8080]
#   APP_INSTALL_CMD [npm ci]
#   APP_START_CMD [npm run dev -- --host 0.0.0.0 --port $APP_PORT]   (both run with `bash -c`)
#   PYTHON [python3]  PROMPT_SERVER [/opt/uat/prompt_server.py]
#   ALB_LISTENER_ARN, UAT_DOMAIN, SESSION_ID   optional ALB host-header routing
#   ALB_VPC_ID [the listener's]  TASK_IP [from ECS metadata]  ALB_HEALTH_PATH [/]
set -euo pipefail

export APP_PORT="${APP_PORT:-3001}"
export PROMPT_PORT="${PROMPT_PORT:-8080}"
export AGENT_HOME="${AGENT_HOME:-$HOME}"
export AGENT_UID="${AGENT_UID-1001}"
export APP_UID="${APP_UID-1002}"
export APP_HOME="${APP_HOME:-/home/app}"
export WORK_DIR="${WORK_DIR:-$AGENT_HOME/app}"
export PHASE_FILE="${PHASE_FILE:-$AGENT_HOME/phase.json}"
export PROMPT_STATE="${PROMPT_STATE:-$AGENT_HOME/prompt-state.json}"
export GIT_TERMINAL_PROMPT=0
SECRETS_DIR="$AGENT_HOME/.uat-secrets"
export GIT_TOKEN_FILE="$SECRETS_DIR/git-token"
CLAIM_FILE="$SECRETS_DIR/claim"
# What the app's environment never has: the tokens, the agent's model credentials and the task's
# AWS credentials (the relative URI is what lets a process fetch the task role's keys).
export APP_HIDDEN_ENV="UAT_PROMPT_TOKEN UAT_PROMPT_TOKEN_FILE GIT_TOKEN GIT_TOKEN_FILE
    UAT_POOL_TOKEN UAT_POOL_TOKEN_FILE UAT_CLAIM_FILE
    ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN AWS_ACCESS_KEY_ID
    AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
    AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
APP_INSTALL_CMD="${APP_INSTALL_CMD:-npm ci}"
APP_START_CMD="${APP_START_CMD:-npm run dev -- --host 0.0.0.0 --port \$APP_PORT}"
PYTHON="${PYTHON:-python3}"
PROMPT_SERVER="${PROMPT_SERVER:-/opt/uat/prompt_server.py}"
REPO="${REPO:-}"
BRANCH="${BRANCH:-}"
GIT_REF="${GIT_REF:-}"
HEAD_SHA="${HEAD_SHA:-}"
POOL=""  # set: a warm-pool task, waiting for its claim
if [[ -n ${UAT_POOL_TOKEN:-} && -z $GIT_REF$HEAD_SHA${SESSION_ID:-} ]]; then
    POOL=1
fi

# git runs this helper with `sh`; the single quotes keep the variables unexpanded until then, so
# the token is never on a command line, in a config file or in this script's output. It reads
# GIT_TOKEN_FILE (the agent's), or GIT_TOKEN where a caller sets it.
# shellcheck disable=SC2016
CREDENTIAL_HELPER='!f() { if test "$1" = get; then echo username=x-access-token; echo "password=${GIT_TOKEN:-$(cat "$GIT_TOKEN_FILE" 2>/dev/null)}"; fi; }; f'

SERVER_PID=""  # the prompt server, leader of its own process group
APP_PID=""     # APP_START_CMD, leader of its own process group
STEP_PID=""    # the clone or install running now, leader of its own process group
TG_ARN=""      # ALB routing created here, removed on exit
RULE_ARN=""

log() {
    printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(scrub "$*")" >&2
}

# The text with GIT_TOKEN, and any user:password@ in URLs, blanked out.
scrub() {
    local text=$1
    if [[ -n ${GIT_TOKEN:-} ]]; then
        text=${text//"$GIT_TOKEN"/"***"}
    fi
    text=$(sed -E 's#(://)[^/@[:space:]]+@#\1***@#g' <<<"$text")
    printf '%s' "$text"
}

json_string() {
    local text=$1
    text=${text//\\/\\\\}
    text=${text//\"/\\\"}
    text=${text//[[:cntrl:]]/ }
    printf '"%s"' "$text"
}

# write_phase PHASE [ERROR]: replace PHASE_FILE atomically (temp file + rename).
write_phase() {
    local phase=$1 error error_json=null tmp
    error=$(scrub "${2:-}")
    if [[ -n $error ]]; then
        error_json=$(json_string "$error")
    fi
    tmp="$PHASE_FILE.tmp.$$"
    printf '{"phase": "%s", "error": %s, "updated_at": "%s"}\n' \
        "$phase" "$error_json" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp"
    mv -f "$tmp" "$PHASE_FILE"
    log "phase: $phase${error:+ - $error}"
}

# as_agent COMMAND...: run as AGENT_UID (also in APP_UID's group), umask 022, HOME=AGENT_HOME,
# without the tokens (the pool's included) in its environment.
as_agent() {
    local drop=()
    if [[ -n $APP_UID ]]; then
        drop=(setpriv --reuid "$AGENT_UID" --regid "$AGENT_UID" --groups "$APP_UID"
            --inh-caps=-all --no-new-privs)
    fi
    env -u UAT_PROMPT_TOKEN -u GIT_TOKEN -u UAT_POOL_TOKEN HOME="$AGENT_HOME" "${drop[@]}" \
        bash -c 'umask 022 && exec "$@"' as-agent "$@"
}

# as_app COMMAND: run the shell command COMMAND in WORK_DIR as APP_UID, umask 002,
# HOME=APP_HOME, without APP_HIDDEN_ENV.
as_app() {
    local drop=() unset=() name
    if [[ -n $APP_UID ]]; then
        drop=(setpriv --reuid "$APP_UID" --regid "$APP_UID" --clear-groups --inh-caps=-all
            --no-new-privs)
    fi
    for name in $APP_HIDDEN_ENV; do unset+=(-u "$name"); done
    # shellcheck disable=SC2016 # $1 is for the inner bash: the command, run by eval
    env -C "$WORK_DIR" "${unset[@]}" HOME="$APP_HOME" "${drop[@]}" \
        bash -c 'umask 002 && eval "$1"' as-app "$1"
}
export -f as_agent as_app  # for run_step's and start_app's setsid bash

# Who is who (see the top): folders and secret files for the users, or the refusal to run the
# app as this same user without being told to.
set_up_users() {
    local old_umask
    if [[ -n $APP_UID && $(id -u) -ne 0 ]]; then
        fail "entrypoint.sh runs as uid $(id -u), not root, so it cannot run the app as" \
            "APP_UID=$APP_UID: start the container as root (the image's default) or set APP_UID=" \
            "(empty) to run everything as one user"
        return 1
    fi
    if [[ -n $APP_UID && $WORK_DIR/ == "$AGENT_HOME"/* ]]; then
        fail "WORK_DIR=$WORK_DIR is inside AGENT_HOME=$AGENT_HOME, which the app's user cannot" \
            "enter: set WORK_DIR to a folder outside it (the image uses /srv/app)"
        return 1
    fi
    old_umask=$(umask)
    umask 077
    mkdir -p "$AGENT_HOME" "$SECRETS_DIR" "$(dirname "$PHASE_FILE")" "$(dirname "$PROMPT_STATE")"
    rm -f -- "$SECRETS_DIR/prompt-token" "$GIT_TOKEN_FILE" "$SECRETS_DIR/pool-token" "$CLAIM_FILE"
    if [[ -n ${UAT_PROMPT_TOKEN:-} ]]; then
        export UAT_PROMPT_TOKEN_FILE="$SECRETS_DIR/prompt-token"
        printf '%s\n' "$UAT_PROMPT_TOKEN" >"$UAT_PROMPT_TOKEN_FILE"
    elif [[ -n $POOL ]]; then  # the prompt server writes it there on the claim
        export UAT_PROMPT_TOKEN_FILE="$SECRETS_DIR/prompt-token" UAT_CLAIM_FILE="$CLAIM_FILE"
        export UAT_POOL_TOKEN_FILE="$SECRETS_DIR/pool-token"
        printf '%s\n' "$UAT_POOL_TOKEN" >"$UAT_POOL_TOKEN_FILE"
    fi
    printf '%s\n' "${GIT_TOKEN:-}" >"$GIT_TOKEN_FILE"
    chmod 0400 "$SECRETS_DIR"/*
    if [[ -n $APP_UID ]]; then
        mkdir -p "$APP_HOME"
        chown "$APP_UID:$APP_UID" "$APP_HOME"
        chown -R "$AGENT_UID:$AGENT_UID" "$AGENT_HOME"
        chmod 0700 "$AGENT_HOME"
    fi
    umask "$old_umask"
}

# In a process group of its own, like the app, so that stopping it reaches past setpriv.
start_prompt_server() {
    # shellcheck disable=SC2016 # "$@" is for the inner bash
    setsid bash -c 'as_agent "$@"' prompt-server "$PYTHON" "$PROMPT_SERVER" &
    SERVER_PID=$!
    log "prompt server started (pid $SERVER_PID, port $PROMPT_PORT)"
}

# run_step COMMAND...: run in the background in its own process group and wait, so that a TERM
# is handled at once (bash runs traps only between commands) and stops the whole step.
run_step() {
    local status=0
    setsid bash -c '"$@"' run-step "$@" &
    STEP_PID=$!
    wait "$STEP_PID" || status=$?
    STEP_PID=""
    return "$status"
}

# git as the agent, with the token given by the credential helper (and no other helper).
GIT_AUTH=(as_agent git -c credential.helper= -c "credential.helper=$CREDENTIAL_HELPER")
GIT=(as_agent git)

# Fetch GIT_REF from REPO and check out HEAD_SHA, on a local branch named BRANCH when it is a
# valid name. GIT_REF is fetched rather than BRANCH: a fork's branch is not in REPO, and a fork
# branch named like one of REPO's would otherwise run REPO's commit.
clone() {
    local err status=0 fetched
    err=$(mktemp)
    if [[ -z $REPO || -z $GIT_REF || -z $HEAD_SHA ]]; then
        fail "REPO, GIT_REF and HEAD_SHA must all be set" \
            "(REPO='$REPO', GIT_REF='$GIT_REF', HEAD_SHA='$HEAD_SHA')"
        return 1
    fi
    run_step "${GIT_AUTH[@]}" ls-remote --exit-code -- "$REPO" "$GIT_REF" >/dev/null 2>"$err" ||
        status=$?
    if [[ $status -eq 2 ]]; then
        fail "$GIT_REF does not exist in $REPO"
        return 1
    elif [[ $status -ne 0 ]]; then
        fail "cannot read $REPO (git ls-remote exited with $status): $(tail -n 3 "$err")"
        return 1
    fi
    # The working tree: the agent's, the app's group, setgid and sticky (see the top).
    mkdir -p -- "$(dirname "$WORK_DIR")"
    mkdir -p -- "$WORK_DIR"
    if [[ -n $APP_UID ]]; then
        chown -- "$AGENT_UID:$APP_UID" "$WORK_DIR"
        chmod 3775 -- "$WORK_DIR"
    fi
    if ! "${GIT[@]}" init --quiet -- "$WORK_DIR" 2>"$err" ||
        ! "${GIT[@]}" -C "$WORK_DIR" remote add origin -- "$REPO" 2>"$err"; then
        fail "cannot prepare $WORK_DIR for the checkout: $(tail -n 3 "$err")"
        return 1
    fi
    run_step "${GIT_AUTH[@]}" -C "$WORK_DIR" fetch --quiet --depth 1 --no-tags origin \
        "+$GIT_REF:refs/remotes/origin/uat-head" 2>"$err" || status=$?
    if [[ $status -ne 0 ]]; then
        fail "git fetch of $GIT_REF failed (status $status): $(tail -n 3 "$err")"
        rm -rf -- "$WORK_DIR"
        return 1
    fi
    rm -f "$err"
    fetched=$("${GIT[@]}" -C "$WORK_DIR" rev-parse refs/remotes/origin/uat-head)
    if [[ $fetched != "$HEAD_SHA" ]]; then
        fail "$GIT_REF is at $fetched, not at $HEAD_SHA: the pull request changed after the" \
            "launch; start the environment again to run its new head"
        rm -rf -- "$WORK_DIR"
        return 1
    fi
    if [[ -n $BRANCH ]] && git check-ref-format --branch "$BRANCH" >/dev/null 2>&1; then
        "${GIT[@]}" -C "$WORK_DIR" checkout --quiet -B "$BRANCH" "$HEAD_SHA"
    else
        "${GIT[@]}" -C "$WORK_DIR" checkout --quiet --detach "$HEAD_SHA"
    fi
    # Pushes by the agent use the same helper; commits get an identity unless one is configured.
    "${GIT[@]}" -C "$WORK_DIR" config credential.helper "$CREDENTIAL_HELPER"
    "${GIT[@]}" -C "$WORK_DIR" config user.name >/dev/null ||
        "${GIT[@]}" -C "$WORK_DIR" config user.name "UAT agent"
    "${GIT[@]}" -C "$WORK_DIR" config user.email >/dev/null ||
        "${GIT[@]}" -C "$WORK_DIR" config user.email "uat-agent@users.noreply.github.com"
    log "fetched $GIT_REF at $HEAD_SHA${BRANCH:+ ($BRANCH)}"
}

# Pool mode: wait for the prompt server to write CLAIM_FILE (keeping it up meanwhile), then
# `take_claim`. TERM is handled at once (the sleep runs in the background).
wait_for_claim() {
    log "warm-pool task: waiting for POST /claim on port $PROMPT_PORT"
    while [[ ! -e $CLAIM_FILE ]]; do
        keep_server_up
        sleep 0.2 &
        wait $! || true
    done
    take_claim
}

# The environment CLAIM_FILE names, checked again (it was written by the agent's user), exported
# as a cold task gets it from ECS; the pool token is gone afterwards.
take_claim() {
    local line key value
    rm -f -- "$UAT_POOL_TOKEN_FILE"  # whatever the claim holds, the task is taken: 409 from now on
    unset UAT_POOL_TOKEN UAT_POOL_TOKEN_FILE
    REPO="" GIT_REF="" HEAD_SHA="" SESSION_ID="" BRANCH="" PR_NUMBER=""
    if [[ -L $CLAIM_FILE || ! -f $CLAIM_FILE ]]; then
        fail "the claim ($CLAIM_FILE) is not a regular file: start another task"
        return 1
    fi
    while IFS= read -r line; do
        key=${line%%=*} value=${line#*=}
        case $key in
            REPO) REPO=$value ;;
            GIT_REF) GIT_REF=$value ;;
            HEAD_SHA) HEAD_SHA=$value ;;
            SESSION_ID) SESSION_ID=$value ;;
            BRANCH) BRANCH=$value ;;
            PR_NUMBER) PR_NUMBER=$value ;;
            *)
                fail "the claim has a line that is not one of its fields: start another task"
                return 1
                ;;
        esac
    done <"$CLAIM_FILE"
    if ! [[ $REPO =~ ^(https?|file)://[A-Za-z0-9._~%+/:-]{1,500}$ ]] ||
        ! [[ $GIT_REF =~ ^refs/[A-Za-z0-9._/-]{1,250}$ ]] ||
        ! git check-ref-format "$GIT_REF" ||
        ! [[ $HEAD_SHA =~ ^([0-9a-f]{40}|[0-9a-f]{64})$ ]] ||
        ! [[ $SESSION_ID =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
        ! [[ $BRANCH =~ ^[A-Za-z0-9._/+-]{0,250}$ ]] || ! [[ $PR_NUMBER =~ ^[0-9]{0,9}$ ]]; then
        fail "the claim's repo, git_ref, head_sha, session_id, branch or pr_number is not valid:" \
            "start another task"
        return 1
    fi
    if [[ ! -s $UAT_PROMPT_TOKEN_FILE ]]; then
        fail "the claim came without the prompt token's file: start another task"
        return 1
    fi
    export REPO GIT_REF HEAD_SHA SESSION_ID BRANCH PR_NUMBER
    log "claimed: session $SESSION_ID, $GIT_REF at $HEAD_SHA"
    write_phase cloning
}

# The operators' commands run in WORK_DIR as the app's user (`as_app`).
install_app() {
    local status=0
    run_step as_app "$APP_INSTALL_CMD" || status=$?
    if [[ $status -ne 0 ]]; then
        fail "APP_INSTALL_CMD exited with status $status (the container log has its output)"
        return 1
    fi
}

start_app() {
    # shellcheck disable=SC2016 # $1 is for the inner bash
    setsid bash -c 'as_app "$1"' start-app "$APP_START_CMD" &
    APP_PID=$!
    log "app started (pid $APP_PID), waiting for it on port $APP_PORT"
}

fail() {
    write_phase failed "$*"
}

# ------------------------------------------------------------------------------ ALB routing

aws_elb() {
    aws elbv2 "$@"
}

task_ip() {
    if [[ -n ${TASK_IP:-} ]]; then
        printf '%s\n' "$TASK_IP"
    elif [[ -n ${ECS_CONTAINER_METADATA_URI_V4:-} ]]; then
        "$PYTHON" - "$ECS_CONTAINER_METADATA_URI_V4" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    print(json.load(response)["Networks"][0]["IPv4Addresses"][0])
EOF
    else
        hostname -I | awk '{print $1}'
    fi
}

lowest_free_priority() {
    local used priority=1
    used=$(aws_elb describe-rules --listener-arn "$ALB_LISTENER_ARN" \
        --query 'Rules[].Priority' --output text | tr -s '[:space:]' '\n') || return 1
    while grep -qx -- "$priority" <<<"$used"; do
        priority=$((priority + 1))
    done
    printf '%s\n' "$priority"
}

listener_vpc() {
    local lb
    lb=$(aws_elb describe-listeners --listener-arns "$ALB_LISTENER_ARN" \
        --query 'Listeners[0].LoadBalancerArn' --output text) || return 1
    aws_elb describe-load-balancers --load-balancer-arns "$lb" \
        --query 'LoadBalancers[0].VpcId' --output text
}

add_routing() {
    local host ip vpc name err priority attempt owner tags
    if [[ -z ${SESSION_ID:-} || -z ${UAT_DOMAIN:-} ]]; then
        fail "ALB_LISTENER_ARN is set but SESSION_ID or UAT_DOMAIN is not"
        return 1
    fi
    host="$SESSION_ID.$UAT_DOMAIN"
    err=$(mktemp)
    if ! ip=$(task_ip 2>"$err") || [[ -z $ip ]]; then
        fail "ALB routing: cannot find this task's IP address: $(tail -n 2 "$err")"
        return 1
    fi
    vpc=${ALB_VPC_ID:-}
    if [[ -z $vpc ]] && ! vpc=$(listener_vpc 2>"$err"); then
        fail "ALB routing: cannot find the listener's VPC: $(tail -n 2 "$err")"
        return 1
    fi
    # The task role may only touch routing tagged with its own role session (docs/iam/README.md):
    # uat-owner is this task's aws:userid, which GetCallerIdentity tells without any permission.
    if ! owner=$(aws sts get-caller-identity --query UserId --output text 2>"$err"); then
        fail "ALB routing: cannot tell this task's AWS identity: $(tail -n 2 "$err")"
        return 1
    fi
    tags=("Key=SESSION_ID,Value=$SESSION_ID" "Key=managed-by,Value=uat-bot" "Key=uat-owner,Value=$owner")
    name="uat-${SESSION_ID//[^a-zA-Z0-9-]/-}"
    name="${name:0:32}"
    name="${name%-}"
    if ! TG_ARN=$(aws_elb create-target-group --name "$name" --protocol HTTP \
        --port "$APP_PORT" --target-type ip --vpc-id "$vpc" \
        --health-check-path "${ALB_HEALTH_PATH:-/}" --tags "${tags[@]}" \
        --query 'TargetGroups[0].TargetGroupArn' --output text 2>"$err"); then
        TG_ARN=""
        fail "ALB routing: cannot create target group $name: $(tail -n 2 "$err")"
        return 1
    fi
    if ! aws_elb register-targets --target-group-arn "$TG_ARN" \
        --targets "Id=$ip,Port=$APP_PORT" 2>"$err"; then
        fail "ALB routing: cannot register $ip: $(tail -n 2 "$err")"
        return 1
    fi
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        priority=$(lowest_free_priority 2>"$err") || {
            fail "ALB routing: cannot list the listener's rules: $(tail -n 2 "$err")"
            return 1
        }
        if RULE_ARN=$(aws_elb create-rule --listener-arn "$ALB_LISTENER_ARN" \
            --priority "$priority" --conditions "Field=host-header,Values=$host" \
            --actions "Type=forward,TargetGroupArn=$TG_ARN" \
            --tags "${tags[@]}" \
            --query 'Rules[0].RuleArn' --output text 2>"$err"); then
            log "ALB: $host -> $ip:$APP_PORT (rule priority $priority)"
            rm -f "$err"
            return 0
        fi
        RULE_ARN=""
        if ! grep -q PriorityInUse "$err"; then
            fail "ALB routing: cannot create the rule for $host: $(tail -n 2 "$err")"
            return 1
        fi
        log "rule priority $priority was taken meanwhile (attempt $attempt): trying again"
        sleep "0.$((RANDOM % 9 + 1))"
    done
    fail "ALB routing: no free rule priority after 10 attempts"
    return 1
}

# Rule first (it forwards to the target group), then the target group.
remove_routing() {
    if [[ -n $RULE_ARN ]]; then
        aws_elb delete-rule --rule-arn "$RULE_ARN" || log "could not delete rule $RULE_ARN"
        RULE_ARN=""
    fi
    if [[ -n $TG_ARN ]]; then
        aws_elb delete-target-group --target-group-arn "$TG_ARN" ||
            log "could not delete target group $TG_ARN"
        TG_ARN=""
    fi
}

# ------------------------------------------------------------------------------ life cycle

alive() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null
}

stop_children() {
    local pid
    for pid in "$STEP_PID" "$APP_PID" "$SERVER_PID"; do
        if [[ -n $pid ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    done
    for _ in $(seq 100); do
        if ! alive "$STEP_PID" && ! alive "$APP_PID" && ! alive "$SERVER_PID"; then
            break
        fi
        sleep 0.1
    done
    for pid in "$STEP_PID" "$APP_PID" "$SERVER_PID"; do
        if [[ -n $pid ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    done
}

on_exit() {
    local status=$?
    trap - EXIT TERM INT
    log "stopping (status $status)"
    stop_children
    remove_routing
    exit "$status"
}

keep_server_up() {
    local status=0
    if ! alive "$SERVER_PID"; then
        if [[ -n $SERVER_PID ]]; then
            wait "$SERVER_PID" || status=$?
            log "the prompt server exited with status $status: starting it again"
        fi
        start_prompt_server
    fi
}

# Until TERM: restart the prompt server if it dies; report a failed phase when the app exits.
watch() {
    local status
    while true; do
        if [[ -n $APP_PID ]] && ! alive "$APP_PID"; then
            status=0
            wait "$APP_PID" || status=$?
            APP_PID=""
            fail "the app (APP_START_CMD) exited with status $status"
        fi
        keep_server_up
        sleep 1 &
        wait $! || true
    done
}

main() {
    trap on_exit EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    mkdir -p "$(dirname "$PHASE_FILE")"
    if [[ -n $POOL ]]; then
        write_phase waiting
    else
        unset UAT_POOL_TOKEN  # a task started for an environment is no pool member
        write_phase cloning
    fi
    if ! set_up_users; then
        APP_UID=""  # the prompt server, as this user and with no token, says why on /health
        watch
    fi
    start_prompt_server
    if [[ -n $POOL ]] && ! wait_for_claim; then
        watch
    fi
    if clone; then
        write_phase installing
        if install_app; then
            start_app
            write_phase starting
            if [[ -n ${ALB_LISTENER_ARN:-} ]]; then
                add_routing || true
            fi
        fi
    fi
    watch
}

main "$@"
