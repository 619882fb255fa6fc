#!/usr/bin/env python3
"""Drive the side-by-side load benchmark (started by benches/load/run.sh).

Both proxies and the backend are already running; this script drives the
scenarios, alternating the proxies round by round (Gatehouse, Nginx,
Gatehouse, Nginx, ...), measures each proxy's own CPU time (utime + stime of
every process of the proxy, from /proc/PID/stat) and RSS (sum of VmRSS,
sampled every 100 ms), and writes latest.md, latest.json and latest.svg.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------- processes


def proc_children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Proxy:
    def __init__(self, name, pid, http_port, https_port, tree):
        self.name = name
        self.pid = pid
        self.http_port = http_port
        self.https_port = https_port
        self.tree = tree  # True: master + workers (Nginx)

    def pids(self):
        return [self.pid] + (proc_children(self.pid) if self.tree else [])

    def alive(self):
        return os.path.exists(f"/proc/{self.pid}/stat")

    def cpu_ticks(self):
        return sum(self.cpu_split())

    def cpu_split(self):
        """(utime, stime) in ticks, summed over the proxy's processes."""
        user = system = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # fields[0] is state (field 3); utime is field 14, stime 15
                user += int(fields[11])
                system += int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return user, system

    def status_kb(self, key):
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1])
            except (OSError, ValueError):
                pass
        return total

    def rss_kb(self):
        return self.status_kb("VmRSS")

    def fds(self):
        n = 0
        for p in self.pids():
            try:
                n += len(os.listdir(f"/proc/{p}/fd"))
            except OSError:
                pass
        return n


