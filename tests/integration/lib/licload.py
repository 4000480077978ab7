#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Licensing load for tests/integration/licensing-load.sh.

  licload.py run --node NODE --devices N --threads T --out FILE
        Run inside a node (farm_exec NODE python3 licload.py run ...): N
        devices of that node, T at a time, each driven through the host's
        local API on /run/tsfarm/agent.sock as a session host would:
        obtain (a temporary token) -> logon (validates it) -> obtain
        presenting it (a Device CAL, or it keeps the temporary token on
        no-inventory). A device whose step did not get an answer that
        settles it (no license server answered, a transport error, grace)
        tries again, a bounded number of times with a short backoff: a real
        device reconnects. Writes FILE (JSON, atomically) at the end: every
        device's hardware id, the token it holds (text, id, kind, issuer),
        where it came from, and counts.

  licload.py reconnect --in FILE --out FILE
        Inside the same node, later: every device that holds only a
        temporary token connects once more presenting it (a device
        reconnects on its next session), as `run` would; the others keep
        what they hold (a valid CAL is not even presented: the host keeps
        it without asking a server). Writes the updated devices.

  licload.py analyse --devices FILE... --issued NAME=FILE... --packs NAME=FILE...
        On the test's side: cross-checks what the devices hold with both
        license servers' records (tsctl license issued/packs --json) and
        prints one JSON object of facts for the test to assert on.

