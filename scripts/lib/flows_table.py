#!/usr/bin/env python3
"""Print the flows of a gsocket --stats file (JSON lines) as a table."""
import json
import sys

if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
    print("usage: flows_table.py STATS.jsonl", file=sys.stderr if len(sys.argv) != 2 else sys.stdout)
    sys.exit(0 if len(sys.argv) == 2 else 2)

rows = [("process", "dir", "local", "peer", "rule", "class", "transport", "qos applied", "out", "in")]
for line in open(sys.argv[1]):
    p = json.loads(line)
    for f in p["flows"]:
        qos = ",".join(f"{k}={v}" for k, v in f["qos"].items()) or "-"
        if f["qos_failed"]:
            qos += " refused:" + ",".join(f["qos_failed"])
        transport = f["transport"]
        if f["requested_transport"] != transport:
            transport += f" (asked {f['requested_transport']})"
        rule = f["rule"] + (" DENIED" if f["denied"] else "")
        rows.append((f"{p['process']}[{p['pid']}]", f["direction"], f["local"], f["peer"], rule,
                     f["class"], transport, qos, str(f["bytes_out"]), str(f["bytes_in"])))
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
