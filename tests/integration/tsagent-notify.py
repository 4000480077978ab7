#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""tsagent as a Type=notify service, without systemd: READY/STATUS on start,
RELOADING then READY on SIGHUP (a bad file keeps the running config),
WATCHDOG pings, STOPPING and a clean exit on SIGTERM; refusal of bad
configurations and of roles that cannot start."""

import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from tsftest import NotifySocket, build_dir, check, finish  # noqa: E402

TSAGENT = os.path.join(build_dir(), "tsagent")
work = tempfile.mkdtemp(prefix="tsfarm-notify-test-")
conf = os.path.join(work, "tsagent.conf")


def write_conf(text):
    with open(conf, "w") as f:
        f.write(text)


def run_agent(extra_env=None):
    env = dict(os.environ, NOTIFY_SOCKET=ns.path, TSFARM_LOG_TARGET="stderr")
    env.update(extra_env or {})
    return subprocess.Popen([TSAGENT, "--config", conf], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ns = NotifySocket()
write_conf("[agent]\nnode-name = ts-test-1\nlog-level = info\n")

# Start, ready, status, watchdog.
p = run_agent({"WATCHDOG_USEC": "200000"})
ready = ns.wait("READY=1")
check("READY=1 sent when serving", ready is not None)
status = ns.wait("STATUS=Node ts-test-1 serving roles: none") if ready else None
check("STATUS names the node and roles", status is not None, f"got {ns.messages}")
# WATCHDOG_PID unset means "ours"; libsystemd pings at half the interval.
check("WATCHDOG=1 pings arrive", ns.wait("WATCHDOG=1", timeout=3) is not None)

# Reload: good file applied, bad file refused, the agent keeps running.
write_conf("[agent]\nnode-name = ts-test-1\nlog-level = debug\n")
p.send_signal(signal.SIGHUP)
check("SIGHUP announces RELOADING=1", ns.wait("RELOADING=1") is not None)
check("READY=1 again after reload", ns.wait("READY=1") is not None)
write_conf("[agent]\nnode-name = ts-test-1\nlog-lvl = debug\n")
p.send_signal(signal.SIGHUP)
check("bad reload still answers READY=1", ns.wait("READY=1") is not None)
check("agent still running after a bad reload", p.poll() is None)

# Stop.
p.send_signal(signal.SIGTERM)
stopping = ns.wait("STOPPING=1")
check("SIGTERM announces STOPPING=1", stopping is not None)
try:
    out, err = p.communicate(timeout=5)
except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
check("clean exit on SIGTERM", p.returncode == 0, f"exit {p.returncode}: {err}")
check("reload error logged with file, line and key",
      "Failed to reload configuration, keeping the running one" in err
      and "tsagent.conf:3: [agent] log-lvl: unknown key" in err, err)
check("debug level applied by the good reload", "debug:" in err, err)

# Refusals at start.
# Every role is in this build now; a role that cannot start is refused
# (here: a licensing database that is not one, the config file itself).
write_conf(f"[agent]\nroles = licensing\nstate-directory = {work}\nruntime-directory = {work}\n"
           f"[licensing]\ndatabase = {conf}\n")
p = run_agent()
out, err = p.communicate(timeout=10)
check("a role that cannot start is refused with its reason",
      p.returncode == 1 and "is not a license database" in err, err)
write_conf("[agent]\nroles = hots\n")
p = subprocess.run([TSAGENT, "--config", conf, "--check-config"], capture_output=True, text=True)
check("--check-config reports an unknown role",
      p.returncode == 1 and "unknown role 'hots'" in p.stderr, p.stderr)
write_conf("[agent]\nroles =\n")
p = subprocess.run([TSAGENT, "--config", conf, "--check-config"], capture_output=True, text=True)
check("--check-config accepts a valid file", p.returncode == 0 and "OK" in p.stdout, p.stderr)
p = subprocess.run([TSAGENT, "--config", os.path.join(work, "absent.conf")],
                   capture_output=True, text=True)
check("a missing config file is a clear error",
      p.returncode == 1 and "absent.conf: No such file or directory" in p.stderr, p.stderr)

ns.close()
os.unlink(conf)
os.rmdir(work)
finish()
