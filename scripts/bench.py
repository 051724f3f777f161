#!/usr/bin/env python3
"""The gateway benchmark: pgbench against PostgreSQL directly, through PgBouncer and through
belay, side by side in one run, on loopback.

Started by scripts/bench.sh, which installs what it needs and builds belay. This script:

1. starts a scratch PostgreSQL (initdb, pg_ctl) sized for 1,000 idle clients,
2. starts `belay quickstart --upstream` against it (the gateway with classification, policy
   and the audit log on) and PgBouncer (session pooling, the comparable mode: belay pins one
   upstream session per client),
3. initialises pgbench's tables, then runs every combination of script (select-only, the
   default TPC-B-like one), protocol (simple, prepared) and client count, several times, with
   the three targets interleaved in a rotating order so that a busy moment of the machine
   does not fall on one target; with the server syncing its commits (`--fsync on`: fsync,
   synchronous_commit and full_page_writes on, as production runs), without (`off`), or
   both, one after the other on the same server and tables,
4. measures belay's CPU time per statement (from /proc) and the resident memory belay and
   PgBouncer add for 1,000 idle client connections,
5. prints a Markdown report (also written to --out).

Nothing here asserts a time: it measures and reports.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["direct", "pgbouncer", "belay"]
# Statements per transaction of each pgbench script (TPC-B-like: BEGIN, three UPDATEs, a
# SELECT, an INSERT, END).
STATEMENTS = {"select-only": 1, "tpcb-like": 7}


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    sys.exit(f"error: `{name}` not found (install postgresql)")


def as_service_user(cmd):
    """PostgreSQL and PgBouncer refuse to run as root: run them as `postgres`."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def cpu_seconds(pid):
    """User and system CPU time of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def server_cpu_seconds(data):
    """CPU time of a PostgreSQL server, in seconds: the postmaster's own and its exited
    children's (which it has reaped: the backends of finished sessions), and its live
    children's (background processes, backends of sessions still open)."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile: its time is in the postmaster's children's
        pid = int(stat.parent.name)
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="belay-bench-"))
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.pg_port = free_port()
        self.password = os.urandom(12).hex()

    # ---- setup --------------------------------------------------------------------------

    def start_postgres(self):
        data = self.dir / "pg"
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            run(["chown", "-R", "postgres:", str(self.dir)])
        run(as_service_user([pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                             "--auth-local=trust", "--auth-host=scram-sha-256",
                             "-E", "UTF8", "--locale=C", "--no-sync", f"--pwfile={pwfile}"]))
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.pg_port} "
                f"-c unix_socket_directories={self.dir} -c max_connections=1100 "
                "-c shared_buffers=256MB")
        run(as_service_user([pg_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"),
                             "-w", "-t", "60", "-o", opts, "start"]))
        self.pg_data = data

    def start_belay(self):
        qs = self.dir / "qs"
        url = f"postgres://postgres:{self.password}@127.0.0.1:{self.pg_port}"
        log = open(self.dir / "belay.log", "w")
        proc = subprocess.Popen([str(self.args.belay), "quickstart", "--port", "0",
                                 "--dir", str(qs), "--upstream", url,
                                 "--max-connections", "1100"],
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        marker = qs / "quickstart.json"
        deadline = time.time() + 120
        while not marker.exists():
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("error: belay quickstart did not start:\n"
                         + (self.dir / "belay.log").read_text())
            time.sleep(0.2)
        time.sleep(0.2)
        info = json.loads(marker.read_text())
        self.belay_pid = proc.pid
        self.role_password = (qs / "secrets" / "staging-password").read_text().strip()
        self.urls = {
            "direct": f"postgres://belay_staging:{self.role_password}@127.0.0.1:{self.pg_port}/staging",
            "belay": info["staging_url"],
        }

    def start_pgbouncer(self):
        port = free_port()
        ini = self.dir / "pgbouncer.ini"
        users = self.dir / "userlist.txt"
        users.write_text(f'"belay_staging" "{self.role_password}"\n')
        ini.write_text(f"""[databases]
staging = host=127.0.0.1 port={self.pg_port} dbname=staging user=belay_staging password={self.role_password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {users}
pool_mode = session
max_client_conn = 1100
default_pool_size = 1100
max_db_connections = 1100
logfile = {self.dir / 'pgbouncer.log'}
""")
        if os.geteuid() == 0:
            run(["chown", "postgres:", str(ini), str(users)])
        # Each client and each server connection is a file descriptor: 1,000 idle clients need
        # more than the usual soft limit of 1,024.
        pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        proc = subprocess.Popen(as_service_user(["sh", "-c", 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$1"',
                                                 pgbouncer, str(ini)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        url = f"postgres://belay_staging:{self.role_password}@127.0.0.1:{port}/staging"
        deadline = time.time() + 30
        while subprocess.run([pg_bin("psql"), url, "-Atc", "SELECT 1"],
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("error: PgBouncer did not start: "
                         + (self.dir / "pgbouncer.log").read_text()
                         if (self.dir / "pgbouncer.log").exists() else "no log")
            time.sleep(0.2)
        # The pid of pgbouncer itself (runuser forks it).
        self.pgbouncer_pid = int(run(["pgrep", "-n", "-f", f"pgbouncer {ini}"]).stdout.split()[0])
        self.urls["pgbouncer"] = url

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if getattr(self, "pg_data", None):
            subprocess.run(as_service_user([pg_bin("pg_ctl"), "-D", str(self.pg_data),
                                            "-m", "fast", "stop"]), capture_output=True)
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def durability(self, on):
        """The server syncs its commits (`on`) or not, set for every session from now on."""
        value = "on" if on else "off"
        sql = "; ".join(f"ALTER SYSTEM SET {n} = {value}"
                        for n in ("fsync", "synchronous_commit", "full_page_writes"))
        su = f"postgres://postgres:{self.password}@127.0.0.1:{self.pg_port}/postgres"
        for q in sql.split("; ") + ["SELECT pg_reload_conf()"]:
            run([pg_bin("psql"), su, "-Atc", q])
        time.sleep(0.5)
        shown = run([pg_bin("psql"), self.urls["direct"], "-Atc", "SHOW fsync"]).stdout.strip()
        if shown != value:
            sys.exit(f"error: the server did not take fsync = {value} (it says {shown})")

    # ---- measuring ----------------------------------------------------------------------

    def pgbench(self, target, script, mode, clients):
        logdir = Path(tempfile.mkdtemp(dir=self.dir))
        os.chmod(logdir, 0o777)
        cmd = [pg_bin("pgbench"), "-n", "-T", str(self.args.seconds), "-c", str(clients),
               "-j", str(min(clients, 2)), "-M", mode, "-l", "--sampling-rate",
               str(self.args.sampling), "--log-prefix", str(logdir / "tx")]
        if script == "select-only":
            cmd.append("-S")
        cmd.append(self.urls[target])
        # The proxy's own CPU time, for belay and for PgBouncer alike.
        pid = {"belay": self.belay_pid, "pgbouncer": getattr(self, "pgbouncer_pid", None)}.get(target)
        cpu_before = cpu_seconds(pid) if pid else None
        server_before = server_cpu_seconds(self.pg_data)
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=logdir)
        # The backends of the run's sessions have exited (and been reaped) by now, or soon.
        time.sleep(0.2)
        server = server_cpu_seconds(self.pg_data) - server_before
        if out.returncode != 0:
            sys.exit(f"error: pgbench against {target} failed:\n{out.stdout}{out.stderr}")
        cpu = None
        if cpu_before is not None:
            cpu = [after - before for after, before in zip(cpu_seconds(pid), cpu_before)]
        tps = float(re.search(r"tps = ([\d.]+) \(without initial", out.stdout).group(1))
        mean = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))
        done = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))
        latencies = []
        for f in logdir.glob("tx*"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]))
        shutil.rmtree(logdir, ignore_errors=True)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1] / 1000 if latencies else float("nan")
        per_stmt = lambda seconds: seconds / (done * STATEMENTS[script]) * 1e6
        cpu_user, cpu_system = (per_stmt(c) for c in cpu) if cpu is not None and done else (None, None)
        return {"tps": tps, "mean_ms": mean, "p99_ms": p99,
                "server_cpu_us_per_transaction": server / done * 1e6 if done else None,
                "cpu_us_per_statement": cpu_user + cpu_system if cpu_user is not None else None,
                "cpu_user_us_per_statement": cpu_user, "cpu_system_us_per_statement": cpu_system}

    def idle_memory(self, target, pid, n):
        """Resident memory added by `n` idle client connections (pgbench clients that only
        sleep), in KiB per connection."""
        script = self.dir / "idle.sql"
        script.write_text("\\sleep 1 s\n")
        before = rss_kib(pid)
        hold = self.args.idle_seconds
        proc = subprocess.Popen([pg_bin("pgbench"), "-n", "-c", str(n), "-j", "2", "-T", str(hold),
                                 "-f", str(script), self.urls[target]],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = before
        deadline = time.time() + hold + 120
        while proc.poll() is None:
            peak = max(peak, rss_kib(pid))
            if time.time() > deadline:
                proc.kill()
                proc.wait()
                return f"{n} idle connections to {target} did not complete within {hold + 120} s"
            time.sleep(0.2)
        out = proc.stdout.read()
        if proc.returncode != 0:
            return f"{n} idle connections to {target} failed: {out.strip().splitlines()[-1:]}"
        return before, peak, (peak - before) / n

    def hostile_memory(self):
        """belay's resident memory under the loads an agent can aim at it: six sessions each
        sending a 1 MB simple Query of 110,000 statements, and ten sessions that ask for a
        60 MB row and do not read it. Returns (label, before KiB, peak KiB) per load."""
        try:
            from psycopg import pq
        except ImportError:
            return "psycopg is not installed (scripts/test.sh installs it)"
        url = self.urls["belay"]
        pid = self.belay_pid

        def sample(conns, seconds, drain):
            before = rss_kib(pid)
            peak = before
            deadline = time.time() + seconds
            while time.time() < deadline:
                peak = max(peak, rss_kib(pid))
                if drain:
                    for c in conns:
                        if c.is_busy():
                            c.consume_input()
                        while not c.is_busy() and c.get_result() is not None:
                            pass
                time.sleep(0.05)
            for c in conns:
                c.finish()
            return before, peak

        loads = []
        text = ("SELECT 1;" * 110_000).encode()
        conns = [pq.PGconn.connect(url.encode()) for _ in range(6)]
        for c in conns:
            c.send_query(text)
        loads.append(("6 sessions, each a 1 MB Query of 110,000 statements",) + sample(conns, 5, True))
        conns = [pq.PGconn.connect(url.encode()) for _ in range(10)]
        for c in conns:
            c.send_query(b"SELECT repeat('x', 60 * 1024 * 1024)")
        loads.append(("10 sessions that do not read a 60 MB row",) + sample(conns, 8, False))
        return loads

    # ---- the run ------------------------------------------------------------------------

    def main(self):
        a = self.args
        say(f"scratch PostgreSQL on 127.0.0.1:{self.pg_port} in {self.dir}")
        self.start_postgres()
        say("belay quickstart against it")
        self.start_belay()
        say("PgBouncer (session pooling)")
        self.start_pgbouncer()
        say(f"pgbench -i -s {a.scale}")
        run([pg_bin("pgbench"), "-i", "-q", "-s", str(a.scale), self.urls["direct"]])
        combos = [(f, s, m, c) for f in a.fsync for s in a.scripts for m in a.modes
                  for c in a.clients]
        results = {}
        order = list(TARGETS)
        for fsync in a.fsync:
            say(f"the server with fsync {fsync}")
            self.durability(fsync == "on")
            for rep in range(1, a.repetitions + 1):
                for f, script, mode, clients in combos:
                    if f != fsync:
                        continue
                    for target in order:
                        say(f"fsync {fsync}, rep {rep}/{a.repetitions}: {script} -M {mode} "
                            f"-c {clients} -> {target}")
                        r = self.pgbench(target, script, mode, clients)
                        results.setdefault((fsync, script, mode, clients, target), []).append(r)
                    order = order[1:] + order[:1]
        # The throughput figures are kept even if the memory figure fails below.
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out + ".json").write_text(json.dumps(
            [{"fsync": k[0], "script": k[1], "mode": k[2], "clients": k[3], "target": k[4],
              "runs": v} for k, v in results.items()], indent=1))
        memory = {}
        if a.idle > 0:
            for target, pid in (("belay", self.belay_pid), ("pgbouncer", self.pgbouncer_pid)):
                say(f"{a.idle} idle connections -> {target}")
                memory[target] = self.idle_memory(target, pid, a.idle)
        hostile = None
        if a.hostile:
            say("belay's memory under hostile loads")
            hostile = self.hostile_memory()
        return self.report(combos, results, memory, hostile)

    def report(self, combos, results, memory, hostile=None):
        a = self.args
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        cpu_info = run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).stdout.strip()
        pg_version = re.search(r"\d+\.\d+", run([pg_bin("postgres"), "--version"]).stdout).group(0)
        lines = [
            f"Machine: {os.cpu_count()} CPUs ({cpu_info}), "
            f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB; "
            f"{time.strftime('%Y-%m-%d')}; belay {Path(a.belay).parent.name} build; PostgreSQL "
            f"{pg_version} with fsync {' and '.join(a.fsync)} (fsync, synchronous_commit and "
            "full_page_writes together); "
            f"{run(['pgbouncer', '--version']).stdout.splitlines()[0]} in session mode.",
            f"pgbench scale {a.scale}, {a.seconds} s per run, {a.repetitions} runs per line "
            "(medians), targets interleaved in rotating order; p99 from a "
            f"{a.sampling:.0%} sample of per-transaction logs.",
            "",
            "| fsync | script | protocol | clients | direct TPS | PgBouncer TPS | belay TPS "
            "| belay/direct | belay/PgBouncer | mean ms (direct / PgBouncer / belay) "
            "| p99 ms (direct / PgBouncer / belay) "
            "| CPU µs/statement, user + system (PgBouncer / belay) "
            "| server CPU µs/transaction (direct / PgBouncer / belay) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for fsync, script, mode, clients in combos:
            rs = {t: results[(fsync, script, mode, clients, t)] for t in TARGETS}
            tps = {t: med(rs[t], "tps") for t in TARGETS}
            mean = " / ".join(f"{med(rs[t], 'mean_ms'):.3f}" for t in TARGETS)
            p99 = " / ".join(f"{med(rs[t], 'p99_ms'):.3f}" for t in TARGETS)
            cpu = " / ".join(
                f"{med(rs[t], 'cpu_user_us_per_statement'):.1f} + "
                f"{med(rs[t], 'cpu_system_us_per_statement'):.1f}"
                for t in ("pgbouncer", "belay"))
            server = " / ".join(f"{med(rs[t], 'server_cpu_us_per_transaction'):.0f}"
                                for t in TARGETS)
            lines.append(
                f"| {fsync} | {script} | {mode} | {clients} | {tps['direct']:,.0f} "
                f"| {tps['pgbouncer']:,.0f} "
                f"| {tps['belay']:,.0f} | {tps['belay'] / tps['direct']:.2f} "
                f"| {tps['belay'] / tps['pgbouncer']:.2f} | {mean} | {p99} | {cpu} | {server} |")
        if 1 in a.clients:
            lines += ["", "Added latency per transaction at one client (mean, minus direct's):", ""]
            for fsync in a.fsync:
                for script in a.scripts:
                    for mode in a.modes:
                        rs = {t: results[(fsync, script, mode, 1, t)] for t in TARGETS}
                        d = med(rs["direct"], "mean_ms")
                        pb = med(rs["pgbouncer"], "mean_ms") - d
                        be = med(rs["belay"], "mean_ms") - d
                        ratio = f"{be / pb:.2f}x PgBouncer's" if pb > 0 else "n/a"
                        lines.append(f"- fsync {fsync}, {script}, {mode}: PgBouncer "
                                     f"+{pb * 1000:.1f} µs, belay +{be * 1000:.1f} µs ({ratio})")
        if memory:
            lines += ["", f"Resident memory with {a.idle} idle client connections:", ""]
            for target, m in memory.items():
                if isinstance(m, str):
                    lines.append(f"- {target}: not measured: {m}")
                    continue
                before, peak, per = m
                lines.append(f"- {target}: {before / 1024:.1f} MiB before, {peak / 1024:.1f} MiB "
                             f"with them: {per:.1f} KiB per connection")
        if hostile is not None:
            lines += ["", "belay's resident memory under hostile loads (its budget: "
                      "listen.memory_budget, 256 MiB by default, for all sessions' buffers):", ""]
            if isinstance(hostile, str):
                lines.append(f"- not measured: {hostile}")
            else:
                for label, before, peak in hostile:
                    lines.append(f"- {label}: {before / 1024:.1f} MiB before, peak "
                                 f"{peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f} MiB)")
        text = "\n".join(lines) + "\n"
        print(text)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(text)
            say(f"report written to {a.out}")
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--belay", type=Path, default=ROOT / "target/release/belay")
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--seconds", type=int, default=10, help="length of each pgbench run")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32])
    p.add_argument("--scripts", type=lambda s: s.split(","), default=["select-only", "tpcb-like"])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["simple", "prepared"])
    p.add_argument("--fsync", type=lambda s: ["off", "on"] if s == "both" else [s], default=["off", "on"],
                   help="on, off or both (default): whether the server syncs its commits")
    p.add_argument("--sampling", type=float, default=0.2)
    p.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure (0: skip)")
    p.add_argument("--idle-seconds", type=int, default=20)
    p.add_argument("--no-hostile", dest="hostile", action="store_false",
                   help="skip the memory figures under hostile loads")
    p.add_argument("--out", default=str(ROOT / "target/bench/report.md"))
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args()
    if any(f not in ("on", "off") for f in args.fsync):
        p.error("--fsync takes on, off or both")
    for s in args.scripts:
        if s not in STATEMENTS:
            p.error(f"unknown script `{s}` (select-only, tpcb-like)")
    bench = Bench(args)
    try:
        return bench.main()
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
