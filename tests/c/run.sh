#!/usr/bin/env bash
# Builds libembraft with cargo, then checks the C surface:
#   header    include/embraft.h compiles alone, included twice, as C99 and
#             as C++ with -Wall -Wextra -Werror -pedantic
#   exports   libembraft.so exports only embraft_* symbols (nm -D)
#   link      a C program links and runs against libembraft.so and against
#             libembraft.a, both through the generated embraft.pc
#   example   the minimal host loop and the multi-group host loop in
#             docs/FFI.md compile and run
#   shared    the C API suite against libembraft.so (with the bad-argument
#             cases tests/c/gen_args.py generates from include/embraft.h)
#   sanitize  the suite built with -fsanitize=address,undefined against
#             libembraft.a (leak detection on)
#   valgrind  the suite under valgrind memcheck against libembraft.a: zero
#             errors, zero definite/indirect/possible leaks
# and ends with "N passed, M failed" (suite tests and checks, all modes).
#
# Environment:
#   EMBRAFT_C_MODES   modes to run (default: all of the above)
#   CC, CXX           compilers (default cc, c++)
#   EMBRAFT_TEST_VERBOSE=1   print node log lines
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
modes=${EMBRAFT_C_MODES:-header exports link example shared sanitize valgrind}
cc=${CC:-cc}
cxx=${CXX:-c++}
target_dir=${CARGO_TARGET_DIR:-$root/target}
libdir=$target_dir/release
out=$target_dir/c-tests
mkdir -p "$out/pkgconfig"

# The system libraries the Rust standard library inside libembraft.a needs
# (`rustc --print native-static-libs`); embraft.pc carries the same list.
system_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
warnings="-Wall -Wextra -Werror -pedantic"
cflags="-std=c99 $warnings -g -O1 -pthread -I$root/include"
suite_sources=(tests/c/harness.c tests/c/cluster.c tests/c/test_api.c tests/c/test_args.c
    tests/c/test_cluster.c tests/c/test_membership.c tests/c/test_snapshot.c
    tests/c/test_runtime.c)

echo "building libembraft (release)"
cargo build --release --lib --quiet

# The bad-argument cases of test_args.c, one test per function of the
# header; it includes them from $out.
python3 tests/c/gen_args.py include/embraft.h "$out/args_cases.inc"
cflags="$cflags -I$out"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
sed -e "s|@PREFIX@|$target_dir|" -e "s|@LIBDIR@|$libdir|" \
    -e "s|@INCLUDEDIR@|$root/include|" -e "s|@VERSION@|$version|" \
    include/embraft.pc.in >"$out/pkgconfig/embraft.pc"
export PKG_CONFIG_PATH="$out/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

passed=0
failed=0
failures=()

# check NAME COMMAND...: one pass or fail.
check() {
    local name=$1
    shift
    if "$@" >"$out/$name.log" 2>&1; then
        passed=$((passed + 1))
        echo "ok   check: $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL check: $name (log: $out/$name.log)"
        tail -n 30 "$out/$name.log" | sed 's/^/     /'
    fi
}

