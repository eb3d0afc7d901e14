#!/usr/bin/env bash
# Bounded fuzzing of what a publisher or a viewer can send (cargo-fuzz, libFuzzer with
# AddressSanitizer): FLV/Enhanced RTMP tags, MPEG-TS, parameter sets, HLS requests, the
# RTMP ingest and SRT datagrams through the SRT front's check into the SRT library; and
# cluster RPC bodies, parsed as the Raft routes do, their commands applied; viewer
# request targets through the node's real canonical path, gate and router; and any
# bytes an upstream sends, on a real socket, into the edge. Each
# target runs FUZZ_SECONDS (default 20) from a fresh corpus seeded with the heads of the
# media test fixtures, a few hand-made inputs and any checked-in crash inputs
# (fuzz/regressions/<target>/). A crash, a timeout or an out-of-memory fails the script,
# naming the target; the input is left in fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=300 scripts/fuzz.sh              # all targets, longer
#   FUZZ_SECONDS=60 scripts/fuzz.sh rtmp_ingest   # one target
#   scripts/fuzz.sh --long [targets]              # an hour per target
set -euo pipefail
cd "$(dirname "$0")/.."

# The bounded slice (the test command's) is a smoke test: it builds without
# optimization (`--dev`: ~6 minutes cold on 2 cores instead of ~14, for a few times
# fewer runs per second). Long runs, where fuzzing finds things, build optimized.
FUZZ_BUILD=(--dev)
if [ "${1:-}" = "--long" ]; then
    # Hours: one hour per target unless FUZZ_SECONDS says otherwise.
    shift
    FUZZ_SECONDS="${FUZZ_SECONDS:-3600}"
    # Release with debug assertions (overflow checks): 16 codegen units instead of
    # cargo-fuzz's 1, since the targets that link the node's own crate (axum,
    # openraft) take many minutes to build as one unit, for little speed.
    FUZZ_BUILD=(--codegen-units 16)
fi
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
ALL_TARGETS=(flv_tags ts_demux parameter_sets hls_query rtmp_ingest srt_datagram cluster_rpc
    viewer_request edge_upstream)
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

