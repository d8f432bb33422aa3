"""``byzsgd launch -n WORKERS -s SERVERS [--hosts FILE] -- COMMAND...``: a
real MXNet ps-lite cluster (one scheduler, S servers, n workers).

Every server and the scheduler run byzsgd's own entry point
(``python -m byzsgd.psserver``, which never unpickles what workers send);
each worker runs COMMAND with the ps-lite environment (DMLC_ROLE=worker,
DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER, DMLC_NUM_WORKER,
DMLC_NODE_HOST) plus MXNET_KVSTORE_BIGARRAY_BOUND (raised so that no key is
sliced across servers) and BYZSGD_TIMEOUT (the round timeout workers and
servers use).

Locally (the default) every process binds to 127.0.0.1 on a free port. With
``--hosts FILE`` (one ``host`` or ``host:sshport`` a line, ``#`` comments)
the scheduler runs here and servers and workers go round-robin over the
hosts through ``ssh -tt`` (so that killing the ssh client hangs up the
remote command), in the current directory, with the same Python path, in
the manner of MXNet's tools/launch.py. Multi-host is written and its
command lines are tested, but it has not been run across machines.

Fail fast: each process gets its own process group; a watchdog polls them.
A worker that exits non-zero or is killed, a server or the scheduler that
exits non-zero, servers gone while workers still run past ``--grace``
seconds, or the whole cluster past ``--timeout``: every process group is
terminated (SIGTERM, then SIGKILL), all are reaped, and the launcher exits
non-zero with one line naming the role that failed. Children also get
PR_SET_PDEATHSIG, so a killed launcher leaves no local orphans.
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from . import psconfig
from .checks import is_real

__all__ = ["main", "launch", "Cluster", "ClusterError", "cluster_env", "ssh_command", "read_hosts",
           "plan", "free_port"]

DEFAULT_TIMEOUT = 60.0   # seconds a round may wait (workers and servers)
POLL = 0.05


class ClusterError(RuntimeError):
    """A cluster that failed (a process died or stalled); the message says which."""


def free_port(host="127.0.0.1"):
    """A TCP port free on ``host`` right now (the scheduler binds it next)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cluster_env(role, num_workers, num_servers, root_uri, port, node_host,
                round_timeout=DEFAULT_TIMEOUT):
    """The environment variables of one ps-lite process."""
    return {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers),
            "DMLC_NODE_HOST": node_host,
            "MXNET_KVSTORE_BIGARRAY_BOUND": str(psconfig.BIGARRAY_BOUND),
            "BYZSGD_TIMEOUT": f"{float(round_timeout):g}"}


def read_hosts(path):
    """Hosts of a hosts file: [(host, ssh_port or None)]."""
    hosts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            host, _, port = line.partition(":")
            if port and not port.isdigit():
                raise ValueError(f"{path}: bad ssh port in {line!r}")
            hosts.append((host, int(port) if port else None))
    if not hosts:
        raise ValueError(f"{path} names no host")
    return hosts


