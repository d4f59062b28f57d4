#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fault scenarios against a real nodepool-launcher process, one row each.

Every scenario gets a fresh private TLS ZooKeeper (or a three-member TLS
ensemble), a fresh moto state behind tests/fakes/aws_proxy.py (RunInstances
delayed), and ``nodepool-launcher -f`` as a separate process.  A Zuul-like
client (tests/fixtures/zuul.py) writes N one-node requests, the fault is
injected, and each request is followed to its end: fulfilled requests have
their nodes accepted (locked, checked ready and allocated to it, in-use);
failed ones are deleted, as Zuul does.  Once every request has ended (or
timed out), all nodes are returned (``used``) and the tool waits for the
launcher to clean up.

Columns:

* ``sub/ful/fail/hung``: requests submitted, fulfilled, failed, not ended
  within ``--request-timeout``;
* ``bad``: nodes Zuul could not accept from a fulfilled request (not
  ready, not allocated to it, gone) plus nodes handed to two requests;
* ``leak``: instances still not terminated in moto after the nodes were
  released and ``--cleanup-wait`` seconds passed;
* ``left``: node records, request records and held lock contenders left
  under the chroot at that point (empty ``requests-lock`` directories are
  not counted: Zuul leaves them and the launcher removes them after 8 h,
  as nodepool 11 does);
* ``recover``: seconds from the fault's end to the last request ending
  (0 when every request had ended by then; ``-`` when one never did);
* ``clean``: seconds from the nodes' release until no node record and no
  live instance is left (``-``: not within ``--cleanup-wait``).

The launcher's leak cleanup runs every 60 s and deletes a leaked instance
when two passes in a row saw it, so a leak found by it takes up to about
two minutes: the default ``--cleanup-wait`` allows for that.

Scenarios (the numbers are those of issue 10):

* ``baseline``: no fault (the reference row);
* ``zk-restart`` (1): ZooKeeper stopped ``--fault-after`` s after the
  requests were written, started again ``--zk-outage`` s later (same data
  dir: sessions survive, clients go SUSPENDED then CONNECTED, provided
  they reconnect within ``--session-timeout`` of the restart; kazoo's
  reconnect backoff grows during the outage, so a short timeout can turn
  this into a session loss);
* ``zk-expiry`` (2): the launcher's session expires: its connection to
  ZooKeeper goes through a TCP link that is cut for ``--cutoff`` s (longer
  than ``--session-timeout``), or with ``--expiry-mode sigstop`` the
  server is paused (SIGSTOP) that long, which expires every session,
  Zuul's included;
* ``kill9`` (3): the launcher is SIGKILLed with launches in flight and
  started again ``--restart-delay`` s later;
* ``cloud-throttle``, ``cloud-5xx``, ``cloud-capacity``,
  ``cloud-lost-create`` (4): EC2 errors injected through the proxy (see
  :data:`CLOUD_FAULTS`); for the last, RunInstances is carried out by moto
  but its answer is lost (connection dropped, or a 500 instead);
* ``ensemble`` (6): a three-member ensemble; the leader is SIGKILLed under
  load and restarted ``--member-outage`` s later, then (after a second
  wave of requests) a follower.

Every process the tool starts is stopped on the way out, also on Ctrl-C,
SIGTERM or an error.  Logs stay in the work directory it prints.

Usage: tools/chaos.py [--scenarios zk-restart,kill9] [--requests 20]
       [--quick] [--json results.json]
"""

import argparse
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import KazooException, NoNodeError  # noqa: E402

from launcher_bed import (  # noqa: E402
    aws_config, live_instances, start_launcher, stop_launcher,
    wait_component, zk_config)
from chaos_report import (  # noqa: E402
    format_details, format_row, format_table, git_head, log_summary)
from zk_bed import EnsembleZk, SingleZk, ZkLink  # noqa: E402
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from nodepool.zk.models import RequestState  # noqa: E402
from tests.fakes.aws_proxy import AwsProxy, MotoServer  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.zuul import (  # noqa: E402
    WaitTimeout, ZuulClient, ZuulClientError)

CHROOT = "/chaos"
POLL = 0.25


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every process is stopped."""


# -- one scenario run -----------------------------------------------------------