FIXTURES="$PWD/media/tests/fixtures"
cd fuzz
# AddressSanitizer (cargo-fuzz's default) in both builds.
cargo +nightly fuzz build "${FUZZ_BUILD[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Seeds: well-formed starts the fuzzer mutates from (the heads of the fixture files
# keep each run fast). The first byte of a ts_demux input picks the chunking, the first
# two of an rtmp_ingest input its flags (7: handshake, publish, FLV tags) and chunking,
# the first two of an hls_query input the playlist's shape.
seed() {
    local target="$1"
    local dir="$work/seeds/$target"
    mkdir -p "$dir"
    case "$target" in
        flv_tags)
            for f in "$FIXTURES"/*.flv; do
                head -c 8192 "$f" >"$dir/$(basename "$f")"
            done
            ;;
        ts_demux)
            for f in "$FIXTURES"/*.ts; do
                { printf '\x00'; head -c $((188 * 43)) "$f"; } >"$dir/$(basename "$f")"
            done
            ;;
        rtmp_ingest)
            for f in "$FIXTURES"/*.flv; do
                { printf '\x07\x00'; head -c 8192 "$f"; } >"$dir/$(basename "$f")"
            done
            printf '\x03\x00' >"$dir/publish"
            ;;
        hls_query)
            printf '\x13\x00_HLS_msn=2&_HLS_part=1&_HLS_skip=YES' >"$dir/blocking"
            printf '\x13\x00live/3.1.m4s?token=x' >"$dir/part"
            printf '\xdb\x00init-2.mp4' >"$dir/init"
            ;;
        srt_datagram)
            # An HSv5 conclusion with a handshake request and a stream id, the
            # reviewed 72-byte conclusion (congestion extension), a data packet.
            local hs='\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00'
            hs+='\x00\x00\x00\x05\x00\x00\x00\x07\x00\x00\x04\xd2\x00\x00\x05\xdc'
            hs+='\x00\x00\x20\x00\xff\xff\xff\xff\x11\x22\x33\x44\x00\x00\x00\x55'
            hs+='\x7f\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
            printf "$hs"'\x00\x01\x00\x03\x00\x01\x05\x00\x00\x00\x00\x3f\x00\x78\x00\x00\x00\x05\x00\x01yek#' >"$dir/conclusion"
            printf "$hs"'\x00\x06\x00\x01evil' >"$dir/congestion"
            printf '\x00\x00\x00\x07\xc0\x00\x00\x01\x00\x00\x10\x00\x00\x00\x00\x09\x47\x40\x00\x10' >"$dir/data"
            ;;
        cluster_rpc)
            # Each command of the seeded state, and an append carrying two of them.
            local i=0
            while IFS= read -r line; do
                printf '%s' "$line" >"$dir/command-$i"
                i=$((i + 1))
            done <seeds/cluster_rpc/state.jsonl
            printf '%s' '{"vote":{"leader_id":{"term":1,"node_id":1},"committed":true},"prev_log_id":null,"leader_commit":null,"entries":[{"log_id":{"leader_id":{"term":1,"node_id":1},"index":1},"payload":{"Normal":{"at_ms":5,"op":{"op":"claim_channel","channel":"news","node":2}}}},{"log_id":{"leader_id":{"term":1,"node_id":1},"index":2},"payload":{"Normal":{"at_ms":6,"op":{"op":"forget_generation","channel":2,"generation":1}}}}]}' >"$dir/append"
            ;;
        viewer_request)
            # The first byte: 1 puts a valid token route before the rest.
            printf '\x00/hls/n%%65ws/source/index.m3u8?_HLS_msn=1' >"$dir/encoded"
            printf '\x00/vod/%%6Eews/1/index.m3u8' >"$dir/vod"
            printf '\x01/hls/%%6Eews/source/3/0.m4s' >"$dir/token"
            printf '\x00//hls/./other/../news/index.m3u8' >"$dir/dots"
            printf '\x00/watch/news' >"$dir/watch"
            ;;
        edge_upstream)
            # The first byte picks the object (0 playlist, 1 part, 2 recording), the
            # cache size (4) and an origin upstream (8); then the upstream's bytes.
            printf '\x00HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nCache-Control: public, max-age=1\r\nContent-Length: 7\r\n\r\n#EXTM3U' >"$dir/playlist"
            printf '\x01HTTP/1.1 200 OK\r\nCache-Control: public, max-age=18446744073709551615, immutable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmoof\r\n0\r\n\r\n' >"$dir/chunked"
            printf '\x02HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nftyp' >"$dir/short"
            printf '\x0dHTTP/1.1 503 Service Unavailable\r\nCache-Control: no-cache\r\n\r\n' >"$dir/unavailable"
            printf '\x01HTTP/1.1 500 x\r\nContent-Length: 3\r\n\r\nbad' >"$dir/error"
            ;;
        parameter_sets) ;;
    esac
    if [ -d "regressions/$target" ]; then
        cp "regressions/$target"/* "$dir"/ 2>/dev/null || true
    fi
    echo "$dir"
}

for target in "${TARGETS[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    seeds="$(seed "$target")"
    log="$work/$target.log"
    echo "fuzz: $target for ${FUZZ_SECONDS}s"
    if ! cargo +nightly fuzz run "${FUZZ_BUILD[@]}" "$target" "$corpus" "$seeds" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: FAILED: target $target crashed (input in fuzz/artifacts/$target/;" \
            "reproduce: cd fuzz && cargo +nightly fuzz run $target <input>)" >&2
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)"
    echo "fuzz: $target ok: ${runs:-?} runs, ${cov:-cov: ?}"
done