def ssh_command(host, env, argv, cwd, ssh_port=None):
    """The local argv running ``argv`` on ``host`` with ``env`` in ``cwd``."""
    remote = " ".join(["cd", shlex.quote(cwd), "&&", "exec", "env"]
                      + [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
                      + [shlex.quote(a) for a in argv])
    port = ["-p", str(ssh_port)] if ssh_port else []
    return ["ssh", "-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            *port, host, remote]


def plan(command, num_workers, num_servers, hosts=None, port=None, root_uri=None,
         python=None, cwd=None, round_timeout=DEFAULT_TIMEOUT, server_config=None):
    """[(label, argv, extra env)] of the cluster's processes, scheduler first.

    Local (hosts None): extra env holds the ps-lite variables. Remote: the
    scheduler is local and the others are ssh commands carrying their env.
    """
    for what, value in (("workers", num_workers), ("servers", num_servers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"number of {what} must be an integer >= 1, got {value!r}")
    if not command:
        raise ValueError("no worker COMMAND given (byzsgd launch -n N -s S -- COMMAND...)")
    python = python or sys.executable
    cwd = cwd or os.getcwd()
    local = hosts is None
    root_uri = root_uri or ("127.0.0.1" if local else socket.gethostbyname(socket.gethostname()))
    port = port or free_port("127.0.0.1" if local else "")
    server_argv = [python, "-m", "byzsgd.psserver"]
    sealed = {"BYZSGD_SERVER_CONFIG": server_config} if server_config else {}

    def env(role, host):
        return cluster_env(role, num_workers, num_servers, root_uri, port, host,
                           round_timeout)

    out = [("scheduler", server_argv, env("scheduler", root_uri))]
    roles = [(f"server #{k}", "server", server_argv, k) for k in range(num_servers)] \
        + [(f"worker #{i}", "worker", list(command), i) for i in range(num_workers)]
    for label, role, argv, k in roles:
        extra = dict(sealed) if role == "server" else {}
        if local:
            out.append((label, argv, {**env(role, "127.0.0.1"), **extra}))
        else:
            host, ssh_port = hosts[k % len(hosts)]
            out.append((f"{label} on {host}",
                        ssh_command(host, {**env(role, host), **extra}, argv, cwd, ssh_port),
                        {}))
    return out


def _child_setup():
    os.setsid()                                      # its own process group
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG: die with us
    except (OSError, AttributeError):
        pass


def _describe(code):
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Cluster:
    """The running processes of :func:`plan`, watched until they finish.

    Parameters
    ----------
    processes : list
        :func:`plan`'s output.
    timeout : float or None
        Seconds the whole cluster may run.
    grace : float
        Seconds workers may still run once a server or the scheduler is gone,
        and servers may take to stop once every worker finished.
    """

    def __init__(self, processes, timeout=None, grace=10.0, stdout=None, stderr=None):
        self.specs, self.timeout, self.grace = processes, timeout, grace
        self.procs = []
        self.message = None
        try:
            for label, argv, extra in processes:
                env = {**os.environ, **extra}
                env.setdefault("OMP_NUM_THREADS", "1")
                self.procs.append((label, subprocess.Popen(
                    argv, env=env, preexec_fn=_child_setup, stdout=stdout, stderr=stderr)))
        except BaseException:
            self.stop(wait=1.0)   # the ones started: a caller that lives on would keep them
            raise

    def workers(self):
        return [(lab, p) for lab, p in self.procs if lab.startswith("worker")]

    def others(self):
        return [(lab, p) for lab, p in self.procs if not lab.startswith("worker")]

    def wait(self):
        """Watch until done; return the exit status (0: every worker succeeded)."""
        start = time.monotonic()
        servers_gone = workers_done = None
        while True:
            now = time.monotonic()
            # one poll per process and pass: a process exiting between two
            # polls must not be seen as gone by one test and fine by another
            codes = {lab: p.poll() for lab, p in self.procs}
            for lab, p in self.procs:
                code = codes[lab]
                if code is None or code == 0:
                    continue
                # "#k" counts processes in launch order; ps-lite ranks them in
                # the order they register, so the process's own message
                # (above, "byzsgd server R: ...") names its rank
                return self.fail(f"{lab} (pid {p.pid}, launch order) {_describe(code)}",
                                 code if code > 0 else 128 - code)
            if all(codes[lab] == 0 for lab, _ in self.workers()):
                workers_done = workers_done or now
                if all(codes[lab] is not None for lab, _ in self.others()):
                    return 0
                if now - workers_done > self.grace:
                    self.stop()      # servers that outlive their workers: not a failure
                    return 0
            gone = [lab for lab, _ in self.others() if codes[lab] is not None]
            if gone and workers_done is None:
                servers_gone = servers_gone or now
                if now - servers_gone > self.grace:
                    return self.fail(f"{gone[0]} exited while workers were still running "
                                     f"({self.grace:g} s ago)", 1)
            if self.timeout is not None and now - start > self.timeout:
                return self.fail(f"the cluster ran longer than its timeout "
                                 f"({self.timeout:g} s)", 124)
            time.sleep(POLL)

    def fail(self, message, code):
        self.message = message
        print(f"byzsgd launch: {message}; stopping the cluster", file=sys.stderr, flush=True)
        self.stop()
        return code

    def stop(self, wait=3.0):
        """Terminate every process group, then kill what is left; reap all."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for _, p in self.procs:
                try:
                    os.killpg(p.pid, sig)     # the group: the command's children too
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for _, p in self.procs):
                time.sleep(POLL)
        for _, p in self.procs:
            p.wait()


def launch(command, num_workers, num_servers, hosts=None, timeout=None, grace=10.0,
           round_timeout=DEFAULT_TIMEOUT, server_config=None, stdout=None, stderr=None):
    """Run a cluster to completion; return the exit status (see module docstring)."""
    for what, value in (("timeout", timeout), ("grace", grace), ("round_timeout", round_timeout)):
        # 0 would stop the cluster at once or count its clean exit as a failure
        if value is not None and not (is_real(value) and value > 0):
            raise ValueError(f"{what}={value!r} must be a number of seconds > 0")
    procs = plan(command, num_workers, num_servers, hosts=hosts,
                 round_timeout=round_timeout, server_config=server_config)
    cluster = Cluster(procs, timeout=timeout, grace=grace, stdout=stdout, stderr=stderr)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signum)

    previous = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return cluster.wait()
    except KeyboardInterrupt:
        return cluster.fail("interrupted", 130)
    finally:
        cluster.stop(wait=1.0)
        for s, handler in previous.items():
            signal.signal(s, handler)


def build_parser(prog="byzsgd launch"):
    p = argparse.ArgumentParser(prog=prog, description=(
        "Start an MXNet ps-lite cluster (1 scheduler, S byzsgd servers, N workers running "
        "COMMAND) on loopback, or over ssh with --hosts; stop all of it when any part fails."))
    p.add_argument("-n", "--workers", type=int, required=True, help="number of workers")
    p.add_argument("-s", "--servers", type=int, required=True, help="number of servers")
    p.add_argument("--hosts", metavar="FILE", help="run servers and workers over ssh on "
                                                   "these hosts (untested across machines)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds the cluster may run (default: no limit)")
    p.add_argument("--round-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds a round may stall (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="seconds workers may outlive a server, and servers their workers "
                        "(default 10)")
    p.add_argument("--server-config", metavar="FILE",
                   help="fix the servers' configuration (byzsgd JSON) at launch: they then "
                        "refuse any other from the workers")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    return p


def main(argv=None):
    """``byzsgd launch`` (also ``python -m byzsgd.launch``)."""
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        hosts = read_hosts(args.hosts) if args.hosts else None
        sealed = None
        if args.server_config:
            with open(args.server_config, encoding="utf-8") as f:
                sealed = f.read()
            psconfig.parse(sealed, args.servers, args.workers)
        return launch(command, args.workers, args.servers, hosts=hosts,
                      timeout=args.timeout, grace=args.grace,
                      round_timeout=args.round_timeout, server_config=sealed)
    except (ValueError, OSError) as err:
        print(f"byzsgd launch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
