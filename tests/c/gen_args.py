#!/usr/bin/env python3
"""Generates the bad-argument cases of tests/c/test_args.c from the header.

Usage: gen_args.py include/embraft.h OUT.inc

Every prototype in the header gets a test that calls it with NULL for each
pointer argument in turn (the other arguments valid), and with the
out-of-range values listed in VALUE_CASES for its ids, indexes and
enumerations. A function the generator cannot cover (an argument type it
has no valid value for, or an id, index or enumeration argument without
value cases) becomes a failing test naming what is missing, so a new
function in the header fails the suite until it is covered here.
"""

import re
import sys

# A valid value for each argument type, by (name, type) first, then type.
BY_NAME = {
    "buf_len": "sizeof o.buf",
    "len": "1",
    "count": "1",
    "voter_count": "1",
    "learner_count": "1",
    "inputs": "64",
    "messages": "8",
    "ticks": "10",
    "timeout_ms": "0",
    "change": "EMBRAFT_CONF_REMOVE_NODE",
    "mode": "0",
    "method": "0",
    "level": "EMBRAFT_LOG_OFF",
    "field": "0",
    "list": "EMBRAFT_MEMBERS_VOTERS",
    "index": "0",
    "path": '"/tmp/embraft-args-unused"',
    "group": "ARGS_GROUP",
    "peer_count": "1",
    "capacity": "1",
    "groups_out": "o.ids",
}
BY_TYPE = {
    "embraft_config *": "fx.config",
    "const embraft_config *": "fx.config",
    "embraft_node *": "fx.node",
    "const embraft_node *": "fx.node",
    "embraft_ready *": "fx.ready",
    "const embraft_ready *": "fx.ready",
    "embraft_status_report *": "fx.report",
    "const embraft_status_report *": "fx.report",
    "embraft_snapshot_writer *": "fx.writer",
    "const embraft_snapshot_writer *": "fx.writer",
    "embraft_config **": "&o.config",
    "embraft_node **": "&o.node",
    "embraft_ready **": "&o.ready",
    "embraft_status_report **": "&o.report",
    "embraft_snapshot_writer **": "&o.writer",
    "embraft_runtime *": "fx.runtime",
    "const embraft_runtime *": "fx.runtime",
    "embraft_runtime **": "&o.runtime",
    "embraft_runtime_ready *": "fx.rt_ready",
    "const embraft_runtime_ready *": "fx.rt_ready",
    "embraft_runtime_ready **": "&o.rt_ready",
    "const embraft_rt_message **": "&o.rt_message",
    "const embraft_rt_entry **": "&o.rt_entry",
    "const embraft_rt_outcome **": "&o.rt_outcome",
    "const embraft_rt_read **": "&o.rt_read",
    "const embraft_rt_state **": "&o.rt_state",
    "const embraft_rt_restore **": "&o.rt_restore",
    "const embraft_rt_snapshot_wanted **": "&o.rt_snapshot_wanted",
    "const embraft_rt_log **": "&o.rt_log",
    "embraft_rt_frame_report *": "&o.rt_frame_report",
    "embraft_metrics *": "&o.metrics",
    "const uint64_t **": "&o.id_view",
    "char *": "o.buf",
    "const char **": "&o.text",
    "const uint8_t *": "args_payload",
    "const uint8_t **": "&o.bytes",
    "const uint64_t *": "args_ids",
    "uint64_t *": "&o.u64",
    "uint32_t *": "&o.u32",
    "size_t *": "&o.size",
    "bool *": "&o.flag",
    "int *": "&o.fd",
    "bool": "true",
    "uint32_t": "1",
    "uint64_t": "1",
    "size_t": "1",
    "embraft_status": "EMBRAFT_OK",
}

# Pointer arguments that may be NULL: the call then succeeds.
NULLABLE = {
    ("embraft_config_last_error", "message_len"),
    ("embraft_node_last_error", "message_len"),
    ("embraft_runtime_last_error", "message_len"),
}

