# Sourced by bench/gpu.sh and bench/gpu_followup.sh: RESULTS must be set.
step() {  # step NAME SECONDS COMMAND...: run for at most SECONDS, keep its output, report its exit status
    local name=$1 limit=$2; shift 2
    echo "== $name (at most $limit s): $*"
    local start=$SECONDS
    # a step that hangs or runs long is stopped (exit 124), so the steps after it still run
    PYTHONUNBUFFERED=1 timeout --kill-after=10 "$limit" "$@" > "$RESULTS/$name.md" 2> "$RESULTS/$name.log"
    echo "   exit $? after $((SECONDS - start)) s ($RESULTS/$name.md)"
}
