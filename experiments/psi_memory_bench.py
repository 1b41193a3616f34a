"""Issue 36, item 2: the PSI's memory per step, one call against slices (``psi_memory``).

``python experiments/bench.py psi_memory`` runs each side of the alignment on ``n`` IDs in a
fresh interpreter, once with ``openmined.psi``'s one call on the whole set (how the nodes
called it before) and once a slice at a time (:mod:`federation.psi_slices`, how they call it
now): the lender's request, the party's answer, the lender's lookup in the party's set, and the
party's positions of the intersection. Each step's peak resident memory over what was resident
before it (``VmHWM`` reset through ``/proc/self/clear_refs``; Linux), in bytes per ID, and its
CPU time; the messages of both ways are compared byte for byte. The party's setup (its whole
set blinded into one compressed set) is one call both ways: it is measured, not sliced.
"""

from __future__ import annotations

import json
import subprocess
import sys

_STEPS = """
import hashlib, json, sys, time
import numpy as np
import pandas as pd
import private_set_intersection.python as psi
from federation.psi_slices import answered_request, blinded_request, found_rows
n, sliced = int(sys.argv[1]), sys.argv[2] == "slices"
lender_key, party_key = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])

def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024

cpu = {}

def measure(step, name):
    before, start = status("VmRSS"), time.process_time()
    open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
    out = step()
    cpu[name] = time.process_time() - start
    return out, status("VmHWM") - before

ids = [f"C{i:010d}" for i in range(n)]
party = ids[::2] + [f"P{i:010d}" for i in range(n // 2)]
client = psi.client.CreateFromKey(lender_key, True)
server = psi.server.CreateFromKey(party_key, True)
peaks, digest = {}, hashlib.sha256()
built, peaks["setup"] = measure(lambda: server.CreateSetupMessage(  # the same both ways
    1e-12, n, party).SerializeToString(), "setup")
setup = psi.ServerSetup()
setup.ParseFromString(built)
request, peaks["request"] = measure(lambda: blinded_request(client, ids) if sliced
                                    else client.CreateRequest(ids).SerializeToString(), "request")
parsed = psi.Request()
parsed.ParseFromString(request)
response, peaks["answer"] = measure(
    lambda: answered_request(server, parsed) if sliced
    else server.ProcessRequest(parsed).SerializeToString(), "answer")
del parsed
answer = psi.Response()
answer.ParseFromString(response)
rows, peaks["lookup"] = measure(lambda: found_rows(client, setup, answer) if sliced
                                else np.asarray(client.GetIntersection(setup, answer)), "lookup")
rows = np.sort(rows)  # openmined.psi's own order is not the applicants'
shared = [ids[i] for i in rows]
def positions():
    if sliced:
        return pd.Index(party, dtype=object).get_indexer(pd.Index(shared, dtype=object))
    index = {c: i for i, c in enumerate(party)}
    return np.asarray([index[c] for c in shared])
where, peaks["positions"] = measure(positions, "positions")
for blob in (request, response, rows.tobytes(), np.asarray(where).tobytes()):
    digest.update(blob)
print(json.dumps({"peaks": peaks, "cpu": cpu, "digest": digest.hexdigest(),
                  "shared": len(shared)}))
"""


def bench_psi_memory(n: int = 196_608) -> None:
    """Print each PSI step's peak memory per ID, one call and slices, and their ratio."""
    import private_set_intersection.python as psi

    keys = [bytes(side.CreateWithNewKey(True).GetPrivateKeyBytes()).hex()
            for side in (psi.client, psi.server)]  # both ways under the same keys
    ways = {how: subprocess.Popen([sys.executable, "-c", _STEPS, str(n), how, *keys],
                                  stdout=subprocess.PIPE, text=True)  # side by side
            for how in ("call", "slices")}
    found = {}
    for how, process in ways.items():
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"psi_memory: the {how} way failed ({process.returncode})")
        found[how] = json.loads(out.strip().splitlines()[-1])
    same = found["call"]["digest"] == found["slices"]["digest"]
    print(f"psi_memory: {n:,} applicants, a party of {n:,} IDs ({found['call']['shared']:,} "
          f"shared); the same messages and positions both ways: {same}")
    print("psi_memory: | step | one call, bytes per ID | slices, bytes per ID | slices / call "
          "| CPU ms per 1,000 IDs, call / slices |")
    for step, call in found["call"]["peaks"].items():
        sliced = found["slices"]["peaks"][step]
        print(f"psi_memory: | {step} | {call / n:.0f} | {sliced / n:.0f} | "
              f"{sliced / max(call, 1):.2f} | {found['call']['cpu'][step] * 1e6 / n:.0f} / "
              f"{found['slices']['cpu'][step] * 1e6 / n:.0f} |", flush=True)