def machine_busy_ticks():
    """Busy jiffies of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def pid_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler(threading.Thread):
    def __init__(self, proxy, interval=0.1):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.interval = interval
        self.peak = proxy.rss_kb()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.interval):
            self.peak = max(self.peak, self.proxy.rss_kb())

    def stop(self):
        self._halt.set()
        self.join()
        self.peak = max(self.peak, self.proxy.rss_kb())
        return self.peak


# ---------------------------------------------------------------- parsers

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"bad latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[key] = to_ms(m.group(1)) if m else None
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m and int(m.group(1)):
        errors["non_2xx_3xx"] = int(m.group(1))
    r["errors"] = errors
    return r


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def parse_h2load(out, log_file):
    r = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    r["requests"] = done
    errors = {}
    for k, v in (("failed", failed), ("errored", errored), ("timeout", timeout)):
        if v:
            errors[k] = v
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        for k, v in zip(("3xx", "4xx", "5xx"), map(int, m.groups()[1:])):
            if v:
                errors[k] = v
    r["errors"] = errors
    m = re.search(r"time to 1st byte:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    r["ttfb_mean_ms"] = to_ms(m.group(3)) if m else None
    lat = sorted(read_h2load_log(log_file))
    r["p50_ms"] = percentile(lat, 0.50)
    r["p99_ms"] = percentile(lat, 0.99)
    return r


def read_h2load_log(log_file):
    """Per-request latencies in ms from h2load --log-file (start, status, duration in us)."""
    lat = []
    try:
        with open(log_file) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000.0)
    except OSError:
        pass
    return lat


def handshake_loop(a, proxy, dur, log_prefix):
    """Back-to-back `h2load --h1 -cN -nN` runs for `dur` seconds: every h2load client opens
    one connection with a fresh SSL object (no session to resume: a full handshake) and
    sends one request on it. Returns (command, parsed round)."""
    url = f"https://localhost:{proxy.https_port}/small.txt"
    base = ["h2load", "--h1", "-t1", f"-c{a.hs_conns}", f"-n{a.hs_conns}"]
    t0 = time.monotonic()
    done, runs, lat, errors, ttfb = 0, 0, [], {}, []
    while time.monotonic() - t0 < dur:
        log_file = f"{log_prefix}-{runs}.log"
        res = subprocess.run(base + ["--log-file", log_file, url], capture_output=True,
                             text=True, timeout=120)
        runs += 1
        try:
            r = parse_h2load(res.stdout, log_file)
        except (AttributeError, ValueError) as e:
            errors["h2load_output"] = errors.get("h2load_output", 0) + 1
            errors["last"] = f"{e}: {res.stdout[-300:]} {res.stderr[-300:]}"
            continue
        finally:
            lat.extend(read_h2load_log(log_file))
            if os.path.exists(log_file):
                os.remove(log_file)
        done += r["requests"]
        if r.get("ttfb_mean_ms") is not None:
            ttfb.append((r["ttfb_mean_ms"], r["requests"]))
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    wall = time.monotonic() - t0
    lat.sort()
    parsed = dict(requests=done, rps=done / wall if wall else 0.0, h2load_runs=runs,
                  p50_ms=percentile(lat, 0.50), p99_ms=percentile(lat, 0.99), errors=errors,
                  ttfb_mean_ms=(sum(t * n for t, n in ttfb) / sum(n for _, n in ttfb)
                                if ttfb and sum(n for _, n in ttfb) else None))
    return " ".join(base + [url]) + f"  (repeated for {dur}s)", parsed


# ---------------------------------------------------------------- scenarios


def scenarios(a):
    d = a.duration
    wrk = ["wrk", f"-t{a.wrk_threads}", f"-c{a.conns}", f"-d{d}s", "--latency"]
    h2 = ["h2load", "-t1", f"-c{a.h2_clients}", f"-m{a.h2_streams}", f"-D{d}"]
    return [
        dict(id=1, key="api_http1", name="/api/ proxied, HTTP/1.1 keep-alive, plain",
             tool="wrk", cmd=lambda p, dur=d: wrk_cmd(wrk, dur) +
             [f"http://127.0.0.1:{p.http_port}/api/hello"]),
        dict(id=2, key="api_https_http1", name="/api/ proxied, HTTP/1.1 keep-alive, TLS",
             tool="wrk", cmd=lambda p, dur=d: wrk_cmd(wrk, dur) +
             [f"https://localhost:{p.https_port}/api/hello"]),
        dict(id=3, key="api_h2", name=f"/api/ proxied, HTTP/2 TLS, {a.h2_clients} conns x "
             f"{a.h2_streams} streams", tool="h2load",
             cmd=lambda p, dur=d: h2_cmd(h2, dur) +
             [f"https://localhost:{p.https_port}/api/hello"]),
        dict(id=4, key="static_1k", name="static 1 KiB file, HTTP/1.1 keep-alive, plain",
             tool="wrk", cmd=lambda p, dur=d: wrk_cmd(wrk, dur) +
             [f"http://127.0.0.1:{p.http_port}/small.txt"]),
        dict(id=5, key="static_1m", name="static 1 MiB file, HTTP/1.1 keep-alive, plain",
             tool="wrk", cmd=lambda p, dur=d: wrk_cmd(wrk, dur) +
             [f"http://127.0.0.1:{p.http_port}/large.bin"]),
        dict(id=6, key="tls_full_handshake", name="new TLS connection per request, full "
             f"handshake (HTTP/1.1, 1 KiB file, {a.hs_conns} connections per h2load run)",
             tool="h2load loop", cmd=None),
        dict(id=8, key="tls_resumed", name="new TLS connection per request, session resumed "
             "(TLS 1.3 PSK; HTTP/1.1 `Connection: close`, 1 KiB file)", tool="wrk",
             cmd=lambda p, dur=d: wrk_cmd(wrk, dur) + ["-H", "Connection: close",
                                                       f"https://localhost:{p.https_port}/small.txt"]),
        dict(id=7, key="idle_10k", name=f"{a.idle_conns} idle keep-alive connections (RSS)",
             tool="idle_conns.py", cmd=None),
        dict(id=9, key="idle_10k_h2", name=f"{a.idle_conns} idle HTTP/2 TLS connections (RSS)",
             tool="idle_client.py h2", cmd=None),
    ]


# The idle scenarios: RSS per idle connection, each after one answered request.
IDLE_IDS = (7, 9)


def idle_rounds(a, sc_id):
    """Rounds per proxy of an idle scenario (10k TLS handshakes take a while: 9 has its own)."""
    return getattr(a, "idle_h2_rounds", 1) if sc_id == 9 else a.idle_rounds


def wrk_cmd(base, dur):
    return [x if not x.startswith("-d") else f"-d{dur}s" for x in base]


def h2_cmd(base, dur):
    return [x if not x.startswith("-D") else f"-D{dur}" for x in base]


def run_load(a, sc, proxy, dur, log_file):
    cmd = sc["cmd"](proxy, dur)
    if sc["tool"] == "h2load":
        cmd = cmd[:-1] + ["--log-file", log_file] + cmd[-1:]
    return cmd, subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60)


def one_round(a, sc, proxy, rnd):
    log_file = os.path.join(a.work, f"h2load-{sc['key']}-{proxy.name}-{rnd}.log")
    rss = RssSampler(proxy)
    backend = Proxy("backend", a.backend_pid, 0, 0, tree=True) if a.backend_pid else None
    split0 = proxy.cpu_split()
    ticks0 = sum(split0)
    back0 = backend.cpu_ticks() if backend else 0
    busy0 = machine_busy_ticks()
    tool0 = os.times()
    self0 = pid_ticks(os.getpid())
    t0 = time.monotonic()
    rss.start()
    if sc["tool"] == "h2load loop":
        cmd, loop_parsed = handshake_loop(a, proxy, a.duration, log_file)
        res = subprocess.CompletedProcess(cmd, 0, "", "")
    else:
        cmd, res = run_load(a, sc, proxy, a.duration, log_file)
    elapsed = time.monotonic() - t0
    split1 = proxy.cpu_split()
    ticks1 = sum(split1)
    peak = rss.stop()
    back1 = backend.cpu_ticks() if backend else 0
    busy1 = machine_busy_ticks()
    tool1 = os.times()
    self1 = pid_ticks(os.getpid())
    tool_s = (tool1.children_user + tool1.children_system
              - tool0.children_user - tool0.children_system)
    other_s = ((busy1 - busy0) - (ticks1 - ticks0) - (back1 - back0)
               - (self1 - self0)) / CLK_TCK - tool_s
    cpu_share = dict(cpu_user_s=(split1[0] - split0[0]) / CLK_TCK,
                     cpu_sys_s=(split1[1] - split0[1]) / CLK_TCK,
                     tool_cpu_s=round(tool_s, 3),
                     backend_cpu_s=round((back1 - back0) / CLK_TCK, 3),
                     other_cpu_pct=round(max(0.0, other_s) / (elapsed * NCPU) * 100, 1))
    rec = dict(scenario=sc["id"], key=sc["key"], proxy=proxy.name, round=rnd,
               cmd=cmd if isinstance(cmd, str) else " ".join(cmd), wall_s=round(elapsed, 3))
    try:
        if sc["tool"] == "h2load loop":
            parsed = loop_parsed
        elif sc["tool"] == "h2load":
            parsed = parse_h2load(res.stdout, log_file)
        else:
            parsed = parse_wrk(res.stdout)
    except (AttributeError, ValueError) as e:
        rec.update(failed=f"cannot parse output ({e}); rc={res.returncode}",
                   stdout=res.stdout[-2000:], stderr=res.stderr[-2000:])
        return rec
    finally:
        if os.path.exists(log_file):
            os.remove(log_file)
    cpu_s = (ticks1 - ticks0) / CLK_TCK
    rec.update(parsed)
    rec.update(cpu_share)
    rec.update(cpu_s=cpu_s,
               cpu_s_per_10k=(cpu_s / parsed["requests"] * 10000) if parsed["requests"] else None,
               peak_rss_kb=peak)
    if res.returncode != 0:
        rec["rc"] = res.returncode
        rec["stderr"] = res.stderr[-2000:]
    return rec


def idle_round(a, sc, proxy, rnd):
    """Scenario 7 (plain HTTP/1.1, idle_conns.py) or 9 (TLS with ALPN h2, the h2 mode of
    benches/instructions/idle_client.py): open the connections, one request each, hold them."""
    base = proxy.rss_kb()
    base_fds = proxy.fds()
    t0 = time.monotonic()
    if sc["id"] == 9:
        cmd = [sys.executable, os.path.join(HERE, "..", "instructions", "idle_client.py"), "h2",
               "127.0.0.1", str(proxy.https_port), "/index.html", str(a.idle_conns)]
    else:
        cmd = [sys.executable, os.path.join(HERE, "idle_conns.py"), "127.0.0.1",
               str(proxy.http_port), "/index.html", str(a.idle_conns)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    rec = dict(scenario=sc["id"], key=sc["key"], proxy=proxy.name, round=rnd,
               rss_base_kb=base, fds_base=base_fds)
    try:
        line = p.stdout.readline()
        m = re.match(r"READY (\d+) (\d+)", line or "")
        if not m:
            p.kill()
            rec["failed"] = f"no READY line: {line!r} {p.stderr.read()[-2000:]}"
            return rec
        opened, failed = int(m.group(1)), int(m.group(2))
        rec["open_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1.0)
        samples = []
        for _ in range(5):
            samples.append(proxy.rss_kb())
            time.sleep(0.2)
        rss = max(samples)
        fds = proxy.fds()
        out, err = p.communicate(timeout=60)  # closes stdin: the client lets go
        m = re.search(r"closed_by_peer=(\d+)", out)
        rec.update(opened=opened, failed_conns=failed, rss_kb=rss, peak_rss_kb=rss,
                   fds_loaded=fds,
                   kb_per_conn=(rss - base) / opened if opened else None,
                   closed_by_peer=int(m.group(1)) if m else None)
        if err.strip():
            rec["stderr"] = err[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
    time.sleep(1.0)
    rec["rss_after_close_kb"] = proxy.rss_kb()
    return rec


def perf_report(data, args, limit):
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio"] + args,
                         capture_output=True, text=True, timeout=600)
    lines = []
    for line in rep.stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lines.append(re.sub(r"\s+(-\s+)*$", "", line)[:220])
    return "\n".join(lines[:limit])


def syscalls_per_request(a, sc, proxy, dur):
    """perf stat of syscalls and context switches of the proxy's processes under load."""
    pids = proxy.pids()
    if proxy.tree and len(pids) > 1:
        pids = pids[1:]  # the workers; the master sleeps
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e",
                             "raw_syscalls:sys_enter,context-switches", "-p",
                             ",".join(map(str, pids)), "--", "sleep", str(dur)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.1)
    _, res = run_load(a, sc, proxy, dur + 1, os.path.join(a.work, "perf-h2.log"))
    _, err = stat.communicate(timeout=60)
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            counts[parts[2]] = int(parts[0])
    try:
        rps = parse_wrk(res.stdout)["rps"] if sc["tool"] == "wrk" else None
    except (AttributeError, ValueError):
        rps = None
    if not rps or "raw_syscalls:sys_enter" not in counts:
        return f"{proxy.name}: could not count syscalls ({err.strip()[-300:]})"
    reqs = rps * dur
    return (f"{proxy.name}: {counts['raw_syscalls:sys_enter'] / reqs:.2f} syscalls and "
            f"{counts.get('context-switches', 0) / reqs:.3f} context switches per request "
            f"(at {rps:,.0f} req/s)")