# Arguments that must have value cases: ids, indexes, enumerations and id
# arrays, whatever function they belong to.
NEEDS_VALUES = {"id", "node_id", "to", "peer", "index", "mode", "method", "level",
                "change", "field", "list", "ids", "voters", "learners", "status", "group",
                "peers"}

INVALID = "EMBRAFT_ERR_INVALID_ARGUMENT"
OUT_OF_RANGE = "EMBRAFT_ERR_OUT_OF_RANGE"
OK = "EMBRAFT_OK"
ID_CASES = [("0", INVALID, None, "node id 0"), ("UINT64_MAX", OK, None, None)]
ENUM_CASES = [("UINT32_MAX", INVALID, None, "unknown")]
# An accessor index 0 may or may not be in range in the fixture's batch.
ACCESSOR_INDEX = [("0", OK, OUT_OF_RANGE, None), ("SIZE_MAX", OUT_OF_RANGE, None, None)]

# A group the fixture's runtime does not run.
UNKNOWN_GROUP = [("UINT64_MAX", "EMBRAFT_ERR_UNKNOWN_GROUP", None, "no group")]
ZERO_IDS = [("args_ids_with_zero", INVALID, None, "node id 0")]

# (function, argument) -> [(value, status, other accepted status, text the
# message must hold)]
VALUE_CASES = {
    ("embraft_config_set_id", "id"): ID_CASES,
    ("embraft_config_set_peers", "ids"): [("args_ids_with_zero", INVALID, None, "node id 0")],
    ("embraft_config_set_applied_index", "index"): [("0", OK, None, None),
                                                    ("UINT64_MAX", OK, None, None)],
    ("embraft_config_set_sync_mode", "mode"): ENUM_CASES,
    ("embraft_config_set_wal_write_method", "method"): ENUM_CASES,
    ("embraft_config_set_threading", "mode"): ENUM_CASES,
    ("embraft_config_set_log_level", "level"): ENUM_CASES,
    ("embraft_node_propose_conf_change", "change"): [("0", INVALID, None, "unknown"),
                                                     ("UINT32_MAX", INVALID, None, "unknown")],
    ("embraft_node_propose_conf_change", "node_id"): ID_CASES,
    ("embraft_node_propose_membership", "voters"): [("args_ids_with_zero", INVALID, None,
                                                     "node id 0")],
    ("embraft_node_propose_membership", "learners"): [("args_ids_with_zero", INVALID, None,
                                                       "node id 0")],
    ("embraft_node_transfer_leader", "to"): ID_CASES,
    ("embraft_node_report_unreachable", "peer"): ID_CASES,
    ("embraft_node_snapshot_begin", "index"): [
        ("0", "EMBRAFT_ERR_STALE_SNAPSHOT", None, "snapshot"),
        ("UINT64_MAX", "EMBRAFT_ERR_NOT_APPLIED", None, "acknowledged")],
    ("embraft_node_ack_applied", "index"): [("0", OK, None, None),
                                            ("UINT64_MAX", "EMBRAFT_ERR_NOT_DELIVERED", None,
                                             "delivered")],
    ("embraft_node_set_log_level", "level"): ENUM_CASES,
    ("embraft_ready_message", "index"): ACCESSOR_INDEX,
    ("embraft_ready_entry", "index"): ACCESSOR_INDEX,
    ("embraft_ready_outcome", "index"): ACCESSOR_INDEX,
    ("embraft_ready_read", "index"): ACCESSOR_INDEX,
    ("embraft_ready_log", "index"): ACCESSOR_INDEX,
    ("embraft_status_report_get", "field"): [("UINT32_MAX", INVALID, None, None)],
    ("embraft_status_report_peer_get", "index"): ACCESSOR_INDEX,
    ("embraft_status_report_peer_get", "field"): [("UINT32_MAX", INVALID, OUT_OF_RANGE, None)],
    ("embraft_status_report_member_count", "list"): [("UINT32_MAX", INVALID, None, None)],
    ("embraft_status_report_member", "list"): [("UINT32_MAX", INVALID, None, None)],
    ("embraft_status_report_member", "index"): ACCESSOR_INDEX,
    ("embraft_runtime_start_group", "group"): [("ARGS_GROUP", "EMBRAFT_ERR_GROUP_EXISTS", None,
                                                 "already running")],
    ("embraft_runtime_start_group", "peers"): ZERO_IDS,
    ("embraft_runtime_stop_group", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_remove_group", "group"): UNKNOWN_GROUP,
    # The bytes are checked before the group: args_payload is no message.
    ("embraft_runtime_step", "group"): [("UINT64_MAX", "EMBRAFT_ERR_MALFORMED_MESSAGE", None,
                                         None)],
    # args_payload (with len 1) is no frame: refused whole.
    ("embraft_runtime_step_frame", "len"): [("1", "EMBRAFT_ERR_MALFORMED_MESSAGE", None,
                                             None)],
    # Any runtime, 0 included, has a frame: empty when nothing goes there.
    ("embraft_runtime_ready_frame", "peer"): [("0", OK, None, None),
                                              ("UINT64_MAX", OK, None, None)],
    ("embraft_runtime_propose", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_propose_conf_change", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_propose_conf_change", "change"): [("0", INVALID, None, "unknown"),
                                                        ("UINT32_MAX", INVALID, None, "unknown")],
    ("embraft_runtime_propose_conf_change", "node_id"): ID_CASES,
    ("embraft_runtime_propose_membership", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_propose_membership", "voters"): ZERO_IDS,
    ("embraft_runtime_propose_membership", "learners"): ZERO_IDS,
    ("embraft_runtime_read_index", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_transfer_leader", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_transfer_leader", "to"): ID_CASES,
    ("embraft_runtime_report_unreachable", "peer"): ID_CASES,
    ("embraft_runtime_ack_applied", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_ack_applied", "index"): [("0", OK, None, None),
                                               ("UINT64_MAX", "EMBRAFT_ERR_NOT_DELIVERED", None,
                                                "delivered")],
    ("embraft_runtime_snapshot_begin", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_snapshot_begin", "index"): [
        ("0", "EMBRAFT_ERR_STALE_SNAPSHOT", None, "snapshot"),
        ("UINT64_MAX", "EMBRAFT_ERR_NOT_APPLIED", None, "acknowledged")],
    ("embraft_runtime_status", "group"): UNKNOWN_GROUP,
    ("embraft_runtime_metrics", "group"): UNKNOWN_GROUP,
    # Any code, known or not, has a description: checked by a special case.
    ("embraft_status_str", "status"): [],
}


def prototypes(header):
    found = re.findall(r"^([A-Za-z_][\w \*]*?)\s*\b(embraft_\w+)\(([^;{]*?)\);", header,
                       re.M | re.S)
    result = []
    for ret, name, params in found:
        args = []
        for param in params.split(","):
            param = " ".join(param.split())
            if param in ("", "void"):
                continue
            match = re.match(r"(.*?)(\w+)$", param)
            args.append((match.group(1).strip(), match.group(2)))
        result.append((" ".join(ret.split()), name, args))
    return result


def message_kind(args):
    """Where a call's failure message goes (its first argument's handle)."""
    if not args:
        return "ARGS_NO_MESSAGE"
    first = args[0][0].replace("const ", "")
    if first == "embraft_config *":
        return "ARGS_CONFIG"
    if first in ("embraft_node *", "embraft_snapshot_writer *"):
        return "ARGS_NODE"
    if first == "embraft_runtime *":
        return "ARGS_RUNTIME"
    return "ARGS_NO_MESSAGE"


def default(name, ctype):
    return BY_NAME.get(name, BY_TYPE.get(ctype))


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Functions naming the positions of a table: a name for index 0, NULL
# past the end.
NAME_TABLES = {"embraft_metrics_message_kind", "embraft_metrics_drop_reason"}


def cases_for(ret, name, args):
    """The C statements of one function's test, or the reason it has none."""
    if name in NAME_TABLES:
        return [f"    CHECK({name}(0) != NULL);", f"    CHECK({name}(SIZE_MAX) == NULL);"], None
    missing = []
    values = []
    for ctype, arg in args:
        value = default(arg, ctype)
        if value is None:
            missing.append(f"no valid value for argument {arg} of type {ctype}")
        values.append(value)
        if arg in NEEDS_VALUES and (name, arg) not in VALUE_CASES:
            missing.append(f"no value cases for argument {arg}")
    if missing:
        return None, "; ".join(missing)

    lines = []
    kind = message_kind(args)
    if ret != "embraft_status":
        if name == "embraft_status_str":
            for code in ("-1", "EMBRAFT_OK", "INT32_MAX", "INT32_MIN"):
                lines.append(f"    CHECK(embraft_status_str({code}) != NULL);")
        elif ret == "void":
            for i, (ctype, arg) in enumerate(args):
                if ctype.endswith("*"):
                    call = values[:i] + ["NULL"] + values[i + 1:]
                    lines.append(f"    ARGS_VOID_CASE({name}({', '.join(call)}));")
        elif not args:
            lines.append(f"    CHECK({name}() == {name}());")
        else:
            return None, f"returns {ret}: no rule for it"
        return lines, None

    for i, (ctype, arg) in enumerate(args):
        if not ctype.endswith("*"):
            continue
        call = values[:i] + ["NULL"] + values[i + 1:]
        if (name, arg) in NULLABLE:
            want, needle, case_kind = OK, None, kind
        elif i == 0:
            # No handle: nowhere to put a message.
            want, needle, case_kind = "EMBRAFT_ERR_NULL_ARGUMENT", None, "ARGS_NO_MESSAGE"
        else:
            want, needle = "EMBRAFT_ERR_NULL_ARGUMENT", c_string(arg)
            case_kind = kind
            if arg == "path":
                needle = c_string("path")
        lines.append(f"    ARGS_CASE({case_kind}, {name}({', '.join(call)}), {want}, -1, "
                     f"{needle if needle else 'NULL'});")
    for i, (ctype, arg) in enumerate(args):
        for value, want, also, needle in VALUE_CASES.get((name, arg), []):
            call = values[:i] + [value] + values[i + 1:]
            needle = c_string(needle) if needle else "NULL"
            lines.append(f"    ARGS_CASE({kind}, {name}({', '.join(call)}), {want}, "
                         f"{also if also else -1}, {needle});")
    return lines, None


def main():
    header_path, out_path = sys.argv[1], sys.argv[2]
    with open(header_path) as f:
        protos = prototypes(f.read())
    if len(protos) < 10:
        sys.exit(f"{header_path}: only {len(protos)} prototypes found")
    out = ["/* Generated by tests/c/gen_args.py from include/embraft.h; do not edit. */", ""]
    tests = []
    for ret, name, args in protos:
        lines, missing = cases_for(ret, name, args)
        out.append(f"static void args_{name}(void) {{")
        if missing is not None:
            out.append(f'    fprintf(stderr, "  {name}: not covered by tests/c/gen_args.py: %s\\n",')
            out.append(f"            {c_string(missing)});")
            out.append("    harness_test_failed = 1;")
        else:
            out.append("    CHECK(args_fixture());")
            out.extend(lines)
        out.append("}")
        out.append("")
        tests.append(name)
    out.append("const struct test_case args_tests[] = {")
    for name in tests:
        out.append(f'    {{"args: {name} refuses bad arguments with its own message", '
                   f"args_{name}}},")
    out.append('    {"args: the fixture is freed", args_teardown},')
    out.append("    {NULL, NULL},")
    out.append("};")
    with open(out_path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"{len(tests)} functions from {header_path}")


if __name__ == "__main__":
    main()
