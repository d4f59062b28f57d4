# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the daemons share: options, logging, pid file, signals.

Options (doc/source/operation.rst): ``-c``, ``-s``, ``-l`` (``.yaml``/``.yml``/``.json``
→ ``dictConfig``, anything else → ``fileConfig``), ``-p`` (default
``/var/run/nodepool/<app>.pid``), ``-d`` (foreground, DEBUG console
logging), ``-f`` (foreground), ``--repl`` (Python REPL server) and
``--version``.

The REPL holds the daemon with its cloud credentials, so it is served on
a UNIX socket of mode 0600 (``--repl-socket``, default
``/var/run/nodepool/<app>-repl.sock``), reachable by the daemon's user and
root only; nodepool 11 serves it unauthenticated on TCP ``localhost:3000``,
open to every local user.

Signals: SIGINT and SIGUSR1 stop the service gracefully.  SIGTERM does
too: upstream's launcher leaves with ``os._exit(0)`` at once, but a clean
stop (ephemeral registrations removed, locks released) costs little and
makes service managers and tests behave.  SIGUSR2 logs every thread's
stack to ``nodepool.stack_dump`` (and toggles yappi profiling when yappi
is installed).

The pid file belongs to a detached daemon only, as in nodepool 11: with
``-f`` or ``-d`` none is read or written, so that several foreground
daemons (containers, systemd units, developers) never collide on the
default path.  A detached daemon refuses a pid file that names a live
process other than itself; a stale one (its process is gone) is replaced.
"""

import argparse
import code
import contextlib
import io
import logging
import logging.config
import os
import signal
import socket
import socketserver
import stat
import sys
import tempfile
import threading
import traceback

import yaml

from nodepool.version import __version__

log = logging.getLogger("nodepool.daemon")
stack_log = logging.getLogger("nodepool.stack_dump")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPL_SOCKET_MODE = 0o600


def default_pidfile(app: str) -> str:
    return "/var/run/nodepool/%s.pid" % app


def default_repl_socket(app: str) -> str:
    return "/var/run/nodepool/%s-repl.sock" % app


def daemon_parser(prog: str, description: str, app: str):
    """The option parser shared by the daemons.

    ``app`` names the pid and log files (``nodepool`` for the launcher,
    ``nodepool-builder`` for the builder).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.set_defaults(app=app)
    parser.add_argument("-c", dest="config",
                        default="/etc/nodepool/nodepool.yaml",
                        help="path to the config file (default: "
                        "%(default)s)")
    parser.add_argument("-s", dest="secure",
                        help="path to the secure file")
    parser.add_argument("-l", dest="logconfig",
                        help="logging config file (.yaml/.yml/.json: "
                        "dictConfig; otherwise fileConfig)")
    parser.add_argument("-p", dest="pidfile", default=default_pidfile(app),
                        help="pid file of the detached daemon, not used with -f "
                        "or -d (default: %(default)s)")
    parser.add_argument("-d", dest="debug", action="store_true",
                        help="stay in the foreground with debug logging")
    parser.add_argument("-f", dest="foreground", action="store_true",
                        help="stay in the foreground")
    parser.add_argument("--repl", action="store_true",
                        help="serve a Python REPL on the --repl-socket")
    parser.add_argument("--repl-socket", default=default_repl_socket(app),
                        help="UNIX socket (mode 0600) of --repl (default: "
                        "%(default)s)")
    parser.add_argument("--version", action="version",
                        version="Nodepool version: %s" % __version__)
    return parser


# -- logging -------------------------------------------------------------------

def load_logging_config(path: str) -> None:
    """Apply a logging config file: dictConfig for YAML/JSON, else INI."""
    if path.endswith((".yaml", ".yml", ".json")):
        with open(path) as f:
            # JSON is a subset of YAML.
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError("logging config %s is not a mapping" % path)
        logging.config.dictConfig(data)
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)


def default_logging_config(app: str, foreground: bool,
                           debug: bool) -> dict:
    """Console logging in the foreground, a log file when daemonized."""
    if foreground:
        handler = {"class": "logging.StreamHandler",
                   "stream": "ext://sys.stdout", "formatter": "simple"}
    else:
        handler = {"class": "logging.handlers.WatchedFileHandler",
                   "filename": "/var/log/nodepool/%s.log" % app,
                   "formatter": "simple"}
    quiet = {"handlers": ["main"], "level": "WARN", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"simple": {"format": LOG_FORMAT}},
        "handlers": {"main": handler},
        "loggers": {
            "nodepool": {"handlers": ["main"],
                         "level": "DEBUG" if debug else "INFO",
                         "propagate": False},
            "requests": dict(quiet),
            "openstack": dict(quiet),
            "kazoo": dict(quiet),
        },
        "root": {"handlers": ["main"], "level": "WARN"},
    }


def setup_logging(args) -> None:
    if args.logconfig:
        load_logging_config(args.logconfig)
    else:
        logging.config.dictConfig(default_logging_config(
            args.app, foreground(args), args.debug))


def foreground(args) -> bool:
    return bool(args.debug or args.foreground)


# -- pid file ------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by somebody else
    return True


def recorded_pid(path: str):
    """The pid in ``path``, or None if absent or unreadable."""
    try:
        with open(path) as f:
            return int(f.read().strip() or "x")
    except (OSError, ValueError):
        return None


def check_pidfile(path: str) -> None:
    """Refuse a pid file held by a live process; remove a stale one.

    :raises RuntimeError: another live process is recorded.
    """
    pid = recorded_pid(path)
    if pid is not None and pid != os.getpid() and _pid_alive(pid):
        raise RuntimeError("pid file %s is held by running process %d"
                           % (path, pid))
    if os.path.exists(path):
        os.unlink(path)