def profile(a, sc, gh, ngx):
    """perf record (DWARF call graphs) of Gatehouse while the scenario's load runs."""
    data = os.path.join(a.work, f"perf-s{sc['id']}.data")
    dur = a.profile_duration
    rec_cmd = ["perf", "record", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,16384",
               "-p", str(gh.pid), "-o", data, "--", "sleep", str(dur)]
    perf = subprocess.Popen(rec_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    cmd, res = run_load(a, sc, gh, dur + 1, os.path.join(a.work, "perf-h2.log"))
    _, perr = perf.communicate(timeout=120)
    if perf.returncode != 0 or not os.path.exists(data):
        return f"perf record failed: {perr.strip()[-500:]}"
    sections = [
        ("self time by symbol (--no-children)",
         perf_report(data, ["--no-children", "--sort", "symbol", "-g", "none",
                            "--percent-limit", "0.4"], 60)),
        ("self time by shared object",
         perf_report(data, ["--no-children", "--sort", "dso", "-g", "none"], 15)),
        ("inclusive time (--children; call graphs from DWARF unwinding)",
         perf_report(data, ["--children", "--sort", "symbol", "-g", "none",
                            "--percent-limit", "2"], 90)),
    ]
    sys_lines = [syscalls_per_request(a, sc, p, 2) for p in (gh, ngx)]
    path = os.path.join(a.results, f"perf-s{sc['id']}-{sc['key']}.txt")
    cmd_text = " ".join(rec_cmd).replace(str(gh.pid), "<gatehouse pid>").replace(a.work, "$WORK")
    with open(path, "w") as f:
        f.write(f"# {cmd_text}\n# load: {' '.join(cmd)}\n# load tool output:\n")
        f.write("".join("#   " + l + "\n" for l in res.stdout.splitlines()))
        f.write("# perf stat -e raw_syscalls:sys_enter,context-switches (2 s, same load):\n")
        f.write("".join("#   " + l + "\n" for l in sys_lines))
        f.write("\n" + "\n\n".join(f"## {t}\n\n{body}" for t, body in sections) + "\n")
    os.remove(data)
    return os.path.relpath(path, a.results)


# ---------------------------------------------------------------- summary


def stats(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    return dict(median=statistics.median(vals), min=vals[0], max=vals[-1],
                q1=percentile(vals, 0.25), q3=percentile(vals, 0.75), n=len(vals))


def paired_ratios(records, sc_id):
    """Gatehouse / Nginx of each round taken on its own (round k of one against round k of
    the other, run back to back), then the median and spread of those ratios. The machine's
    speed drifts between rounds by more than the proxies differ; a pair shares its moment
    (but not a change within it)."""
    by_round = {}
    for r in records:
        if r["scenario"] == sc_id and "failed" not in r:
            by_round.setdefault(r["round"], {})[r["proxy"]] = r
    out = {}
    for k in ("rps", "cpu_s_per_10k"):
        out[k] = stats([p["gatehouse"][k] / p["nginx"][k] for p in by_round.values()
                        if "gatehouse" in p and "nginx" in p
                        and p["gatehouse"].get(k) and p["nginx"].get(k)])
    return out


def summarize(records, scs):
    summary = {}
    for sc in scs:
        per = {}
        for name in ("gatehouse", "nginx"):
            rs = [r for r in records if r["scenario"] == sc["id"] and r["proxy"] == name]
            ok = [r for r in rs if "failed" not in r]
            s = dict(rounds=len(rs), failed_rounds=len(rs) - len(ok))
            if sc["id"] in IDLE_IDS:
                ok.sort(key=lambda r: r["round"])
                s["rss_start_kb"] = ok[0]["rss_base_kb"] if ok else None
                s["rss_rounds_kb"] = [r.get("rss_kb") for r in ok]
                s["peak_rss_kb"] = max((r.get("rss_kb") or 0 for r in ok), default=None)
                s["rss_after_close_kb"] = ok[-1].get("rss_after_close_kb") if ok else None
                s["opened"] = [r.get("opened") for r in ok]
                s["kb_per_conn"] = ((s["peak_rss_kb"] - s["rss_start_kb"]) / max(ok[0]["opened"], 1)
                                    if ok and ok[0].get("opened") else None)
                s["closed_by_peer"] = sum(r.get("closed_by_peer") or 0 for r in ok)
                s["failed_conns"] = sum(r.get("failed_conns") or 0 for r in ok)
            else:
                for k in ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k"):
                    s[k] = stats([r.get(k) for r in ok])
                s["peak_rss_kb"] = max((r.get("peak_rss_kb") or 0 for r in ok), default=None)
                s["other_cpu_pct"] = stats([r.get("other_cpu_pct") for r in ok])
                s["sys_pct"] = stats([100 * r["cpu_sys_s"] / r["cpu_s"] for r in ok
                                      if r.get("cpu_s") and "cpu_sys_s" in r])
                errs = {}
                for r in ok:
                    for k, v in (r.get("errors") or {}).items():
                        errs[k] = errs.get(k, 0) + v
                s["errors"] = errs
                s["requests"] = sum(r.get("requests") or 0 for r in ok)
            per[name] = s
        ratio = {}
        g, n = per["gatehouse"], per["nginx"]

        def rat(x, y):
            return (x / y) if (x is not None and y) else None
        if sc["id"] in IDLE_IDS:
            ratio["peak_rss_kb"] = rat(g["peak_rss_kb"], n["peak_rss_kb"])
            # Nginx's growth is ~0 (preallocated): a ratio would only measure noise
            if (n["kb_per_conn"] or 0) >= 0.5:
                ratio["kb_per_conn"] = rat(g["kb_per_conn"], n["kb_per_conn"])
            else:
                ratio["kb_per_conn"] = None
        else:
            for k in ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k"):
                ratio[k] = rat(g[k] and g[k]["median"], n[k] and n[k]["median"])
            ratio["peak_rss_kb"] = rat(g["peak_rss_kb"], n["peak_rss_kb"])
            ratio["paired"] = paired_ratios(records, sc["id"])
        summary[sc["key"]] = dict(id=sc["id"], key=sc["key"], name=sc["name"], tool=sc["tool"],
                                  gatehouse=g, nginx=n, ratio=ratio)
    return summary


def fmt(v, digits=2):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def fr(v):
    return "–" if v is None else f"**{v:.2f}×**"


def mm(s, digits=2):
    if not s:
        return "–"
    return f"{fmt(s['min'], digits)}–{fmt(s['max'], digits)}"


def med(s, digits=2):
    return "–" if not s else fmt(s["median"], digits)


def pair_text(s):
    return "–" if not s else f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def errs_text(e):
    if not e:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in sorted(e.items()))


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def out(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    rev = out(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    return dict(nproc=os.cpu_count(), cpu=model, kernel=platform.release(),
                nginx=out(["nginx", "-v"]), wrk=out(["wrk", "-v"]),
                h2load=out(["h2load", "--version"]),
                gatehouse=f"{rev}{' + uncommitted changes in src/' if dirty else ''}")


def log_summary(path, limit=8):
    """Counts of a proxy's log lines by kind (addresses, ports and request ids masked)."""
    kinds = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = re.sub(r"^\[[^]]*\]\s*|^\d{4}/\d\d/\d\d \S+ ", "", line.strip())
                line = re.sub(r"\d+#\d+: \*\d+ ", "", line)
                line = re.sub(r"127\.0\.0\.1:\d+|localhost:\d+", "ADDR", line)
                line = re.sub(r", (Host|client|server|request|host|upstream):.*", "", line)
                line = line.replace("Peer: addr: ADDR, scheme: HTTP cause:  context: ", "")
                kinds[line[:200]] = kinds.get(line[:200], 0) + 1
    except OSError:
        return []
    return sorted(kinds.items(), key=lambda kv: -kv[1])[:limit]


def markdown(meta, summary, a, profiles):
    m = meta["machine"]
    L = []
    L.append("# Gatehouse vs Nginx — load benchmark\n")
    L.append(f"- date: {meta['date']}")
    L.append(f"- machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}")
    L.append(f"- gatehouse {m['gatehouse']}; {m['nginx']}; {m['wrk']}; {m['h2load']}")
    L.append(f"- settings: ROUNDS={a.rounds} DURATION={a.duration}s WARMUP={a.warmup}s "
             f"WORKERS={a.workers} (Gatehouse `server.threads` = Nginx `worker_processes`), "
             f"wrk -t{a.wrk_threads} -c{a.conns}, h2load -t1 -c{a.h2_clients} -m{a.h2_streams}, "
             f"IDLE_CONNS={a.idle_conns}; backend: a separate 1-worker Nginx `return 200` "
             f"shared by both; nothing pinned; all on 127.0.0.1")
    L.append("- rounds alternate Gatehouse, Nginx, Gatehouse, Nginx, …; values are medians "
             "over rounds, spread is min–max over rounds; ratio = Gatehouse / Nginx "
             "(req/s: higher is better; latency, CPU, RSS: lower is better); the CPU ratio of "
             "round pairs is Gatehouse's round k over Nginx's round k (run back to back), "
             "median and min–max over the pairs: less moved by the machine's drift "
             "between rounds than the ratio of the two medians, more by a change within a "
             "pair (see benches/load/README.md)")
    L.append("- CPU = utime+stime of the proxy's processes (Gatehouse: the process; "
             "Nginx: master + workers) over the round, per 10k requests; RSS = sum of VmRSS, "
             "sampled every 100 ms, peak over all rounds")
    L.append("- other load = CPU used by processes other than the proxy, the backend and the "
             "load tool during the round, in % of all CPUs (median over rounds): the shared "
             f"machine's background noise; load average at start / end: {meta.get('loadavg')}\n")

    L.append("## Throughput and latency\n")
    L.append("| # | scenario | Gatehouse req/s (min–max) | Nginx req/s (min–max) | req/s ratio "
             "| p50 ms G / N | p50 ratio | p99 ms G / N (G min–max) | p99 ratio |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in summary.values():
        if s["id"] in IDLE_IDS:
            continue
        g, n, r = s["gatehouse"], s["nginx"], s["ratio"]
        L.append(f"| {s['id']} | {s['name']} ({s['tool']}) "
                 f"| {med(g['rps'])} ({mm(g['rps'])}) | {med(n['rps'])} ({mm(n['rps'])}) "
                 f"| {fr(r['rps'])} | {med(g['p50_ms'], 3)} / {med(n['p50_ms'], 3)} "
                 f"| {fr(r['p50_ms'])} | {med(g['p99_ms'], 3)} / {med(n['p99_ms'], 3)} "
                 f"({mm(g['p99_ms'], 3)}) | {fr(r['p99_ms'])} |")
    L.append("")
    L.append("## Cost\n")
    L.append("| # | CPU s / 10k req G (min–max) | CPU s / 10k req N (min–max) | CPU ratio "
             "| CPU ratio of round pairs (min–max) "
             "| kernel % of CPU G / N | peak RSS MiB G / N | RSS ratio | errors G | errors N "
             "| other load % G / N |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary.values():
        if s["id"] in IDLE_IDS:
            continue
        g, n, r = s["gatehouse"], s["nginx"], s["ratio"]
        grss = g["peak_rss_kb"] and g["peak_rss_kb"] / 1024
        nrss = n["peak_rss_kb"] and n["peak_rss_kb"] / 1024
        fail = ""
        if g["failed_rounds"] or n["failed_rounds"]:
            fail = f" (failed rounds G {g['failed_rounds']}, N {n['failed_rounds']})"
        L.append(f"| {s['id']} | {med(g['cpu_s_per_10k'], 3)} ({mm(g['cpu_s_per_10k'], 3)}) "
                 f"| {med(n['cpu_s_per_10k'], 3)} ({mm(n['cpu_s_per_10k'], 3)}) "
                 f"| {fr(r['cpu_s_per_10k'])} "
                 f"| {pair_text(r.get('paired', {}).get('cpu_s_per_10k'))} "
                 f"| {med(g.get('sys_pct'), 0)} / {med(n.get('sys_pct'), 0)} "
                 f"| {fmt(grss, 1)} / {fmt(nrss, 1)} "
                 f"| {fr(r['peak_rss_kb'])} | {errs_text(g['errors'])}{fail} "
                 f"| {errs_text(n['errors'])} "
                 f"| {med(g.get('other_cpu_pct'), 0)} / {med(n.get('other_cpu_pct'), 0)} |")
    L.append("")
    for key, how in (("idle_10k", "over plain HTTP/1.1 and then idles (keep-alive timeout 75 s "
                                  "on both)"),
                     ("idle_10k_h2", "over TLS with ALPN h2 (one stream, answered in full) and "
                                     "then idles (HTTP/2 idle: no timeout below 75 s on either)")):
        idle = summary.get(key)
        if not idle:
            continue
        g, n, r = idle["gatehouse"], idle["nginx"], idle["ratio"]
        L.append(f"## {idle['id']}. {idle['name']}\n")
        L.append(f"Each connection sent one `GET /index.html` {how}; RSS (sum of VmRSS; Nginx "
                 "master + worker) "
                 f"measured 1 s after all were open; {idle_rounds(a, idle['id'])} round(s) per proxy, "
                 "each opening fresh connections after the previous ones were closed (RST). "
                 "KiB per connection = (peak RSS − RSS before the first round) / connections.\n")
        L.append("| proxy | conns per round | RSS before (MiB) | RSS with conns, round by round (MiB) "
                 "| KiB per connection | RSS after last close (MiB) | closed by proxy while idle "
                 "| failed to open |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, s in (("Gatehouse", g), ("Nginx", n)):
            mib = lambda kb: fmt(kb and kb / 1024, 1)  # noqa: E731
            L.append(f"| {name} | {' / '.join(str(x) for x in s.get('opened') or [])} "
                     f"| {mib(s.get('rss_start_kb'))} "
                     f"| {' → '.join(mib(x) for x in s.get('rss_rounds_kb') or [])} "
                     f"| {fmt(s.get('kb_per_conn'), 2)} | {mib(s.get('rss_after_close_kb'))} "
                     f"| {s.get('closed_by_peer')} | {s.get('failed_conns')} |")
        kpc = r.get("kb_per_conn")
        kpc_text = fr(kpc) if kpc is not None and (n.get("kb_per_conn") or 0) >= 0.5 else \
            "Nginx ≈ 0 (connection structs preallocated at start, buffers freed while idle)"
        L.append(f"| **ratio** | | | peak {fr(r.get('peak_rss_kb'))} | {kpc_text} "
                 "| | | |")
        L.append("")
    L.append("## Scenario notes\n")
    L.append("- 1, 4, 5: wrk over plain HTTP/1.1 keep-alive. 2: wrk over TLS (wrk offers no ALPN, "
             "so HTTP/1.1). 3: h2load over TLS with ALPN h2; p50/p99 from h2load's per-request "
             "`--log-file`.")
    L.append(f"- 6: `h2load --h1 -t1 -c{a.hs_conns} -n{a.hs_conns}` run back to back for the "
             "round: each h2load client makes one connection with a fresh SSL object (nothing to "
             "resume, so a full TLS 1.3 handshake: X25519 + ECDSA P-256 certificate) and sends one "
             "request; req/s = full handshakes/s including the gaps between h2load runs. The "
             "single-threaded client does the costlier half of each handshake, so throughput here "
             "is mostly client-bound: compare CPU per request. p50/p99 are of the request sent "
             "after the handshake (h2load `--log-file`); the mean time to first byte (connect + "
             "handshake + request) is in latest.json (`ttfb_mean_ms`).")
    L.append("- 8: wrk with `Connection: close` over https: the proxy closes after each response "
             "and wrk reconnects on the same SSL object, which keeps the session, so every "
             "connection after the first resumes it (TLS 1.3 PSK, no certificate signature; "
             "checked with Nginx's `$ssl_session_reused` = `r` for all but the first per wrk "
             "connection, and Gatehouse resumes with `openssl s_client -sess_in` too).")
    L.append("- CPU seconds include everything the proxy did during the round (accepts, TLS, "
             "static file reads, upstream I/O).")
    logs = meta.get("logs") or {}
    if any(logs.values()):
        L.append("\n## Proxy log lines during the run\n")
        L.append("Connections and streams cut by wrk/h2load when a round ends show up here; "
                 "anything else deserves a look.\n")
        for name, kinds in logs.items():
            for text, count in kinds:
                L.append(f"- {name}: {count} × `{text.replace('`', chr(39))}`")
    if profiles:
        L.append("\n## Profiles\n")
        for p in profiles:
            L.append(f"- {p}")
    L.append("")
    return "\n".join(L)


def svg(summary, path):
    groups = []
    for s in summary.values():
        r = s["ratio"]
        if s["id"] in IDLE_IDS:
            bars = [("RSS", r.get("peak_rss_kb")), ("KiB/conn", r.get("kb_per_conn"))]
        else:
            bars = [("req/s", r.get("rps")), ("CPU/req", r.get("cpu_s_per_10k")),
                    ("p99", r.get("p99_ms"))]
        groups.append((f"{s['id']}. {s['key']}", bars))
    colors = {"req/s": "#2b7bb9", "CPU/req": "#e07b39", "p99": "#8c6bb1", "RSS": "#3a9b5c",
              "KiB/conn": "#9fd3a8"}
    vals = [v for _, bars in groups for _, v in bars if v is not None]
    cap = 4.0  # bars above this are cut (value printed on them), so the rest stay readable
    vmax = min(cap, max([1.2] + [v * 1.1 for v in vals]))
    W, H = 900, 460
    left, right, top, bottom = 60, 20, 50, 110
    ph = H - top - bottom
    pw = W - left - right
    gw = pw / max(1, len(groups))

    def y(v):
        return top + ph - v / vmax * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16">'
           'Gatehouse / Nginx ratio per scenario (median over rounds)</text>',
           f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">req/s: higher is better; '
           'CPU per request, p99 latency, RSS: lower is better</text>']
    step = 0.25 if vmax <= 2.5 else 0.5 if vmax <= 5 else 1.0
    t = 0.0
    while t <= vmax + 1e-9:
        out.append(f'<line x1="{left}" x2="{W - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>')
        t += step
    for i, (label, bars) in enumerate(groups):
        gx = left + i * gw
        bw = gw * 0.8 / len(bars)
        for j, (name, v) in enumerate(bars):
            x = gx + gw * 0.1 + j * bw
            if v is None:
                out.append(f'<text x="{x + bw / 2:.1f}" y="{y(0) - 4:.1f}" '
                           'text-anchor="middle" fill="#c00">n/a</text>')
                continue
            shown = min(v, vmax)
            out.append(f'<rect x="{x:.1f}" y="{y(shown):.1f}" width="{bw - 2:.1f}" '
                       f'height="{y(0) - y(shown):.1f}" fill="{colors[name]}">'
                       f'<title>{label} {name}: {v:.3f}</title></rect>')
            if v > vmax:  # cut bar: a white zig-zag near the top, value inside
                zy = y(vmax) + 8
                out.append(f'<path d="M{x:.1f},{zy:.1f} l{(bw - 2) / 2:.1f},-5 '
                           f'l{(bw - 2) / 2:.1f},5" stroke="white" stroke-width="3" '
                           'fill="none"/>')
                out.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{y(vmax) + 24:.1f}" '
                           f'text-anchor="middle" font-size="10" fill="white">{v:.1f}</text>')
            else:
                out.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{y(v) - 3:.1f}" '
                           f'text-anchor="middle" font-size="10">{v:.2f}</text>')
        out.append(f'<text x="{gx + gw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle">'
                   f'{label}</text>')
    out.append(f'<line x1="{left}" x2="{W - right}" y1="{y(1):.1f}" y2="{y(1):.1f}" '
               'stroke="#c00" stroke-width="1.5" stroke-dasharray="6,3"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" x2="{W - right}" y1="{top + ph}" y2="{top + ph}" '
               'stroke="#333"/>')
    lx = left
    for name, c in colors.items():
        out.append(f'<rect x="{lx}" y="{H - 40}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{lx + 16}" y="{H - 30}">{name}</text>')
        lx += 110
    out.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{H - 34}" y2="{H - 34}" stroke="#c00" '
               'stroke-width="1.5" stroke-dasharray="6,3"/>')
    out.append(f'<text x="{lx + 30}" y="{H - 30}" fill="#c00">1.0 = parity</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- main


def rerender(path):
    """Rebuild latest.md and latest.svg next to a latest.json from its raw rounds."""
    with open(path) as f:
        data = json.load(f)
    a = argparse.Namespace(**data["meta"]["settings"])
    scs = [s for s in scenarios(a) if s["id"] in {r["scenario"] for r in data["rounds"]}]
    summary = summarize(data["rounds"], scs)
    out = os.path.dirname(os.path.abspath(path))
    profiles = sorted(f for f in os.listdir(out) if f.startswith("perf-s") and f.endswith(".txt"))
    md = markdown(data["meta"], summary, a, profiles)
    data["summary"] = summary
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out, "latest.md"), "w") as f:
        f.write(md)
    svg(summary, os.path.join(out, "latest.svg"))
    print(md)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--rerender":
        return rerender(sys.argv[2])
    p = argparse.ArgumentParser(
        epilog="bench.py --rerender benches/results/latest.json rebuilds latest.md/svg")
    p.add_argument("--work", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--gh-pid", type=int, required=True)
    p.add_argument("--ngx-pid", type=int, required=True)
    p.add_argument("--backend-pid", type=int)
    p.add_argument("--gh-http-port", type=int, required=True)
    p.add_argument("--gh-https-port", type=int, required=True)
    p.add_argument("--ngx-http-port", type=int, required=True)
    p.add_argument("--ngx-https-port", type=int, required=True)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--duration", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--h2-clients", type=int, default=16)
    p.add_argument("--h2-streams", type=int, default=32)
    p.add_argument("--idle-conns", type=int, default=10000)
    p.add_argument("--idle-rounds", type=int, default=2)
    p.add_argument("--idle-h2-rounds", type=int, default=1)
    p.add_argument("--hs-conns", type=int, default=128)
    p.add_argument("--scenarios", default="1,2,3,4,5,6,8,7,9")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--profile-duration", type=int, default=4)
    a = p.parse_args()

    gh = Proxy("gatehouse", a.gh_pid, a.gh_http_port, a.gh_https_port, tree=False)
    ngx = Proxy("nginx", a.ngx_pid, a.ngx_http_port, a.ngx_https_port, tree=True)
    order = [gh, ngx]
    wanted = {int(x) for x in a.scenarios.split(",") if x.strip()}
    scs = [s for s in scenarios(a) if s["id"] in wanted]  # idle (7, 9) last, as listed
    os.makedirs(a.results, exist_ok=True)
    records, profiles = [], []
    started = time.monotonic()
    with open("/proc/loadavg") as f:
        load_start = " ".join(f.read().split()[:3])
    for sc in scs:
        print(f"== scenario {sc['id']}: {sc['name']}", file=sys.stderr, flush=True)
        if sc["id"] in IDLE_IDS:
            for rnd in range(idle_rounds(a, sc["id"])):
                for proxy in order:
                    rec = idle_round(a, sc, proxy, rnd)
                    records.append(rec)
                    print(f"   round {rnd} {proxy.name:9s} open {rec.get('opened')} "
                          f"rss {rec.get('rss_kb', 0) / 1024:.1f} MiB "
                          f"(base {rec['rss_base_kb'] / 1024:.1f}) "
                          f"{rec.get('failed', '')}", file=sys.stderr, flush=True)
            continue
        for proxy in order:  # warm-up, not recorded
            if a.warmup > 0 and sc["tool"] == "h2load loop":
                handshake_loop(a, proxy, a.warmup, os.path.join(a.work, "warmup"))
            elif a.warmup > 0:
                run_load(a, sc, proxy, a.warmup, os.path.join(a.work, "warmup.log"))
        for rnd in range(a.rounds):
            for proxy in order:
                if not proxy.alive():
                    sys.exit(f"{proxy.name} (pid {proxy.pid}) is not running any more")
                rec = one_round(a, sc, proxy, rnd)
                records.append(rec)
                print(f"   round {rnd} {proxy.name:9s} "
                      + (f"FAILED {rec['failed']}" if "failed" in rec else
                         f"{rec['rps']:>10.0f} req/s  p50 {fmt(rec['p50_ms'], 3)} ms  "
                         f"p99 {fmt(rec['p99_ms'], 3)} ms  cpu/10k "
                         f"{fmt(rec['cpu_s_per_10k'], 3)} s  rss "
                         f"{rec['peak_rss_kb'] / 1024:.1f} MiB  errors "
                         f"{errs_text(rec['errors'])}"), file=sys.stderr, flush=True)
        if a.profile and sc["id"] in (1, 4):
            if shutil.which("perf"):
                print(f"   profiling gatehouse ({a.profile_duration}s)", file=sys.stderr)
                profiles.append(profile(a, sc, gh, ngx))
            else:
                profiles.append("perf not installed: no profile")

    summary = summarize(records, scs)
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])
    meta = dict(loadavg=f"{load_start} / {load_end}", date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                machine=machine(), settings=vars(a),
                runtime_s=round(time.monotonic() - started, 1),
                logs={"gatehouse": log_summary(os.path.join(a.work, "gatehouse.out")),
                      "nginx": log_summary(os.path.join(a.work, "nginx-error.log"))})
    md = markdown(meta, summary, a, profiles)
    with open(os.path.join(a.results, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.results, "latest.json"), "w") as f:
        json.dump(dict(meta=meta, summary=summary, rounds=records), f, indent=1)
    svg(summary, os.path.join(a.results, "latest.svg"))
    print(md)


if __name__ == "__main__":
    main()
