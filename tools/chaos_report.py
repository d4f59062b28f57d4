# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What tools/chaos.py prints: the table, the details of each row, and
what it reads from the launcher's log for them."""

import collections
import json
import os
import re
import subprocess

# What the launcher's log says about its ZooKeeper connection (the
# messages of nodepool.zk.client's state listener).
ZK_EVENTS = (("suspended", "zk.client: ZooKeeper connection suspended"),
             ("session lost", "zk.client: ZooKeeper session lost"),
             ("connected", "zk.client: ZooKeeper connection established"))


def log_summary(path, limit=5):
    """The launcher's ERROR lines (how many, the first distinct few without
    timestamps and ids) and its ZooKeeper connection events."""
    errors = []
    events = collections.Counter()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if " ERROR " in line:
                    errors.append(line.rstrip())
                for name, text in ZK_EVENTS:
                    if text in line:
                        events[name] += 1
    except OSError:
        pass
    seen = []
    for line in errors:
        text = re.sub(r"^\S+ \S+ ", "", line)
        text = re.sub(r"\b\d{10}\b|\b[0-9a-f]{32}\b|i-[0-9a-f]+", "#", text)
        if text not in seen:
            seen.append(text)
        if len(seen) >= limit:
            break
    return {"count": len(errors), "first": seen, "zk_events": dict(events)}


COLUMNS = (("scenario", 18), ("#", 2), ("sub", 4), ("ful", 4), ("fail", 4),
           ("hung", 4), ("bad", 4), ("leak", 4), ("left", 4),
           ("recover", 8), ("clean", 8))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.1f" % value
    return str(value)


def format_row(result):
    if "error" in result:
        return "%-18s %2s  error: %s" % (
            result["scenario"], result["issue_scenario"], result["error"])
    keys = ("scenario", "issue_scenario", "submitted", "fulfilled", "failed",
            "hung", "bad", "leaked", "left", "recover", "clean")
    return " ".join("%-*s" % (width, _cell(result.get(key)))
                    if i == 0 else "%*s" % (width, _cell(result.get(key)))
                    for i, ((_, width), key) in enumerate(zip(COLUMNS, keys)))


def format_table(results):
    header = " ".join("%-*s" % (w, n) if i == 0 else "%*s" % (w, n)
                      for i, (n, w) in enumerate(COLUMNS))
    return "\n".join([header, "-" * len(header)]
                     + [format_row(r) for r in results])


def format_details(result):
    lines = ["%s:" % result["scenario"]]
    if result.get("zk_left"):
        lines.append("  left in ZooKeeper: %s" % json.dumps(
            result["zk_left"], sort_keys=True))
    if result.get("ec2_calls"):
        lines.append("  EC2 calls: %s" % json.dumps(
            result["ec2_calls"], sort_keys=True))
    for reason in result.get("reasons", []):
        lines.append("  request: %s" % reason)
    for note in result.get("notes", []):
        lines.append("  note: %s" % note)
    errors = result.get("log_errors") or {}
    if errors.get("zk_events"):
        lines.append("  launcher ZooKeeper events: %s" % ", ".join(
            "%s %d" % (name, errors["zk_events"].get(name, 0))
            for name, _ in ZK_EVENTS))
    if errors.get("count"):
        lines.append("  launcher ERROR lines: %d, first:" % errors["count"])
        lines.extend("    " + text[:200] for text in errors["first"])
    if result.get("traceback"):
        lines.append("  " + result["traceback"].rstrip().replace(
            "\n", "\n  "))
    lines.append("  log: %s" % result.get("log"))
    return "\n".join(lines)


def git_head():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(
            ["git", "-C", top, "log", "-1", "--format=%h %s"],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
