"""Worker program of tests/test_distributed.py (run by `byzsgd launch`).

``python dist_program.py JOB``: trains the run of JOB (a byzsgd.distrun job)
for its rounds; worker 0 saves the final parameters to JOB's weights_out.
With ``"evil": MARKER``, worker 1 first sends the servers a pickle that
would create MARKER if unpickled, and a valid configuration that differs
from the cluster's (both must be refused). With ``"hang_after": k``,
worker 2 stops responding (sleeps) before round k + 1; with
``"impersonate_at": k``, worker 1 pushes on worker 0's key before round k + 1
(tagged with the right round), while worker 0 is 3 s late.
With ``"progress": FILE``, worker 0 writes the number of rounds done there.
"""
import json
import os
import pickle
import sys
import time

import numpy as np

from byzsgd import distrun, psconfig


class Evil:
    """Unpickling this runs a shell command (what stock MXNet servers would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def main(path):
    job = json.loads(open(path, encoding="utf-8").read())
    cfg = job["cfg"]
    run = distrun._training(cfg, job["data_dir"], job.get("options") or {})
    trainer = run.trainer
    if job.get("evil") and trainer.rank == 1:
        kv = trainer.client.kv
        kv._send_command_to_servers(0, pickle.dumps(Evil(job["evil"]), 0).decode("latin-1"))
        other = psconfig.make("mean", {}, "sgd", {"learning_rate": 0.1}, trainer.num_workers,
                              trainer.client.num_servers, 118282)
        kv._send_command_to_servers(0, other)
    run.reseed(0)
    for round_ in range(cfg["rounds"]):
        if job.get("impersonate_at") == round_ and trainer.rank == 0:
            time.sleep(3)   # the impostor and workers 1-3 complete the round first
        if job.get("impersonate_at") == round_ and trainer.rank == 1:
            client = trainer.client          # push on worker 0's key of block 0
            a, b, _ = client.spans[0]
            client.kv.push(client.table[0][0], client._tagged(np.zeros(b - a), round_ + 1))
            client.mx.nd.waitall()
        if job.get("hang_after") == round_ and trainer.rank == 2:
            print("worker 2: hanging on purpose", file=sys.stderr, flush=True)
            time.sleep(3600)
        run.round()
        if job.get("progress") and trainer.rank == 0:
            with open(job["progress"], "w") as f:
                f.write(str(round_ + 1))
    if trainer.rank == 0:
        params = run.net.collect_params()
        np.savez(job["weights_out"], **{k: params[k].data().asnumpy()
                                        for k in sorted(params.keys())})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