# suite NAME COMMAND...: runs the test binary and adds its own counts; a
# crash or a sanitizer/valgrind error (non-zero exit) counts as a failure.
suite() {
    local name=$1
    shift
    echo "--- suite: $name"
    local status=0
    "$@" 2>&1 | tee "$out/$name.log" || status=$?
    local counts
    counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/$name.log" | tail -n 1 || true)
    if [ -n "$counts" ]; then
        passed=$((passed + ${counts%% passed*}))
        local suite_failed=${counts#*, }
        failed=$((failed + ${suite_failed%% failed}))
    fi
    if [ "$status" -ne 0 ] && { [ -z "$counts" ] || [ "${counts#*, }" = "0 failed" ]; }; then
        # The tests passed but the tool failed the run (sanitizer report,
        # valgrind errors or leaks), or the binary crashed.
        failed=$((failed + 1))
        failures+=("$name (exit $status)")
    elif [ "$status" -ne 0 ]; then
        failures+=("$name")
    fi
}

header_compiles() {
    "$cc" -std=c99 $warnings -I"$root/include" -c tests/c/header_check.c -o "$out/header_c.o" &&
        "$cxx" -std=c++11 $warnings -I"$root/include" -x c++ -c tests/c/header_check.c \
            -o "$out/header_cxx.o"
}

only_embraft_exports() {
    local exported others
    exported=$(nm -D --defined-only "$libdir/libembraft.so" | awk '{print $3}')
    others=$(echo "$exported" | grep -v '^embraft_' || true)
    echo "$(echo "$exported" | grep -c '^embraft_') embraft_ symbols exported"
    if [ -n "$others" ]; then
        echo "unexpected exports:"
        echo "$others"
        return 1
    fi
}

links_shared() {
    # shellcheck disable=SC2046
    "$cc" $cflags tests/c/link_check.c -o "$out/link_shared" \
        $(pkg-config --cflags --libs embraft) -Wl,-rpath,"$libdir" &&
        # (grep on a captured string: with pipefail, `ldd | grep -q` fails
        # whenever grep's early exit gives ldd a SIGPIPE.)
        [[ $(ldd "$out/link_shared") == *libembraft.so* ]] &&
        "$out/link_shared"
}

links_static() {
    # shellcheck disable=SC2046
    "$cc" $cflags tests/c/link_check.c -o "$out/link_static" \
        $(pkg-config --cflags embraft) "$(pkg-config --variable=staticlib embraft)" \
        $(pkg-config --variable=system_libs embraft) &&
        [[ $(ldd "$out/link_static") != *libembraft* ]] &&
        "$out/link_static"
}

# doc_example_runs MARKER PATTERN: the C block of docs/FFI.md between the
# MARKER:begin and MARKER:end comments, without its fences, compiles, runs
# on a fresh data directory and prints a line matching PATTERN (a bash
# glob).
doc_example_runs() {
    local marker=$1 pattern=$2
    sed -n "/<!-- $marker:begin -->/,/<!-- $marker:end -->/p" docs/FFI.md |
        grep -v -e '^<!--' -e '^```' >"$out/$marker.c"
    local data_dir
    data_dir=$(mktemp -d)
    "$cc" $cflags "$out/$marker.c" -o "$out/$marker" \
        -L"$libdir" -lembraft -Wl,-rpath,"$libdir" &&
        [[ $(timeout 60 "$out/$marker" "$data_dir/node") == $pattern ]]
    local status=$?
    rm -rf "$data_dir"
    return $status
}

for mode in $modes; do
    case $mode in
    header)
        check "header-c99-and-c++" header_compiles
        ;;
    exports)
        check "exports-only-embraft" only_embraft_exports
        ;;
    link)
        check "link-shared-pkg-config" links_shared
        check "link-static-pkg-config" links_static
        ;;
    example)
        check "docs-host-loop-example" doc_example_runs host-loop '*applied *: hello*'
        check "docs-runtime-loop-example" doc_example_runs runtime-loop \
            '*all 3 groups applied their proposals*'
        ;;
    shared)
        "$cc" $cflags "${suite_sources[@]}" -o "$out/suite_shared" \
            -L"$libdir" -lembraft -Wl,-rpath,"$libdir"
        suite shared "$out/suite_shared"
        ;;
    sanitize)
        "$cc" $cflags -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined "${suite_sources[@]}" -o "$out/suite_sanitize" \
            "$libdir/libembraft.a" $system_libs
        ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:exitcode=86 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            suite sanitize "$out/suite_sanitize"
        ;;
    valgrind)
        if ! command -v valgrind >/dev/null; then
            echo "valgrind is not installed (apt-get install valgrind)"
            failed=$((failed + 1))
            failures+=("valgrind missing")
            continue
        fi
        "$cc" $cflags "${suite_sources[@]}" -o "$out/suite_static" \
            "$libdir/libembraft.a" $system_libs
        # Everything runs ~50 times slower under valgrind: slow the clock so
        # elections and heartbeats keep their proportions.
        EMBRAFT_TEST_TICK_MS=${EMBRAFT_TEST_TICK_MS:-100} \
            suite valgrind valgrind --quiet --error-exitcode=87 --leak-check=full \
            --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible \
            --suppressions=tests/c/valgrind.supp \
            "$out/suite_static"
        ;;
    *)
        echo "unknown mode: $mode"
        exit 2
        ;;
    esac
done

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