class Run:
    """The bed of one scenario: ZooKeeper, launcher, Zuul, and the outcome
    of every request.  Stops what it started in :meth:`close`."""

    def __init__(self, bed, name, zk, link=None):
        self.bed = bed
        self.args = bed.args
        self.name = name
        self.zk = zk
        self.link = link
        self.workdir = os.path.join(bed.workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.log_path = os.path.join(self.workdir, "launcher.log")
        self.config_path = os.path.join(self.workdir, "nodepool.yaml")
        self.proc = None
        self.admin = None
        self.zuul_zk = None
        self.zuul = None
        self.notes = []
        self._lock = threading.Lock()
        self.outcomes = {}     # request id -> (state, detail)
        self.finished = {}     # request id -> monotonic end time
        self.accepted = []     # Node objects Zuul holds
        self.node_owner = {}   # node id -> request ids it was handed to
        self.submitted_at = None
        self.waiters = []      # one thread per request
        self.fault_end = None

    # setup / teardown

    def write_config(self):
        servers = self.zk.tls_servers
        if self.link is not None:
            servers = [("127.0.0.1", self.link.port)]
        with open(self.config_path, "w") as f:
            f.write(zk_config(servers, CHROOT, self.zk.certs,
                              timeout=self.args.session_timeout))
            f.write(aws_config(rate=self.args.rate))

    def start_launcher(self):
        self.proc = start_launcher(
            self.config_path, self.log_path, self.bed.proxy.url,
            self.workdir, debug=self.args.debug, extra_args=["--no-webapp"],
            intervals=self.args.intervals)
        return self.proc

    def setup(self):
        self.admin = KazooClient(hosts=self.zk.plain_hosts, timeout=30)
        self.admin.start(timeout=30)
        self.admin.ensure_path(CHROOT)
        self.write_config()
        self.bed.moto.reset()
        self.start_launcher()
        wait_component(self.admin, CHROOT, "pool", self.proc, self.log_path)
        # Let it warm its quota and image caches, as a launcher that has
        # been up a while would have.
        time.sleep(self.args.settle)
        self.zuul_zk = ZooKeeperClient(self.zk.plain_hosts + CHROOT,
                                       timeout=30)
        self.zuul_zk.connect()
        self.zuul = ZuulClient(self.zuul_zk)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            started = time.monotonic()
            stop_launcher(self.proc, timeout=30)
            took = time.monotonic() - started
            if self.proc.returncode != 0 or took > 10:
                self.notes.append("launcher stop on SIGTERM: rc %s after "
                                  "%.1f s" % (self.proc.returncode, took))
        if self.zuul is not None:
            with contextlib.suppress(Exception):
                self.zuul.close()
        if self.zuul_zk is not None:
            with contextlib.suppress(Exception):
                self.zuul_zk.disconnect()
        if self.admin is not None:
            with contextlib.suppress(Exception):
                self.admin.stop()
                self.admin.close()
        if self.link is not None:
            self.link.stop()
        self.zk.stop()

    # Zuul's side

    def submit(self, count):
        """Write ``count`` requests at once and follow each in a thread."""
        now = time.monotonic()
        if self.submitted_at is None:
            self.submitted_at = now
        deadline = now + self.args.request_timeout
        for _ in range(count):
            request = _retry_zk(lambda: self.zuul.submit(["small"]),
                                deadline)
            thread = threading.Thread(target=self._follow,
                                      args=(request, deadline),
                                      daemon=True, name="zuul-waiter")
            thread.start()
            self.waiters.append(thread)

    def join_waiters(self):
        for thread in list(self.waiters):
            # Each waiter gives up by itself at its deadline.
            thread.join(self.args.request_timeout + 60)

    def _end(self, request, state, detail=""):
        with self._lock:
            self.outcomes[request.id] = (state, detail)
            self.finished[request.id] = time.monotonic()

    def _follow(self, request, deadline):
        try:
            done = _retry_zk(lambda: self.zuul.wait_for_request(
                request, timeout=max(1.0, deadline - time.monotonic())),
                deadline)
        except WaitTimeout as e:
            self._end(request, "hung", str(e))
            return
        except (ZuulClientError, KazooException) as e:
            self._end(request, "bad", "waiting: %s" % e)
            return
        if done.state == RequestState.FAILED:
            self._end(request, "failed",
                      "declined by %s" % ",".join(done.declined_by))
            _retry_zk(lambda: self.zuul.delete_request(done), deadline)
            return
        try:
            nodes = _retry_zk(lambda: self.zuul.accept_nodes(done), deadline)
        except (ZuulClientError, KazooException) as e:
            self._end(request, "bad", "accept: %s" % e)
            return
        with self._lock:
            self.accepted.extend(nodes)
            for node in nodes:
                self.node_owner.setdefault(node.id, []).append(done.id)
        self._end(request, "fulfilled")

    def release(self):
        """Zuul is done: return every node, cancel what never ended."""
        with self._lock:
            nodes = list(self.accepted)
            hung = [rid for rid, (state, _) in self.outcomes.items()
                    if state == "hung"]
        for node in nodes:
            try:
                self.zuul.return_nodes([node])
            except Exception as e:
                # E.g. Zuul's own session expired (sigstop): its locks
                # are gone and the launcher may have deleted the node.
                self.notes.append("returning node %s: %r" % (node.id, e))
        for request_id in hung:
            with contextlib.suppress(KazooException):
                self.zuul.cancel(request_id)

    # what is left

    def children(self, path):
        try:
            return self.admin.get_children(CHROOT + path)
        except NoNodeError:
            return []

    def zk_left(self):
        nodes = self.children("/nodepool/nodes")
        requests = self.children("/nodepool/requests")
        held = 0
        empty_dirs = 0
        for lock_dir in self.children("/nodepool/requests-lock"):
            contenders = self.children("/nodepool/requests-lock/" + lock_dir)
            held += len(contenders)
            empty_dirs += not contenders
        states = collections.Counter()
        for node_id in nodes:
            try:
                data = json.loads(self.admin.get(
                    CHROOT + "/nodepool/nodes/" + node_id)[0] or b"{}")
                states[data.get("state", "?")] += 1
            except (NoNodeError, ValueError):
                states["unreadable"] += 1
        return {"nodes": len(nodes), "requests": len(requests),
                "held_locks": held, "empty_lock_dirs": empty_dirs,
                "node_states": dict(states)}

    def wait_clean(self):
        """Wait until no node record and no live instance is left; the
        seconds it took, or None."""
        start = time.monotonic()
        deadline = start + self.args.cleanup_wait
        while time.monotonic() < deadline:
            if (not self.children("/nodepool/nodes")
                    and not live_instances(self.bed.moto.url)):
                return time.monotonic() - start
            time.sleep(POLL * 2)
        return None


def _retry_zk(call, deadline):
    """Run ``call`` again while ZooKeeper is unreachable (as Zuul's
    scheduler would after a reconnect), until ``deadline``."""
    while True:
        try:
            return call()
        except (KazooException, ZuulClientError) as e:
            if isinstance(e, ZuulClientError) and not isinstance(
                    e.__cause__, KazooException):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# -- faults ---------------------------------------------------------------------

def fault_none(run):
    return run.submitted_at


def fault_zk_restart(run):
    time.sleep(run.args.fault_after)
    run.zk.server.stop()
    time.sleep(run.args.zk_outage)
    run.zk.server.start()
    return time.monotonic()


def fault_zk_expiry(run):
    time.sleep(run.args.fault_after)
    if run.args.expiry_mode == "cutoff":
        run.link.cut()
        time.sleep(run.args.cutoff)
        run.link.restore()
    else:
        pid = run.zk.server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(run.args.cutoff)
        finally:
            os.kill(pid, signal.SIGCONT)
    return time.monotonic()


def fault_kill9(run):
    time.sleep(run.args.fault_after)
    building = len(run.children("/nodepool/nodes"))
    run.proc.kill()
    run.proc.wait()
    run.notes.append("killed with %d node records present" % building)
    time.sleep(run.args.restart_delay)
    run.start_launcher()
    return time.monotonic()


def fault_ensemble(run):
    """Kill the leader, restart it once the rest has a quorum again; then
    write the second wave and kill a follower (the launcher's own server
    when it is on a follower, so that it certainly has to move)."""
    ensemble = run.zk.ensemble
    time.sleep(run.args.fault_after)
    for role in ("leader", "follower"):
        ensemble.wait_quorum()
        leader = ensemble.leader()
        on = launcher_member(run)
        if role == "leader":
            victim = leader
        else:
            followers = [m for m in ensemble.members if m is not leader]
            victim = on if on in followers else followers[0]
            run.submit(run.args.requests // 2)
        run.notes.append("killed the %s, member %d (the launcher was on "
                         "member %s)" % (role, victim.myid,
                                         on.myid if on else "?"))
        victim.stop(kill=True)
        time.sleep(run.args.member_outage)
        victim.start(wait=True)
    ensemble.wait_quorum()
    return time.monotonic()


def launcher_member(run):
    """The member the launcher's session is connected to, if known: its
    component registration is ephemeral, so the owner is its session.
    The launcher uses TLS, and ``cons`` lists only the connections of the
    port it is asked on."""
    path = CHROOT + "/nodepool/components/launcher"
    try:
        owners = [stat.ephemeralOwner for stat in (
            run.admin.exists(path + "/" + child)
            for child in run.admin.get_children(path)) if stat]
    except KazooException:
        return None
    for owner in owners:
        needle = "sid=0x%x" % owner
        for member in run.zk.ensemble.running():
            if needle in zkserver.four_letter(
                    member.host, member.secure_port, "cons",
                    tls=run.zk.certs):
                return member
    return None


# Cloud faults (scenario 4).  Each entry arms the proxy before the requests
# are written: a list of (EC2 action, error code, HTTP status, how many
# calls in a row).  The fault ends when the proxy has served all of them.
CLOUD_FAULTS = {
    # A burst of throttling on the calls a launch makes.
    "cloud-throttle": [("RunInstances", "RequestLimitExceeded", 503, 10),
                       ("DescribeInstances", "RequestLimitExceeded", 503, 5)],
    # Server errors on create and delete.
    "cloud-5xx": [("RunInstances", "InternalError", 500, 6),
                  ("TerminateInstances", "InternalError", 500, 3)],
    # The region runs out of the instance type for a while.
    "cloud-capacity": [("RunInstances", "InsufficientInstanceCapacity",
                        500, 8)],
}


def arm_cloud_fault(run):
    """Scenario 4: arm the proxy with the row's cloud fault.

    THE SLOT FOR NEW CLOUD FAULTS: a fault the proxy can express as
    "answer the next N calls of an action with an error" goes into
    :data:`CLOUD_FAULTS`; anything else (lost answers, slow answers) gets a
    branch here that arms it, plus a check in :func:`cloud_fault_pending`
    telling when it is over.
    """
    proxy = run.bed.proxy
    if run.name == "cloud-lost-create":
        # RunInstances reaches moto (the instance exists) but the launcher
        # never gets the answer: the connection drops, or a 500 comes
        # back instead of the reservation.
        times = max(1, run.args.requests // 8)
        proxy.lose_answer("RunInstances", how="drop", times=times)
        proxy.lose_answer("RunInstances", how="error", times=times)
        return
    for action, code, status, times in CLOUD_FAULTS[run.name]:
        proxy.fail(action, code, status=status, times=times)


def cloud_fault_pending(run):
    """How many injected errors the proxy has not served yet."""
    proxy = run.bed.proxy
    with proxy._lock:
        pending = sum(len(queue) for queue in proxy.failures.values())
        pending += sum(len(queue) for queue in proxy.losses.values())
    return pending


def fault_cloud(run):
    """The fault was armed before submitting; it ends when the proxy
    serves the last injected error.  Errors still unserved when every
    request has ended (e.g. on TerminateInstances, which comes with the
    release) do not move the end."""
    deadline = run.submitted_at + run.args.request_timeout
    pending = cloud_fault_pending(run)
    last_served = run.submitted_at
    while pending and time.monotonic() < deadline:
        with run._lock:
            if len(run.outcomes) >= run.args.requests:
                run.notes.append("%d injected errors not served while "
                                 "requests were open" % pending)
                break
        time.sleep(POLL)
        now_pending = cloud_fault_pending(run)
        if now_pending < pending:
            last_served = time.monotonic()
        pending = now_pending
    return last_served


def clear_cloud_faults(proxy):
    with proxy._lock:
        proxy.failures.clear()
        proxy.losses.clear()


# name -> (issue number, fault function, needs: "single"/"link"/"ensemble",
#          armed before the requests are written)
SCENARIOS = {
    "baseline": (0, fault_none, "single", None),
    "zk-restart": (1, fault_zk_restart, "single", None),
    "zk-expiry": (2, fault_zk_expiry, "link", None),
    "kill9": (3, fault_kill9, "single", None),
    "cloud-throttle": (4, fault_cloud, "single", arm_cloud_fault),
    "cloud-5xx": (4, fault_cloud, "single", arm_cloud_fault),
    "cloud-capacity": (4, fault_cloud, "single", arm_cloud_fault),
    "cloud-lost-create": (4, fault_cloud, "single", arm_cloud_fault),
    "ensemble": (6, fault_ensemble, "ensemble", None),
}


# -- the bench ------------------------------------------------------------------

class Bed:
    """What all scenarios share: moto, the proxy, TLS certs, a work dir."""

    def __init__(self, args):
        self.args = args
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="chaos-")
        os.makedirs(self.workdir, exist_ok=True)
        self.certs = zkserver.make_certs(os.path.join(self.workdir, "certs"))
        self.moto = None
        self.proxy = None

    def start(self):
        self.moto = MotoServer().start()
        self.proxy = AwsProxy(
            self.moto.port, delays={"RunInstances": self.args.create_delay},
            default_delay=self.args.call_delay).start()
        return self

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
        if self.moto is not None:
            self.moto.stop()

    def make_run(self, name):
        kind = SCENARIOS[name][2]
        directory = tempfile.mkdtemp(prefix=name + "-", dir=self.workdir)
        if kind == "ensemble":
            zk = EnsembleZk(directory, self.certs)
        else:
            zk = SingleZk(directory, self.certs)
        try:
            zk.start()
            link = None
            if kind == "link" and self.args.expiry_mode == "cutoff":
                host, port = zk.tls_servers[0]
                link = ZkLink(host, port)
        except BaseException:
            with shielded():
                zk.stop()
            raise
        return Run(self, name, zk, link)


def run_scenario(bed, name):
    number, fault, _, arm = SCENARIOS[name]
    result = {"scenario": name, "issue_scenario": number}
    clear_cloud_faults(bed.proxy)
    run = bed.make_run(name)
    try:
        run.setup()
        if arm is not None:
            arm(run)
        bed.proxy.reset_counts()
        # The ensemble writes a second wave itself, before it kills a
        # follower, so that both kills happen under load.
        first = bed.args.requests - (
            bed.args.requests // 2 if name == "ensemble" else 0)
        run.submit(first)
        run.fault_end = fault(run)
        run.join_waiters()
        result.update(summarize_requests(run))
        launcher_rc = run.proc.poll()
        if launcher_rc is not None:
            run.notes.append("launcher exited on its own (rc %s)"
                             % launcher_rc)
        run.release()
        clean = run.wait_clean()
        result["clean"] = clean
        result["leaked"] = len(live_instances(bed.moto.url))
        left = run.zk_left()
        result["left"] = left["nodes"] + left["requests"] + left["held_locks"]
        result["zk_left"] = left
        result["ec2_calls"] = {
            action: bed.proxy.counts[action] for action in (
                "RunInstances", "TerminateInstances", "DescribeInstances")}
    except Exception as e:
        # One broken scenario must not hide the others' rows.
        result["error"] = "%s: %s" % (type(e).__name__, e)
        result["traceback"] = traceback.format_exc()
    finally:
        with shielded():
            clear_cloud_faults(bed.proxy)
            run.close()
    result["notes"] = run.notes
    result["log"] = run.log_path
    result["log_errors"] = log_summary(run.log_path)
    return result


def summarize_requests(run):
    with run._lock:
        outcomes = dict(run.outcomes)
        finished = dict(run.finished)
        owners = dict(run.node_owner)
    count = run.args.requests
    states = [state for state, _ in outcomes.values()]
    missing = count - len(outcomes)  # a waiter that never reported
    doubled = sum(1 for ids in owners.values() if len(ids) > 1)
    ended = [finished[rid] for rid, (state, _) in outcomes.items()
             if state in ("fulfilled", "failed")]
    reasons = sorted({detail for state, detail in outcomes.values()
                      if state in ("failed", "bad") and detail})
    recover = None
    if ended and not states.count("hung") and not missing:
        recover = max(0.0, max(ended) - run.fault_end)
    return {"submitted": count, "fulfilled": states.count("fulfilled"),
            "failed": states.count("failed"),
            "hung": states.count("hung") + missing,
            "bad": states.count("bad") + doubled,
            "recover": recover, "reasons": reasons[:5]}


# -- command line ---------------------------------------------------------------

QUICK = dict(requests=5, fault_after=0.5, zk_outage=4.0, cutoff=13.0,
             restart_delay=2.0, member_outage=3.0, settle=1.0,
             request_timeout=90.0, cleanup_wait=40.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--scenarios", default="all",
                        help="comma-separated names, or 'all' (default)")
    parser.add_argument("--quick", action="store_true",
                        help="few requests and short outages: %s" % ", ".join(
                            "%s=%s" % kv for kv in sorted(QUICK.items())))
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--fault-after", type=float, default=1.0,
                        help="seconds after the requests were written")
    parser.add_argument("--zk-outage", type=float, default=8.0)
    parser.add_argument("--session-timeout", type=float, default=10.0,
                        help="the launcher's zookeeper-timeout (the test "
                             "ZooKeeper allows 1 to 10 s)")
    parser.add_argument("--cutoff", type=float, default=15.0,
                        help="zk-expiry: how long the launcher is cut off")
    parser.add_argument("--expiry-mode", choices=("cutoff", "sigstop"),
                        default="cutoff")
    parser.add_argument("--restart-delay", type=float, default=3.0,
                        help="kill9: seconds before the restart")
    parser.add_argument("--member-outage", type=float, default=5.0,
                        help="ensemble: seconds each killed member stays "
                             "down")
    parser.add_argument("--create-delay", type=float, default=1.5,
                        help="RunInstances latency of the fake EC2")
    parser.add_argument("--call-delay", type=float, default=0.05,
                        help="latency of every other EC2 call")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="the provider's API rate limit")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds the launcher runs before requests")
    parser.add_argument("--request-timeout", type=float, default=240.0)
    parser.add_argument("--cleanup-wait", type=float, default=180.0,
                        help="seconds allowed for cleanup after release")
    parser.add_argument("--workdir", help="keep logs here (default: a new "
                                          "temporary directory)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--debug", action="store_true",
                        help="run the launcher with -d (debug log)")
    parser.add_argument("--interval", action="append", default=[],
                        metavar="NAME=SECONDS",
                        help="shorten a launcher loop (e.g. cleanup=10): "
                             "runs tests.fixtures.launcher_process instead "
                             "of the nodepool-launcher console script")
    args = parser.parse_args(argv)
    try:
        args.intervals = {
            name: float(value) for name, _, value in (
                item.partition("=") for item in args.interval)}
    except ValueError:
        parser.error("--interval takes NAME=SECONDS")
    if args.quick:
        defaults = {action.dest: action.default
                    for action in parser._actions}
        for key, value in QUICK.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    names = list(SCENARIOS) if args.scenarios == "all" else [
        name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error("unknown scenario(s) %s; known: %s" % (
            ", ".join(unknown), ", ".join(SCENARIOS)))
    args.names = names
    return args


def _interrupt(signum, frame):
    raise Interrupted("signal %d" % signum)


@contextlib.contextmanager
def shielded():
    """Let a cleanup finish: Ctrl-C and SIGTERM wait until it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []

    def note(signum, frame):
        pending.append(signum)
    saved = {signum: signal.signal(signum, note)
             for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    if pending:
        if pending[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted("signal %d" % pending[0])


def main(argv=None):
    args = parse_args(argv)
    # Started in the background, a shell leaves SIGINT ignored; the tool
    # always wants it to unwind (and stop what it started).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    bed = Bed(args)
    # The tool's own clients (Zuul's, kazoo) log to the work dir, not to
    # the terminal the table goes to.
    logging.basicConfig(
        filename=os.path.join(bed.workdir, "chaos.log"), level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print("chaos: %s; %d requests per scenario; launcher intervals %s; "
          "work dir %s" % (git_head(), args.requests,
                           args.intervals or "of nodepool-launcher",
                           bed.workdir), flush=True)
    results = []
    rc = 0
    try:
        bed.start()
        for name in args.names:
            print("-- %s ..." % name, flush=True)
            result = run_scenario(bed, name)
            results.append(result)
            print(format_row(result), flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; stopping everything", file=sys.stderr)
        rc = 130
    finally:
        with shielded():
            bed.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
    print()
    print(format_table(results))
    print()
    for result in results:
        print(format_details(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
