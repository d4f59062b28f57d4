# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the daemons share: options, logging, pid file, signals."""

import argparse
import logging
import logging.config
import os
import signal
import sys
import threading
import traceback

import yaml

log = logging.getLogger("nodepool.daemon")


def daemon_parser(prog: str, description: str, default_pidfile: str):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", dest="config",
                        default="/etc/nodepool/nodepool.yaml",
                        help="path to the config file")
    parser.add_argument("-s", dest="secure",
                        help="path to the secure file")
    parser.add_argument("-l", dest="logconfig",
                        help="path to a logging config file (YAML or INI)")
    parser.add_argument("-p", dest="pidfile", default=default_pidfile,
                        help="path to the pid file")
    parser.add_argument("-d", "-f", "--nodaemon", dest="nodaemon",
                        action="store_true", help="run in the foreground")
    return parser


def setup_logging(path=None) -> None:
    """Configure logging from a YAML (dictConfig) or INI file, or stderr."""
    if not path:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    with open(path) as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        logging.config.dictConfig(data)
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)


def dump_stacks(signum=None, frame=None) -> None:
    """Log every thread's stack (SIGUSR2)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, stack in sys._current_frames().items():
        lines.append("Thread %s (%s):" % (ident, names.get(ident, "?")))
        lines.extend(line.rstrip() for line in
                     traceback.format_stack(stack))
    log.warning("Thread stacks:\n%s", "\n".join(lines))


def daemonize() -> None:
    """Detach from the terminal (double fork, new session)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    with open(os.devnull, "r+b") as null:
        for fd in (0, 1, 2):
            os.dup2(null.fileno(), fd)


def run_daemon(args, make_service) -> int:
    """Run ``make_service()`` (start/stop/join) until SIGINT or SIGTERM."""
    if not args.nodaemon:
        daemonize()
    setup_logging(args.logconfig)
    pidfile = args.pidfile
    if pidfile:
        os.makedirs(os.path.dirname(os.path.abspath(pidfile)), exist_ok=True)
        with open(pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGUSR2, dump_stacks)
    try:
        service = make_service()
        service.start()
    except Exception as e:
        log.exception("Could not start: %s", e)
        return 1
    try:
        while not stop.wait(1.0):
            pass
        log.info("Stopping")
        service.stop()
        service.join()
    finally:
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)
    return 0