def write_pidfile(path: str) -> None:
    """Record our pid; fails if another process wrote the file meanwhile."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    check_pidfile(path)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("%d\n" % os.getpid())


def remove_pidfile(path: str) -> None:
    if recorded_pid(path) == os.getpid():
        os.unlink(path)


# -- signals and diagnostics ---------------------------------------------------

def dump_stacks(signum=None, frame=None) -> None:
    """Log every thread's stack (SIGUSR2); toggle yappi if installed."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines = []
    for ident, stack in sys._current_frames().items():
        lines.append("Thread %s (%s):" % (ident, names.get(ident, "?")))
        lines.extend(line.rstrip() for line in
                     traceback.format_stack(stack))
    stack_log.warning("Thread stacks:\n%s", "\n".join(lines))
    _toggle_profiling()


def _toggle_profiling() -> None:
    try:
        import yappi
    except ImportError:
        return
    if not yappi.is_running():
        yappi.start()
        return
    yappi.stop()
    out = io.StringIO()
    yappi.get_func_stats().print_all(out=out)
    yappi.get_thread_stats().print_all(out=out)
    stack_log.warning("Profile:\n%s", out.getvalue())
    yappi.clear_stats()


class _ReplHandler(socketserver.StreamRequestHandler):
    def handle(self):
        reader = self.rfile
        writer = self.wfile

        class Console(code.InteractiveConsole):
            def write(self, data):
                writer.write(data.encode("utf8"))
                writer.flush()

            def runcode(self, code_obj):
                # print() in the console goes to the client.  stdout is
                # process-wide, so other threads' prints land there too
                # meanwhile; acceptable for a debugging aid.
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    super().runcode(code_obj)
                self.write(out.getvalue())

            def raw_input(self, prompt=""):
                self.write(prompt)
                line = reader.readline()
                if not line:
                    raise EOFError
                return line.decode("utf8").rstrip("\n")

        Console(self.server.namespace).interact(
            banner="nodepool REPL", exitmsg="")


class ReplServer(socketserver.ThreadingUnixStreamServer):
    """An interactive Python console on a UNIX socket (``--repl``).

    The socket gets mode 0600 before it appears at ``path``: it is bound in
    a private temporary directory and renamed into place, so there is no
    moment at which other users could connect.  A stale socket left at
    ``path`` by a dead process is replaced; a socket somebody answers on,
    or any other kind of file, makes the constructor raise
    :class:`OSError`.  Missing parent directories are created (0750).
    """

    daemon_threads = True

    def __init__(self, namespace, path: str):
        self.namespace = namespace
        self.path = os.path.abspath(path)
        super().__init__(self.path, _ReplHandler, bind_and_activate=False)
        try:
            self._bind_private()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise
        self.thread = threading.Thread(target=self.serve_forever,
                                       name="REPL", daemon=True)

    def _bind_private(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o750, exist_ok=True)
        _remove_stale_socket(self.path)
        private = tempfile.mkdtemp(prefix=".repl-", dir=directory)
        temporary = os.path.join(private, "s")
        try:
            self.socket.bind(temporary)
            os.chmod(temporary, REPL_SOCKET_MODE)
            os.rename(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)  # left only if something failed
            os.rmdir(private)
        self._inode = os.stat(self.path).st_ino

    def start(self):
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()
        try:
            # Only our own socket: a newer process may have replaced it.
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def _remove_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on.

    :raises OSError: ``path`` is another kind of file, or a live socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError("%s exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: its process is gone
    else:
        raise FileExistsError("another process serves on %s" % path)
    finally:
        probe.close()
    os.unlink(path)


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


# -- main loop -----------------------------------------------------------------

def run_daemon(args, make_service) -> int:
    """Run ``make_service()`` (start/stop/join) until told to stop.

    Returns the exit status.  Startup errors are logged and give 1.
    """
    # Only a detached daemon has a pid file (see the module docstring).
    pidfile = None if foreground(args) else args.pidfile
    if pidfile:
        try:
            check_pidfile(pidfile)
        except (RuntimeError, OSError) as e:
            print("%s: %s" % (args.app, e), file=sys.stderr)
            return 1
    if not foreground(args):
        daemonize()
    try:
        setup_logging(args)
    except (OSError, ValueError) as e:
        print("%s: bad logging config: %s" % (args.app, e), file=sys.stderr)
        return 1
    if pidfile:
        try:
            write_pidfile(pidfile)
        except (RuntimeError, OSError) as e:
            log.error("Cannot write pid file: %s", e)
            return 1
    stop = threading.Event()

    def graceful(signum, frame):
        log.info("Received signal %s", signal.Signals(signum).name)
        stop.set()
    for signum in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, graceful)
    signal.signal(signal.SIGUSR2, dump_stacks)
    repl = None
    try:
        try:
            service = make_service()
            service.start()
        except Exception as e:
            log.exception("Could not start: %s", e)
            return 1
        if args.repl:
            try:
                repl = ReplServer({"service": service}, args.repl_socket)
                repl.start()
                log.info("REPL listening on %s", repl.path)
            except OSError as e:
                log.error("Cannot start the REPL server on %s: %s",
                          args.repl_socket, e)
        while not stop.wait(1.0):
            pass
        log.info("Stopping")
        if repl is not None:
            repl.stop()
        service.stop()
        service.join()
    finally:
        if pidfile:
            remove_pidfile(pidfile)
    return 0