The device's state is only what a client keeps: the token it was pushed.
"""

import argparse
import base64
import collections
import http.client
import json
import os
import queue
import random
import socket
import sys
import threading
import time

AGENT_SOCKET = "/run/tsfarm/agent.sock"
# The host holds a request at most 60 s (licclient.c REQUEST_TIMEOUT).
HTTP_TIMEOUT = 75


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def api(path, body):
    """POSTs body to the local API: (status, answer) or raises OSError /
    http.client.HTTPException / ValueError (not JSON)."""
    conn = UnixConnection(AGENT_SOCKET, HTTP_TIMEOUT)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read()
        return r.status, (json.loads(text) if text else None)
    finally:
        conn.close()


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_facts(text):
    """What a token says about itself (tsl1 body, docs/licensing.md), for
    the records: kind, token id, issuer key id, pack. Not a verification."""
    try:
        prefix, body, _sig = text.split(".")
        b = b64url(body)
        if prefix != "tsl1" or len(b) < 100 or b[0] != 1:
            return None
        n = b[98]
        return {
            "kind": {1: "temporary", 2: "device-cal"}.get(b[1], "?"),
            "token_id": b[2:18].hex(),
            "issuer_key_id": b[18:50].hex(),
            "expires_usec": int.from_bytes(b[90:98], "big"),
            "pack": b[99:99 + n].decode() if n else None,
        }
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n


class Device:
    def __init__(self, d):
        self.d = d

    def body(self, token=None):
        b = {"hardware_id": self.d["hardware_id"], "device_name": self.d["device_name"],
             "user_name": self.d["user_name"]}
        if token:
            b["token"] = token
        return b

    def hold(self, token, answer):
        f = token_facts(token)
        self.d.update(token=token, kind=f["kind"] if f else "?", token_id=f["token_id"] if f else None,
                      issuer_key_id=f["issuer_key_id"] if f else None, pack=f["pack"] if f else None,
                      server=answer.get("server"), lender=answer.get("lender"))
        if f and f["kind"] == "temporary":
            self.d.setdefault("temporaries", [])
            if f["token_id"] not in self.d["temporaries"]:
                self.d["temporaries"].append(f["token_id"])


def drive(dev, stats, max_tries, deadline, validated=False):
    """Drives one device until it holds a Device CAL, or a temporary token
    the license servers said no-inventory to; 'gave-up' after max_tries
    unsettled answers or at the deadline. validated: the temporary token it
    holds was validated already (reconnect)."""
    d = dev.d
    tries = 0

    def again(why):
        nonlocal tries
        tries += 1
        d["retries"] = d.get("retries", 0) + 1
        stats.add("retry")
        stats.add("retry:" + why)
        if tries >= max_tries or time.monotonic() >= deadline:
            d["outcome"] = "gave-up"
            d["why"] = why
            return False
        time.sleep(min(0.1 * tries, 1.0) * (0.5 + random.random()))
        return True

    def call(path, body):
        stats.add("call:" + path.rsplit("/", 1)[-1])
        try:
            return api(path, body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            stats.add("transport-error")
            return None, {"reason_code": "transport-error", "reason": str(e)}

    while True:
        token, kind = d.get("token"), d.get("kind")
        if token is None:
            st, a = call("/v1/license/obtain", dev.body())
            if st == 200 and a.get("decision") == "admit" and a.get("token"):
                dev.hold(a["token"], a)
                validated = False
                stats.add("temporary-obtained")
                continue
            if not again(f"obtain-new:{st}:{(a or {}).get('reason_code')}"):
                return
            continue
        if kind == "device-cal":
            d["outcome"] = "cal"
            d.pop("why", None)
            return
        if not validated:
            st, a = call("/v1/license/logon", dev.body(token))
            if st == 200 and a.get("validated"):
                validated = True
                continue
            if not again(f"logon:{st}:{(a or {}).get('reason_code')}"):
                return
            continue
        st, a = call("/v1/license/obtain", dev.body(token))
        code = (a or {}).get("reason_code")
        if st == 200 and a.get("decision") == "admit":
            if a.get("license") == "upgrade" and a.get("token"):
                dev.hold(a["token"], a)
                stats.add("cal-obtained")
                if a.get("lender"):
                    stats.add("cal-borrowed")
                continue
            if a.get("license") == "new-license" and a.get("token"):
                # The server said the presented token is done: a new one.
                dev.hold(a["token"], a)
                validated = False
                stats.add("temporary-replaced")
                continue
            if a.get("license") == "valid" and code == "no-inventory":
                d["outcome"] = "temporary"
                d["why"] = code
                stats.add("no-inventory")
                return
            if code == "not-validated":
                validated = False
        if not again(f"obtain-cal:{st}:{code}"):
            return


def cmd_run(args):
    start = time.monotonic()
    deadline = start + args.deadline
    stats = Stats()
    devices = []
    for i in range(args.devices):
        devices.append(Device({
            "node": args.node,
            "device_name": f"{args.node}-pc{i:04d}",
            "user_name": f"{args.node}-user{i:04d}",
            "hardware_id": os.urandom(32).hex(),
        }))
    work = queue.Queue()
    for dev in devices:
        work.put(dev)

    def worker():
        while True:
            try:
                dev = work.get_nowait()
            except queue.Empty:
                return
            drive(dev, stats, args.max_tries, deadline)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write(args.out, args.node, devices, stats, time.monotonic() - start)


def cmd_reconnect(args):
    start = time.monotonic()
    deadline = start + args.deadline
    with open(args.input) as f:
        prev = json.load(f)
    stats = Stats()
    devices = [Device(d) for d in prev["devices"]]
    work = queue.Queue()
    for dev in devices:
        if dev.d.get("kind") == "temporary":
            work.put(dev)
            stats.add("reconnected")

    def worker():
        while True:
            try:
                dev = work.get_nowait()
            except queue.Empty:
                return
            before = dev.d.get("token_id")
            drive(dev, stats, args.max_tries, deadline, validated=True)
            if dev.d.get("kind") == "device-cal":
                stats.add("reconnect-cal")
                dev.d["on_reconnect"] = before

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write(args.out, prev["node"], devices, stats, time.monotonic() - start)


def write(path, node, devices, stats, elapsed):
    out = {"node": node, "elapsed": round(elapsed, 3), "counts": dict(stats.c), "devices": [d.d for d in devices]}
    outcomes = collections.Counter(d.d.get("outcome", "none") for d in devices)
    out["summary"] = {
        "devices": len(devices),
        "cal": outcomes["cal"],
        "temporary": outcomes["temporary"],
        "gave_up": outcomes["gave-up"],
        "borrowed": sum(1 for d in devices if d.d.get("kind") == "device-cal" and d.d.get("lender")),
        "retries": stats.c["retry"],
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.rename(tmp, path)


# ---- analysis ----------------------------------------------------------------------


def named_files(specs):
    out = {}
    for s in specs:
        name, path = s.split("=", 1)
        with open(path) as f:
            out[name] = json.load(f)
    return out


def cmd_analyse(args):
    devices = []
    drivers = collections.Counter()
    retries = collections.Counter()
    for p in args.devices:
        with open(p) as f:
            doc = json.load(f)
        devices += doc["devices"]
        for k, v in doc["summary"].items():
            drivers[k] += v
        for k, v in doc["counts"].items():
            if k.startswith("retry:"):
                retries[k[6:]] += v
    for p in args.counts or ():
        with open(p) as f:
            for k, v in json.load(f)["counts"].items():
                if k.startswith("retry:"):
                    retries[k[6:]] += v
    issued = named_files(args.issued)
    packs = named_files(args.packs)
    now_usec = int(time.time() * 1e6)

    facts = {"drivers": dict(drivers), "retry_reasons": dict(retries)}
    # (a) every pack, every server.
    facts["packs"] = {n: [{k: p[k] for k in ("id", "count", "available", "issued")} for p in v["packs"]]
                      for n, v in packs.items()}
    facts["invariant_broken"] = [f"{n}/{p['id']}" for n, v in packs.items() for p in v["packs"]
                                 if p["available"] + p["issued"] != p["count"]]
    facts["installed"] = sum(p["count"] for v in packs.values() for p in v["packs"])
    facts["available"] = sum(p["available"] for v in packs.values() for p in v["packs"])
    facts["issued_per_packs"] = sum(p["issued"] for v in packs.values() for p in v["packs"])

    # (b) token ids: unique within and across servers.
    seen = collections.Counter()
    records = []
    for n, v in issued.items():
        for t in v["tokens"]:
            seen[t["token_id"]] += 1
            records.append((n, t))
    facts["records"] = len(records)
    facts["duplicate_token_ids"] = sorted(k for k, c in seen.items() if c > 1)

    # (c) at most one active CAL per device, across both servers.
    active = [(n, t) for n, t in records if t["kind"] == "device-cal" and t["state"] == "active"]
    by_hw = collections.defaultdict(list)
    for n, t in active:
        by_hw[t["hardware_id"].lower()].append(f"{n}:{t['token_id']}")
    facts["active_cals"] = len(active)
    facts["active_cals_by_server"] = {n: sum(1 for m, _ in active if m == n) for n in issued}
    facts["devices_with_several_cals"] = {h: v for h, v in by_hw.items() if len(v) > 1}
    facts["lent"] = sum(1 for _, t in active if t.get("lent_to"))
    facts["states"] = dict(collections.Counter(f"{n}:{t['kind']}:{t['state']}" for n, t in records))

    # (d, e) what the devices hold against the records.
    rec_by_id = {t["token_id"]: (n, t) for n, t in records}
    cal_devices = [d for d in devices if d.get("kind") == "device-cal"]
    tmp_devices = [d for d in devices if d.get("kind") == "temporary"]
    held_cal_ids = [d["token_id"] for d in cal_devices]
    facts["devices"] = len(devices)
    facts["held_cals"] = len(cal_devices)
    facts["held_cals_distinct"] = len(set(held_cal_ids))
    facts["held_borrowed"] = sum(1 for d in cal_devices if d.get("lender"))
    facts["held_temporary"] = len(tmp_devices)
    facts["held_nothing"] = [d["device_name"] for d in devices if d.get("kind") not in ("device-cal", "temporary")]
    facts["gave_up"] = [f"{d['device_name']}: {d.get('why')}" for d in devices if d.get("outcome") == "gave-up"]
    bad = []
    for d in cal_devices:
        r = rec_by_id.get(d["token_id"])
        if not r:
            bad.append(f"{d['device_name']}: CAL {d['token_id']} in no server's records")
        elif r[1]["kind"] != "device-cal" or r[1]["state"] != "active":
            bad.append(f"{d['device_name']}: CAL {d['token_id']} is {r[1]['kind']}/{r[1]['state']} at {r[0]}")
        elif r[1]["hardware_id"].lower() != d["hardware_id"].lower():
            bad.append(f"{d['device_name']}: CAL {d['token_id']} recorded for another device")
        elif (r[1].get("lent_to") is not None) != (d.get("lender") is not None):
            bad.append(f"{d['device_name']}: CAL {d['token_id']} lender {d.get('lender')} vs lent_to "
                       f"{r[1].get('lent_to')} at {r[0]}")
    facts["held_cals_not_matching_records"] = bad
    held = set(held_cal_ids)
    facts["stranded_cals"] = [f"{n}:{t['token_id']}:{t['device_name']}" for n, t in active
                              if t["token_id"] not in held]
    # (f) temporary-only devices: a live, validated temporary record, theirs.
    bad = []
    for d in tmp_devices:
        r = rec_by_id.get(d["token_id"])
        if not r:
            bad.append(f"{d['device_name']}: temporary {d['token_id']} in no server's records")
            continue
        n, t = r
        if t["kind"] != "temporary" or t["state"] != "temporary-validated" or \
                t["hardware_id"].lower() != d["hardware_id"].lower() or t["expires_usec"] <= now_usec:
            bad.append(f"{d['device_name']}: temporary {d['token_id']} is {t['kind']}/{t['state']} at {n}")
        if d["hardware_id"].lower() in by_hw:
            bad.append(f"{d['device_name']}: holds a temporary token but has an active CAL "
                       f"{by_hw[d['hardware_id'].lower()]}")
    facts["temporaries_not_valid"] = bad
    print(json.dumps(facts, indent=1))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--node", required=True)
    r.add_argument("--devices", type=int, default=250)
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--max-tries", type=int, default=60)
    r.add_argument("--deadline", type=float, default=100, help="seconds")
    r.add_argument("--out", required=True)
    r = sub.add_parser("reconnect")
    r.add_argument("--in", dest="input", required=True)
    r.add_argument("--threads", type=int, default=4)
    r.add_argument("--max-tries", type=int, default=20)
    r.add_argument("--deadline", type=float, default=30, help="seconds")
    r.add_argument("--out", required=True)
    r = sub.add_parser("analyse")
    r.add_argument("--devices", nargs="+", required=True)
    r.add_argument("--issued", nargs="+", required=True, help="NAME=FILE")
    r.add_argument("--packs", nargs="+", required=True, help="NAME=FILE")
    r.add_argument("--counts", nargs="*", help="more drivers' files whose retries count too")
    args = ap.parse_args()
    {"run": cmd_run, "reconnect": cmd_reconnect, "analyse": cmd_analyse}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
