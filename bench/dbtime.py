#!/usr/bin/env python3
"""bench/dbtime.py LOG FIRST_ID: the module's own lookup times.

LOG holds "$uri $replay_db_time $request_time" lines (bench/run's access
log of the nginx under test).  Prints, as JSON, the count, median and mean
in ms of $replay_db_time over the /game/ID/replay and /link/ID/replay
requests with ID >= FIRST_ID (the measured ones, not the warm-up), or
null when there are none.  $replay_db_time has microsecond resolution.
"""

import json
import re
import statistics
import sys

path, first = sys.argv[1], int(sys.argv[2])
times = []
try:
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) != 3 or fields[1] == "-":
                continue
            m = re.match(r"/(game|link)/(\d+)/replay$", fields[0])
            if m and int(m.group(2)) >= first:
                times.append(float(fields[1]) * 1e3)
except FileNotFoundError:
    pass

if times:
    print(json.dumps({"n": len(times), "p50_ms": statistics.median(times),
                      "mean_ms": statistics.mean(times)}))
else:
    print("null")
