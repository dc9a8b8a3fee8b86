#!/usr/bin/env python3
"""Checkpoint/restart benchmark for dmtcp-rs (python3 standard library only).

Driven by tests/bench/run.sh; see docs/performance.md. In one run it measures
the machine's limits (dd), checkpoint and restart of memory workloads per
codec, runtime overhead native vs under dmtcp-run, and CRIU >= 4 if present.
Writes tests/bench/results/latest.md (+ latest.json) and ckpt_restart.png.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MiB = 1 << 20
ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
CODECS = ["default", "gzip", "zstd", "none"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_dur(text):
    """Rust Debug Duration ('199.1µs', '3.2ms', '1.5s') -> seconds."""
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)\b", text.strip())
    if not m:
        raise ValueError(f"cannot parse duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Lines:
    """Reads a pipe in a thread; keeps (monotonic time, line) pairs."""

    def __init__(self, pipe):
        self.lines = []
        self.cv = threading.Condition()
        self.closed = False
        self.t = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.t.start()

    def _run(self, pipe):
        for raw in iter(pipe.readline, b""):
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self.cv:
                self.lines.append((time.monotonic(), line))
                self.cv.notify_all()
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def wait_for(self, pattern, timeout, start=0):
        """First (time, match) with index >= start whose line matches pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i][1])
                    if m:
                        return self.lines[i][0], m
                    i += 1
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None, None
                self.cv.wait(left)

    def wait_count(self, pattern, n, timeout, start=0):
        """(time of the n-th line >= start matching pattern, all n matches), or (None, matches)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                found = [(t, m) for t, l in self.lines[start:] for m in [rx.search(l)] if m]
                if len(found) >= n:
                    return found[n - 1][0], [m for _, m in found[:n]]
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None, [m for _, m in found]
                self.cv.wait(left)

    def text(self, last=15):
        with self.cv:
            return "\n".join(l for _, l in self.lines[-last:])


# From this size on (--large adds it): random data only, skipped when memory or disk is short.
HUGE_MIB = 16384

# The 16-process workload: 16 processes holding this many MiB of random bytes in all.
PROCS_MIB = 1024

class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin
        self.root = tempfile.mkdtemp(prefix="dmtcp-bench.", dir=args.dir)
        os.chmod(self.root, 0o755)
        self.failures = []
        self.procs = []  # every Popen we started, for the final cleanup
        self.ports = []
        self.res = {"args": vars(args), "ckpt": [], "overhead": {}, "machine": {}, "criu": None}
        # Section `unpriv`: the dmtcp commands of ckpt_one run as this uid.
        self.user = None

    # ---------- helpers ----------
    def env(self, tmpdir, debug=True):
        e = dict(os.environ)
        for k in ("DMTCP_COORD_HOST", "DMTCP_COORD_PORT", "DMTCP_CHECKPOINT_DIR", "DMTCP_GZIP"):
            e.pop(k, None)
        e["DMTCP_TMPDIR"] = tmpdir
        if debug:
            e["DMTCP_LOG"] = "debug"
        else:
            e.pop("DMTCP_LOG", None)
        return e

    def u(self, cmd):
        """`cmd` as self.user (setpriv, no groups, no capabilities), or as is."""
        if self.user is None:
            return cmd
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups", "--"] + cmd

    def give(self, *paths):
        """Hands directories made by us to self.user (private to it)."""
        if self.user is None:
            return
        for p in paths:
            os.chown(p, self.user, self.user)
            os.chmod(p, 0o700)

    def fail(self, what, cmd, detail):
        msg = f"{what}: command `{' '.join(map(str, cmd))}`: {detail.strip()}"
        log("FAILURE " + msg)
        self.failures.append(msg)

    def popen(self, cmd, **kw):
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def reap(self, p, timeout=30):
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()
        finally:
            if p in self.procs:
                self.procs.remove(p)

    def cmd(self, port, flag, env, timeout=300):
        return subprocess.run(self.u([f"{self.bin}/dmtcp-command", "-p", str(port), flag]), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    def start_coord(self, work, env):
        pf = os.path.join(work, "port")
        ckpt = os.path.join(work, "ckpt")
        os.makedirs(ckpt, exist_ok=True)
        self.give(ckpt)
        with open(os.path.join(work, "coord.log"), "ab") as lf:
            r = subprocess.run(self.u([f"{self.bin}/dmtcp-coordinator", "--daemon", "--port", "0",
                                       "--port-file", pf, "--ckpt-dir", ckpt]), env=env,
                               stdout=lf, stderr=lf, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"dmtcp-coordinator exited {r.returncode}")
        for _ in range(200):
            if os.path.exists(pf) and open(pf).read().strip():
                port = int(open(pf).read().strip())
                self.ports.append((port, env))
                return port, ckpt
            time.sleep(0.02)
        raise RuntimeError("coordinator wrote no port file")

    def stop_coord(self, port, env):
        try:
            self.cmd(port, "-q", env, timeout=10)
        except Exception:
            pass
        self.ports = [(p, e) for p, e in self.ports if p != port]

    def cleanup(self):
        for p in list(self.procs):
            if p.poll() is None:
                try:
                    p.kill()
                except Exception:
                    pass
            try:
                p.wait(timeout=10)
            except Exception:
                pass
        for port, env in list(self.ports):
            self.stop_coord(port, env)
        if not self.a.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---------- build ----------
    def build(self):
        self.wl = os.path.join(self.root, "workload")
        self.oh = os.path.join(self.root, "overhead")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", self.wl, f"{HERE}/workload.c", "-lpthread"], check=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", self.oh, f"{HERE}/overhead.c"], check=True)
        self.wpf = os.path.join(self.root, "wpfloor")
        subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", self.wpf, f"{HERE}/wpfloor.c"], check=True)
        self.tf = os.path.join(self.root, "threadfloor")
        subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", self.tf, f"{HERE}/threadfloor.c"], check=True)
        progs = os.path.join(REPO, "tests", "programs")
        self.sc = os.path.join(self.root, "seccomp_own")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", self.sc, f"{progs}/seccomp_own.c", f"{progs}/zdtm.c",
                        "-lpthread"], check=True)

    # ---------- 1. machine ----------
    def machine(self):
        m = self.res["machine"]
        m["nproc"] = os.cpu_count()
        with open("/proc/meminfo") as f:
            m["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
        m["kernel"] = os.uname().release
        try:
            src = subprocess.run(["df", "--output=source,fstype,size", self.root], text=True,
                                 stdout=subprocess.PIPE).stdout.splitlines()[-1].split()
            dev = os.path.basename(src[0])
            rot = open(f"/sys/block/{dev}/queue/rotational").read().strip() if os.path.exists(
                f"/sys/block/{dev}/queue/rotational") else "?"
            m["disk"] = f"{src[0]} ({src[1]}, {src[2]}, rotational={rot})"
        except Exception as e:
            m["disk"] = f"unknown ({e})"
        m["bench_dir"] = self.root
        f = os.path.join(self.root, "ddfile")
        mib = self.a.dd_mib

        def dd(args):
            t = time.monotonic()
            r = subprocess.run(["dd"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            dt = time.monotonic() - t
            if r.returncode:
                self.fail("dd", ["dd"] + args, r.stderr)
                return None
            return mib * MiB / dt / 1e9  # GB/s

        if getattr(self, "_dd_done", False):  # second call, at the end of the run
            m["write_fsync_end_gbs"] = dd(["if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fsync"])
            os.unlink(f)
            log(f"machine: dd write+fsync at the end: {m['write_fsync_end_gbs']}")
            return
        self._dd_done = True
        log(f"machine: dd write {mib} MiB with fsync")
        m["write_fsync_gbs"] = dd(["if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fsync"])
        if os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK):
            os.sync()
            try:
                with open("/proc/sys/vm/drop_caches", "w") as fh:
                    fh.write("3\n")
                m["cold_read_gbs"] = dd([f"if={f}", "of=/dev/null", "bs=1M"])
            except OSError as e:
                m["cold_read_gbs"] = None
                m["cold_read_note"] = f"skipped: drop_caches: {e}"
        else:
            m["cold_read_gbs"] = None
            m["cold_read_note"] = "skipped: not root (cannot drop caches)"
        dd([f"if={f}", "of=/dev/null", "bs=1M"])
        m["hot_read_gbs"] = dd([f"if={f}", "of=/dev/null", "bs=1M"])
        os.unlink(f)
        log(f"machine: {m}")

    def fits(self, mib, mem_factor, disk_factor):
        """Whether mib MiB x mem_factor of memory is available and mib x
        disk_factor of disk is free in the bench directory; logs a skip."""
        with open("/proc/meminfo") as f:
            avail = next((int(l.split()[1]) // 1024 for l in f if l.startswith("MemAvailable:")), 0)
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize // MiB
        if avail < mib * mem_factor or free < mib * disk_factor:
            log(f"skipping {mib} MiB: {avail} MiB of memory available, {free} MiB of disk free "
                f"(needs {mib * mem_factor:.0f} and {mib * disk_factor:.0f})")
            return False
        return True

    # ---------- 1b. floors of the memory snapshot (issue 20) ----------
    def wpfloor(self):
        """tests/bench/wpfloor.c per size: fork (page-table copy), userfaultfd
        write-protect, mprotect, the pre-copy PAGEMAP_SCAN, and a model WP
        snapshot checked for consistency. Root only (a userfaultfd that
        catches kernel-mode faults)."""
        self.res["wpfloor"] = []
        if os.geteuid() != 0:
            self.res["wpfloor_note"] = "skipped: not root (sync write-protect needs kernel-mode faults)"
            return
        for size in self.a.sizes:
            if not self.fits(size, 2.2, 0):  # the region and the model's copy of it
                continue
            for thp in ("0", "1"):
                cmd = [self.wpf, str(size), str(self.a.reps)]
                log(f"wpfloor: {size} MiB, THP {thp}")
                r = subprocess.run(cmd, env=dict(os.environ, WPFLOOR_THP=thp), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
                try:
                    d = json.loads(r.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    self.fail(f"wpfloor {size} MiB", cmd, f"exit {r.returncode}: {r.stdout}{r.stderr}")
                    continue
                d["thp"] = thp == "1"
                if r.returncode:
                    self.fail(f"wpfloor {size} MiB (THP {thp})", cmd, f"inconsistent model snapshot: {r.stdout}")
                self.res["wpfloor"].append(d)

    def wpfloor_report(self, S):
        L = ["## Frozen time and its floors (issue 20)\n"]
        W = self.res.get("wpfloor")
        if not W:
            return L + [self.res.get("wpfloor_note", "not run (--only)") + "\n"]
        L.append("Floors from `tests/bench/wpfloor.c` (best of the repetitions), for touched private "
                 "memory in 4 KiB pages (a heap) and in transparent huge pages: *fork* = the page-table "
                 "copy that our copy-on-write snapshot child costs; *WP* = `UFFDIO_WRITEPROTECT` of the "
                 "range (the floor of a userfaultfd write-protect snapshot); *mprotect* = the same "
                 "page-table walk without userfaultfd; *pre-copy scan* = one `PAGEMAP_SCAN` listing "
                 "written pages and protecting them again, async WP, nothing / 1% written (the floor "
                 "of a pre-copy final pass); *model* = a whole WP snapshot in one process (protect, "
                 "then a writer saves every page while the main thread rewrites the region, a "
                 "fault thread copying old pages aside): frozen = protect, save time, pages copied "
                 "aside, consistent. *kernel write* = a read() into a protected page with a "
                 "userfaultfd that catches kernel faults (root) / `UFFD_USER_MODE_ONLY` (all an "
                 "unprivileged process may have).\n")
        L.append("| MiB | pages | fork ms | WP ms | mprotect ms | pre-copy scan ms (0% / 1%) | "
                 "model frozen ms | model save ms | copied aside | consistent | kernel write root / user |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for d in W:
            L.append(f"| {d['mib']} | {'THP' if d.get('thp') else '4 KiB'} | {d['fork_ms']:.1f} | "
                     f"{d['wp_ms']:.1f} | {d['mprotect_ms']:.1f} | {d['scan_idle_ms']:.2f} / "
                     f"{d['scan_1pct_ms']:.2f} | {d['snap_frozen_ms']:.1f} | {d['snap_save_ms']:.0f} | "
                     f"{d['snap_faults']} | {'yes' if d['snap_ok'] else 'NO'} | "
                     f"{d['kfault_root']} / {d['kfault_user']} |")
        L.append("\nOurs, same run (codec none): frozen = the whole stop; snapshot = making the "
                 "snapshot inside it.\n")
        L.append("| workload | MiB | snapshot | frozen ms | snapshot made ms | fork floor ms | WP floor ms |")
        L.append("|---|---|---|---|---|---|---|")
        for (kind, size, codec), s in sorted(S.items()):
            if codec != "none" or kind not in ("random", "text", "procs"):
                continue
            fl = [d for d in W if d["mib"] == size and not d.get("thp")]
            fk = fl[0]["fork_ms"] if fl else None
            wp = fl[0]["wp_ms"] if fl else None
            L.append(f"| {kind} | {size} | {s.get('snapshot')} | {ms(s['frozen'])} | "
                     f"{ms(s.get('snapshot_made'))} | {fmt(fk, '{:.1f}')} | {fmt(wp, '{:.1f}')} |")
        L.append("")
        return L

    # ---------- 2. checkpoint / restart ----------
    def ckpt_one(self, kind, size, codec, extra_env=None, keep_image=None):
        """One launch, checkpoint, kill, restart, kill. Returns a dict. `keep_image`: where
        to copy the (first) image before the scratch directory goes."""
        work = tempfile.mkdtemp(prefix=f"{kind}-{size}-{codec}.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        if self.user is not None:
            os.chmod(work, 0o755)
            self.give(tmp)
            os.chmod(work, 0o777)  # the port file
        env = self.env(tmp)
        env.update(extra_env or {})
        r = {"kind": kind, "size": size, "codec": codec, "ok": False}
        port = None
        try:
            port, ckpt = self.start_coord(work, env)
            # "default": no --compress (the adaptive default codec).
            comp = [] if codec == "default" else ["--compress", codec]
            runcmd = self.u([f"{self.bin}/dmtcp-run", "--coord-port", str(port), *comp,
                             "--", self.wl, kind, str(size)])
            run = self.popen(runcmd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = Lines(run.stdout), Lines(run.stderr)
            t, _ = out.wait_for(r"^READY", 300)
            if t is None:
                self.fail(f"{kind} {size} MiB {codec}: launch", runcmd,
                          f"no READY (exit {run.poll()}); stderr:\n{err.text()}")
                return r
            nerr = len(err.lines)
            bc = self.u([f"{self.bin}/dmtcp-command", "-p", str(port), "-bc"])
            t0 = time.monotonic()
            c = subprocess.run(bc, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=600)
            r["ckpt_wall"] = time.monotonic() - t0
            if c.returncode != 0:
                self.fail(f"{kind} {size} MiB {codec}: checkpoint", bc,
                          f"exit {c.returncode}: {c.stdout}{c.stderr}\nsupervisor:\n{err.text()}")
                return r
            m = re.search(r"done in (\d+) ms", c.stdout)
            r["ckpt_reported"] = int(m.group(1)) / 1e3 if m else None
            paths = [l.strip() for l in c.stdout.splitlines() if l.strip().startswith("/")]
            if not paths:
                self.fail(f"{kind} {size} MiB {codec}: checkpoint", bc, f"no image path in: {c.stdout}")
                return r
            r["image_bytes"] = sum(os.path.getsize(p) for p in paths)
            if keep_image:
                shutil.copyfile(paths[0], keep_image)
            nproc = 16 if kind == "procs" else 1
            _, md = err.wait_for(r"image\(s\) durable in (\S+)", 30, nerr)
            _, mw = err.wait_count(r"image written in (\S+), fsync", nproc, 5, nerr)
            r["written"] = max(parse_dur(m.group(1)) for m in mw) if len(mw) == nproc else None
            _, mf = err.wait_for(r"froze \d+ process\(es\) in (\S+)", 1, nerr)
            # Per process; several processes are captured side by side (since
            # session 35) and the whole capture has a line of its own.
            _, mc = err.wait_count(r"\): captured in (\S+)", nproc, 5, nerr)
            _, mall = err.wait_for(r"captured \d+ process\(es\) in (\S+)", 1, nerr)
            # "map and flags": reading the map (and smaps when read while frozen).
            _, mi = err.wait_count(
                r"injected queries (\S+), threads (\S+), (?:map and flags (\S+), )?memory (\S+), fds (\S+)",
                nproc, 1, nerr)
            r["durable"] = parse_dur(md.group(1)) if md else None
            r["froze"] = parse_dur(mf.group(1)) if mf else None
            r["captured"] = (parse_dur(mall.group(1)) if mall else
                             sum(parse_dur(m.group(1)) for m in mc) if len(mc) == nproc else None)
            r["capture_memory"] = sum(parse_dur(m.group(4)) for m in mi) if len(mi) == nproc else None
            r["map_flags"] = (sum(parse_dur(m.group(3)) for m in mi if m.group(3))
                              if len(mi) == nproc and all(m.group(3) for m in mi) else None)
            _, mt = err.wait_for(r"thawed \d+ process\(es\) in (\S+)", 1, nerr)
            r["thawed"] = parse_dur(mt.group(1)) if mt else None
            # Which snapshot ran, and how long making it took (within frozen).
            _, msn = err.wait_count(r"snapshot (\S+) \(.*\) made in (\S+)", nproc, 1, nerr)
            r["snapshot"] = msn[0].group(1) if msn else "none"
            r["snapshot_made"] = (sum(parse_dur(m.group(2)) for m in msn)
                                  if len(msn) == nproc else None)
            r["frozen"] = (r["froze"] + r["captured"] + (r["thawed"] or 0)
                           if (mf and r["captured"] is not None) else None)
            # Pre-copy (DMTCP_PRECOPY=1): its pass while the program ran, and
            # which way the residue went (copied while frozen, or the fork).
            _, mp = err.wait_count(r"pre-copy of (\d+) KiB while running in (\S+)", 10**6, 0, nerr)
            if mp:
                r["precopy_kib"] = sum(int(m.group(1)) for m in mp)
                r["precopy_time"] = sum(parse_dur(m.group(2)) for m in mp)
                _, mres = err.wait_count(r"pre-copy: (\d+) KiB copied while frozen, no snapshot fork",
                                         10**6, 0, nerr)
                if len(mres) == nproc:
                    r["snapshot"] = "pre-copy"
                    r["residue_kib"] = sum(int(m.group(1)) for m in mres)
                else:
                    r["snapshot"] = "pre-copy+" + r["snapshot"]
            k = self.cmd(port, "-k", env)
            if self.reap(run, 30) is None:
                pass
            rscmd = self.u([f"{self.bin}/dmtcp-restart", "-p", str(port)] + paths)
            if codec == "none":
                # The same restart with every page copied first (what an
                # unprivileged restart does), for comparison with the lazy one.
                eenv = dict(env, DMTCP_RESTART_LAZY="0")
                t0 = time.monotonic()
                rs = self.popen(rscmd, env=eenv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                t, _ = Lines(rs.stderr).wait_count(r"pid (\d+) restored \((\d+) threads\) in (\S+)",
                                                   nproc, 300)
                r["restart_eager_wall"] = t - t0 if t is not None else None
                self.cmd(port, "-k", env)
                self.reap(rs, 30)
            # restart
            t0 = time.monotonic()
            rs = self.popen(rscmd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rout, rerr = Lines(rs.stdout), Lines(rs.stderr)
            t, ms_ = rerr.wait_count(r"pid (\d+) restored \((\d+) threads\) in (\S+)", nproc, 300)
            mr = ms_[-1] if t is not None else None
            if t is None:
                rc = None
                try:
                    rc = rs.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
                self.fail(f"{kind} {size} MiB {codec}: restart", rscmd,
                          f"no 'restored' line (exit {rc}); stderr:\n{rerr.text()}")
                self.cmd(port, "-k", env)
                self.reap(rs, 10)
                return r
            r["restart_wall"] = t - t0
            r["restored_in"] = parse_dur(mr.group(3))
            r["threads"] = int(mr.group(2))
            hp = int(mr.group(1))
            time.sleep(0.05)
            try:
                st = open(f"/proc/{hp}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                st = "gone"
            r["state_after"] = st
            # A lazy restore (root, uncompressed): when the last page was in.
            _, lz = rerr.wait_count(r"MiB of memory restored lazily", 10**6, 0)
            if lz:
                _, ml = rerr.wait_count(r"lazily restored memory in place \(\d+ MiB in (\S+);", len(lz), 60)
                r["lazy_done"] = max(parse_dur(m.group(1)) for m in ml) if len(ml) == len(lz) else None
            if st not in ("S", "R"):
                self.fail(f"{kind} {size} MiB {codec}: restart", rscmd,
                          f"restored pid {hp} is in state {st} 50 ms after 'restored'; stderr:\n{rerr.text()}")
            k = self.cmd(port, "-k", env)
            rc = self.reap(rs, 30)
            r["ok"] = st in ("S", "R")
            return r
        except Exception as e:
            self.fail(f"{kind} {size} MiB {codec}", [kind, size, codec], f"{type(e).__name__}: {e}")
            return r
        finally:
            if port:
                self.stop_coord(port, env)
            for p in list(self.procs):
                if p.poll() is None:
                    p.kill()
                self.reap(p, 10)
            shutil.rmtree(work, ignore_errors=True)

    def ckpt_all(self):
        sizes = self.a.sizes
        plan = []
        codecs = self.a.codecs or CODECS
        kinds = self.a.kinds or ["random", "text", "untouched", "threads", "procs"]
        for kind in ("random", "text", "untouched"):
            if kind not in kinds:
                continue
            for size in sizes:
                # 16 GiB (--large): random only, and only where it fits.
                if size >= HUGE_MIB and (kind != "random" or not self.fits(size, 1.2, 1.5)):
                    continue
                for codec in codecs:
                    plan.append((kind, size, codec))
        for codec in codecs:
            if "threads" in kinds:
                for n in sorted({self.a.threads, 512}):
                    plan.append(("threads", n, codec))
        for codec in codecs:
            if "procs" in kinds:
                plan.append(("procs", PROCS_MIB, codec))
        for rep in range(self.a.reps):
            for kind, size, codec in plan:
                t = time.monotonic()
                r = self.ckpt_one(kind, size, codec)
                r["rep"] = rep
                self.res["ckpt"].append(r)
                log(f"rep {rep + 1}/{self.a.reps} {kind:9} {size:5} {codec:4}: "
                    + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in r.items() if k not in ("kind", "size", "codec", "rep"))
                    + f" [{time.monotonic() - t:.1f}s]")

    # ---------- 2a. pre-copy against the fork snapshot ----------
    def precopy_all(self):
        """Frozen time of `random` at 1 and 4 GiB (codec none), the fork
        snapshot and pre-copy (DMTCP_PRECOPY=1) alternating, per repetition."""
        self.res["precopy"] = []
        plan = [(kind, uid, size, mode) for kind in self.a.precopy_kinds for uid in self.a.precopy_users
                for size in self.a.precopy_sizes for mode in ("fork", "precopy")]
        for rep in range(self.a.reps):
            for kind, uid, size, mode in plan:
                extra = {"DMTCP_PRECOPY": "1"} if mode == "precopy" else {"DMTCP_PRECOPY": "0"}
                t = time.monotonic()
                self.user = uid or None
                try:
                    r = self.ckpt_one(kind, size, "none", extra)
                finally:
                    self.user = None
                r["mode"] = mode
                r["rep"] = rep
                r["uid"] = uid
                self.res["precopy"].append(r)
                log(f"precopy rep {rep + 1}/{self.a.reps} {kind} uid {uid} {size:5} {mode:7}: "
                    f"frozen={r.get('frozen')} "
                    f"snapshot={r.get('snapshot')} precopy={r.get('precopy_time')} "
                    f"residue={r.get('residue_kib')} KiB ckpt={r.get('ckpt_wall')} ok={r.get('ok')} "
                    f"[{time.monotonic() - t:.1f}s]")

    # ---------- 2a'. the runtime cost of pre-copy's armed tracker ----------
    def precopy_cost_all(self):
        """`workload rewrite 1024`: the time of a pass writing one word in
        every page, natively, and under dmtcp-run before and after a
        checkpoint with the fork snapshot and with pre-copy (whose
        write-protect tracker stays armed after the checkpoint: the first
        write to each page then takes a fault)."""
        self.res["precopy_cost"] = []
        for rep in range(self.a.reps):
            for mode in ("native", "fork", "precopy"):
                r = self.precopy_cost_one(mode)
                r["rep"] = rep
                self.res["precopy_cost"].append(r)
                log(f"precopy-cost rep {rep + 1}/{self.a.reps} {mode:7}: "
                    + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("mode", "rep")))

    def precopy_cost_one(self, mode):
        work = tempfile.mkdtemp(prefix=f"pccost-{mode}.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        env = self.env(tmp, debug=False)
        env["DMTCP_PRECOPY"] = "1" if mode == "precopy" else "0"
        r = {"mode": mode, "ok": False}
        wl = [self.wl, "rewrite", "1024"]
        port = None
        if mode != "native":
            port, _ = self.start_coord(work, env)
            wl = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--compress", "none", "--"] + wl
        p = self.popen(wl, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
        try:
            if p.stdout.readline().strip() != "READY":
                self.fail(f"precopy cost {mode}: launch", wl, "no READY")
                return r

            def rewrite():
                p.stdin.write("x\n")
                p.stdin.flush()
                line = p.stdout.readline().split()
                return int(line[1]) / 1e9 if len(line) == 2 and line[0] == "REWROTE" else None

            r["before"] = rewrite()
            if port is not None:
                c = self.cmd(port, "-bc", env)
                if c.returncode != 0:
                    self.fail(f"precopy cost {mode}: checkpoint", ["-bc"], c.stderr.decode())
                    return r
            r["after"] = rewrite()
            r["again"] = rewrite()
            r["ok"] = None not in (r["before"], r["after"], r["again"])
            return r
        finally:
            if port is not None:
                self.cmd(port, "-k", env)
                self.stop_coord(port, env)
            else:
                p.kill()
            self.reap(p, 30)

    def precopy_cost_report(self):
        L = ["### The runtime cost of pre-copy's tracker (issue 20)\n"]
        P = self.res.get("precopy_cost")
        if not P:
            return L + ["not run (--only)\n"]
        L.append("`workload rewrite 1024`: one pass writing one word in each of the 262144 pages of "
                 "1 GiB of touched memory, before the checkpoint, right after it, and once more; "
                 "native, under dmtcp-run with the fork snapshot (default) and with pre-copy "
                 "(`DMTCP_PRECOPY=1`: the write-protect tracker stays armed after the checkpoint). "
                 "The fork snapshot has a cost too: fork leaves the parent's private pages "
                 "read-only, and each first write after it takes a fault even once the snapshot "
                 "child is gone. Medians, ms.\n")
        L.append("| mode | before ms | first pass after ckpt ms | next pass ms | ok |")
        L.append("|---|---|---|---|---|")
        by = {}
        for r in P:
            by.setdefault(r["mode"], []).append(r)
        for mode in ("native", "fork", "precopy"):
            rs = by.get(mode, [])
            L.append(f"| {mode} | {ms(med([r.get('before') for r in rs]))} | "
                     f"{ms(med([r.get('after') for r in rs]))} | {ms(med([r.get('again') for r in rs]))} | "
                     f"{sum(1 for r in rs if r.get('ok'))}/{len(rs)} |")
        L.append("")
        return L

    # ---------- 2c. the floor of freezing 512 threads ----------
    def threadfloor(self):
        """`threadfloor 512 REPS`: seize + interrupt + wait + detach of
        every thread of a process of 512 idle threads, nothing else."""
        n = max(self.a.reps, 3) * 3
        r = subprocess.run([self.tf, "512", str(n)], stdout=subprocess.PIPE, text=True, timeout=120)
        v = [int(l.split()[1]) / 1e9 for l in r.stdout.splitlines() if l.startswith("FLOOR ")]
        if r.returncode != 0 or not v:
            self.fail("threadfloor", [self.tf, "512", str(n)], f"exit {r.returncode}")
        self.res["threadfloor"] = v
        log(f"threadfloor 512: median {med(v)}")

    def threadfloor_report(self, S):
        L = ["### 512 threads and 16 processes against their floors (issue 20)\n"]
        v = self.res.get("threadfloor")
        if not v:
            return L + ["not run (--only threadfloor)\n"]
        floor = med(v)
        L.append("floor = `tests/bench/threadfloor.c`: seize, interrupt, wait for and detach every "
                 "thread of a process of 512 idle threads (513 tasks) with nothing else, median of "
                 f"{len(v)} ({ms(min(v))}-{ms(max(v))} ms); frozen = the checkpoint's frozen time "
                 "(section above, codec none).\n")
        L.append("| case | frozen ms | floor ms | ratio (goal <= 2x) |")
        L.append("|---|---|---|---|")
        t = S.get(("threads", 512, "none"), {})
        fr = t.get("frozen")
        L.append(f"| 512 idle threads | {ms(fr)} | {ms(floor)} | "
                 f"{f'{fr / floor:.1f}x' if fr and floor else '-'} |")
        one = S.get(("random", PROCS_MIB, "none"), {}).get("frozen")
        many = S.get(("procs", PROCS_MIB, "none"), {}).get("frozen")
        L.append(f"| 16 processes x {PROCS_MIB // 16} MiB against 1 process x {PROCS_MIB} MiB | "
                 f"{ms(many)} | {ms(one)} | {f'{many / one:.2f}x' if many and one else '-'} "
                 "(goal <= 1.2x) |")
        L.append("")
        return L

    # ---------- 2b. unprivileged against root ----------
    def unpriv_all(self):
        """`random` 1 GiB, codec none, as root and as uid 65534 alternating:
        frozen, checkpoint and copied restart (an unprivileged restart copies
        its pages: no userfaultfd for kernel faults without privilege)."""
        self.res["unpriv"] = []
        for rep in range(self.a.reps):
            for user in (None, 65534):
                self.user = user
                t = time.monotonic()
                try:
                    r = self.ckpt_one("random", 1024, "none")
                finally:
                    self.user = None
                r["uid"] = user or 0
                r["rep"] = rep
                self.res["unpriv"].append(r)
                log(f"unpriv rep {rep + 1}/{self.a.reps} uid {r['uid']:5}: frozen={r.get('frozen')} "
                    f"ckpt={r.get('ckpt_wall')} copied-restart={r.get('restart_eager_wall')} "
                    f"ok={r.get('ok')} [{time.monotonic() - t:.1f}s]")

    # ---------- 2d. checkpoint against dd of the same size (issue 20) ----------
    def random_source(self, mib):
        """A file of at least mib MiB of random bytes in the scratch
        directory, read once so it is in the page cache."""
        f = os.path.join(self.root, "random-src")
        have = os.path.getsize(f) // MiB if os.path.exists(f) else 0
        if have < mib:
            with open(f, "ab") as fh:
                for _ in range(mib - have):
                    fh.write(os.urandom(MiB))
        subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=1M", f"count={mib}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return f

    def dd_fsync_s(self, mib, src="/dev/zero"):
        """Seconds of `dd bs=1M count=mib conv=fsync` from src into the
        scratch directory."""
        f = os.path.join(self.root, "ddfile-size")
        cmd = ["dd", f"if={src}", f"of={f}", "bs=1M", f"count={mib}", "iflag=fullblock", "conv=fsync"]
        t = time.monotonic()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        dt = time.monotonic() - t
        try:
            os.unlink(f)
        except OSError:
            pass
        if r.returncode:
            self.fail("dd", cmd, r.stderr)
            return None
        return dt

    def diskspeed_all(self):
        """For each size of --disk-sizes (and 16 processes of 64 MiB): `dd`
        of the same number of bytes with fsync right before and right after
        a durable uncompressed checkpoint of that much random memory; the
        checkpoint's wall time against the faster dd of the pair (this disk
        drifts)."""
        self.res["diskspeed"] = []
        plan = [("random", s) for s in self.a.disk_sizes if self.fits(s, 1.2, 2.5)]
        plan.append(("procs", PROCS_MIB))
        src = self.random_source(max(s for _, s in plan))
        for rep in range(self.a.reps):
            for kind, size in plan:
                self.random_source(size)  # back in the page cache
                before = self.dd_fsync_s(size, src)
                zero_before = self.dd_fsync_s(size)
                r = self.ckpt_one(kind, size, "none")
                self.random_source(size)
                zero_after = self.dd_fsync_s(size)
                after = self.dd_fsync_s(size, src)
                r.update(rep=rep, dd_before=before, dd_after=after, dd_zero_before=zero_before,
                         dd_zero_after=zero_after)
                self.res["diskspeed"].append(r)
                log(f"diskspeed rep {rep + 1}/{self.a.reps} {kind} {size}: ckpt={r.get('ckpt_wall')} "
                    f"dd random before={before} after={after} zeros before={zero_before} "
                    f"after={zero_after} ok={r.get('ok')}")

    def diskspeed_report(self):
        L = ["### Durable checkpoint against dd of the same size (issue 20)\n"]
        P = self.res.get("diskspeed")
        if not P:
            return L + ["not run (--only diskspeed)\n"]
        L.append("Random memory, codec none, `dmtcp-command -bc` (returns once the images are "
                 "fsync'ed) against `dd bs=1M conv=fsync` of the same number of bytes into the same "
                 "directory right before and right after it, of random bytes (from a file in the page "
                 "cache: what the checkpoint writes) and of zeros (`/dev/zero`); ratio = checkpoint / "
                 "the faster dd of its pair, median over the repetitions (goal <= 1.15x). `procs` = 16 "
                 "processes of 64 MiB. A virtual disk may write zero blocks much faster than data: the "
                 "random-bytes dd is the limit for this checkpoint.\n")
        L.append("| workload | MiB | ckpt ms | dd random ms | ratio to random | dd zeros ms | ratio to zeros | ok |")
        L.append("|---|---|---|---|---|---|---|---|")
        by = {}
        for r in P:
            by.setdefault((r["kind"], r["size"]), []).append(r)
        for (kind, size), rs in by.items():
            cols = []
            for pair in (("dd_before", "dd_after"), ("dd_zero_before", "dd_zero_after")):
                ratios, dds = [], []
                for r in rs:
                    d = min([x for x in (r.get(pair[0]), r.get(pair[1])) if x], default=None)
                    dds.append(d)
                    if d and r.get("ckpt_wall"):
                        ratios.append(r["ckpt_wall"] / d)
                rt = med(ratios)
                cols += [ms(med(dds)), f"{rt:.2f}x" if rt else "-"]
            L.append(f"| {kind} | {size} | {ms(med([r.get('ckpt_wall') for r in rs]))} | "
                     + " | ".join(cols) + f" | {sum(1 for r in rs if r.get('ok'))}/{len(rs)} |")
        L.append("")
        return L

    def unpriv_report(self):
        L = ["### Unprivileged against root (issue 20)\n"]
        P = self.res.get("unpriv")
        if not P:
            return L + ["not run (--only)\n"]
        L.append("Workload `random` 1 GiB, codec none, the same commands as root and as uid 65534 "
                 "(`setpriv`, no capabilities: a user namespace of the computation's own), alternating; "
                 "copied restart = `DMTCP_RESTART_LAZY=0` (what every unprivileged restart does here); "
                 "medians.\n")
        L.append("| uid | frozen ms | ckpt ms | copied restart ms | ok |")
        L.append("|---|---|---|---|---|")
        by = {}
        for r in P:
            by.setdefault(r["uid"], []).append(r)
        for uid, rs in sorted(by.items()):
            L.append(f"| {uid} | {ms(med([r.get('frozen') for r in rs]))} | "
                     f"{ms(med([r.get('ckpt_wall') for r in rs]))} | "
                     f"{ms(med([r.get('restart_eager_wall') for r in rs]))} | "
                     f"{sum(1 for r in rs if r.get('ok'))}/{len(rs)} |")
        if 0 in by and 65534 in by:
            def ratio(k):
                a, b = med([r.get(k) for r in by[65534]]), med([r.get(k) for r in by[0]])
                return f"{a / b:.2f}x" if a and b else "-"
            L.append(f"| 65534 / 0 | {ratio('frozen')} | {ratio('ckpt_wall')} | "
                     f"{ratio('restart_eager_wall')} | |")
        L.append("")
        return L

    def precopy_report(self):
        L = ["### Frozen time: pre-copy against the fork snapshot (issue 20)\n"]
        P = self.res.get("precopy")
        if not P:
            return L + ["not run (--only)\n"]
        L.append("Codec none; fork = the copy-on-write snapshot child (default); "
                 "pre-copy = `DMTCP_PRECOPY=1` (memory copied while the program runs, only what it "
                 "wrote since read while frozen). frozen = 'froze' + 'captured' + 'thawed'; ckpt = "
                 "`dmtcp-command -bc` wall clock (includes the pre-copy pass); medians, with the range.\n")
        L.append("| workload | uid | MiB | mode | which ran | frozen ms (median) | frozen ms (min-max) | "
                 "snapshot made ms | pre-copy pass ms | residue KiB | ckpt ms | ok |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        groups = {}
        for r in P:
            groups.setdefault((r["kind"], r.get("uid", 0), r["size"], r["mode"]), []).append(r)
        for (kind, uid, size, mode), rs in sorted(groups.items()):
            fr = [r["frozen"] for r in rs if r.get("frozen") is not None]
            L.append(f"| {kind} | {uid} | {size} | {mode} | "
                     f"{','.join(sorted({r.get('snapshot') or 'none' for r in rs}))} | "
                     f"{ms(med(fr))} | {ms(min(fr)) if fr else '-'}-{ms(max(fr)) if fr else '-'} | "
                     f"{ms(med([r.get('snapshot_made') for r in rs]))} | "
                     f"{ms(med([r.get('precopy_time') for r in rs]))} | "
                     f"{fmt(med([r.get('residue_kib') for r in rs]), '{:.0f}')} | "
                     f"{ms(med([r.get('ckpt_wall') for r in rs]))} | "
                     f"{sum(1 for r in rs if r.get('ok'))}/{len(rs)} |")
        L.append("")
        return L

    # ---------- 2b. incremental checkpoints ----------
    def incr_one(self, size, codec):
        """Full checkpoint, 1% of the pages rewritten, incremental checkpoint,
        restart from the chain. Returns a dict."""
        work = tempfile.mkdtemp(prefix=f"incr-{size}-{codec}.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        env = self.env(tmp)
        r = {"size": size, "codec": codec, "ok": False}
        port = None
        what = f"incremental {size} MiB {codec}"
        try:
            port, ckpt = self.start_coord(work, env)
            runcmd = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--compress", codec,
                      "--incremental", "--", self.wl, "dirty", str(size)]
            run = self.popen(runcmd, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = Lines(run.stdout), Lines(run.stderr)
            if out.wait_for(r"^READY", 300)[0] is None:
                self.fail(f"{what}: launch", runcmd, f"no READY; stderr:\n{err.text()}")
                return r
            bc = [f"{self.bin}/dmtcp-command", "-p", str(port), "-bc"]
            for step in ("full", "incr"):
                if step == "incr":
                    nout = len(out.lines)
                    run.stdin.write(b"dirty\n")
                    run.stdin.flush()
                    if out.wait_for(r"^DIRTIED", 60, nout)[0] is None:
                        self.fail(f"{what}: dirty", runcmd, "no DIRTIED")
                        return r
                nerr = len(err.lines)
                t0 = time.monotonic()
                c = subprocess.run(bc, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, timeout=600)
                r[f"{step}_ckpt"] = time.monotonic() - t0
                if c.returncode != 0:
                    self.fail(f"{what}: {step} checkpoint", bc, f"{c.stdout}{c.stderr}\n{err.text()}")
                    return r
                paths = [l.strip() for l in c.stdout.splitlines() if l.strip().startswith("/")]
                r[f"{step}_bytes"] = sum(os.path.getsize(p) for p in paths)
                r[f"{step}_paths"] = paths
                _, mf = err.wait_for(r"froze \d+ process\(es\) in (\S+)", 5, nerr)
                _, mc = err.wait_for(r"\): captured in (\S+)", 5, nerr)
                r[f"{step}_frozen"] = parse_dur(mf.group(1)) + parse_dur(mc.group(1)) if mf and mc else None
            self.cmd(port, "-k", env)
            self.reap(run, 30)
            rscmd = [f"{self.bin}/dmtcp-restart", "-p", str(port)] + r["incr_paths"]
            t0 = time.monotonic()
            rs = self.popen(rscmd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            rerr = Lines(rs.stderr)
            t, _ = rerr.wait_for(r"pid (\d+) restored", 300)
            if t is None:
                self.fail(f"{what}: restart from the chain", rscmd, rerr.text())
            else:
                r["restart_chain"] = t - t0
                r["ok"] = True
            self.cmd(port, "-k", env)
            self.reap(rs, 30)
            return r
        except Exception as e:
            self.fail(what, [size, codec], f"{type(e).__name__}: {e}")
            return r
        finally:
            if port:
                self.stop_coord(port, env)
            for p in list(self.procs):
                if p.poll() is None:
                    p.kill()
                self.reap(p, 10)
            shutil.rmtree(work, ignore_errors=True)

    def incr_all(self):
        size = max(self.a.sizes) if max(self.a.sizes) <= 1024 else 1024
        for rep in range(self.a.reps):
            for codec in ("zstd", "none"):
                r = self.incr_one(size, codec)
                r["rep"] = rep
                self.res.setdefault("incr", []).append(r)
                log(f"rep {rep + 1}/{self.a.reps} incremental {size} {codec}: "
                    + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in r.items() if not k.endswith("_paths")))

    def incr_report(self):
        rows = self.res.get("incr") or []
        if not rows:
            return []
        L = ["## Incremental checkpoints\n",
             "`dmtcp-run --incremental`, `workload dirty N`: a full checkpoint, then 1% of the pages "
             "rewritten (random pages), then an incremental checkpoint; restart = from the chain "
             "(the incremental image and its parent), until 'restored'. Medians.\n",
             "| MiB | codec | full image | incr. image | size ratio | full ckpt ms | incr. ckpt ms | "
             "time ratio | full frozen ms | incr. frozen ms | restart from chain ms | ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        self.incr_summary = {}
        for codec in ("zstd", "none"):
            rs = [r for r in rows if r["codec"] == codec]
            if not rs:
                continue
            s = {f: med([r.get(f) for r in rs]) for f in (
                "full_bytes", "incr_bytes", "full_ckpt", "incr_ckpt", "full_frozen", "incr_frozen",
                "restart_chain")}
            s["size_ratio"] = s["incr_bytes"] / s["full_bytes"] if s["incr_bytes"] and s["full_bytes"] else None
            s["time_ratio"] = s["incr_ckpt"] / s["full_ckpt"] if s["incr_ckpt"] and s["full_ckpt"] else None
            self.incr_summary[codec] = s
            L.append(f"| {rs[0]['size']} | {codec} | {human(s['full_bytes'])} | {human(s['incr_bytes'])} | "
                     f"{fmt(s['size_ratio'] and s['size_ratio'] * 100, '{:.2f}%')} | {ms(s['full_ckpt'])} | "
                     f"{ms(s['incr_ckpt'])} | {fmt(s['time_ratio'] and s['time_ratio'] * 100, '{:.1f}%')} | "
                     f"{ms(s['full_frozen'])} | {ms(s['incr_frozen'])} | {ms(s['restart_chain'])} | "
                     f"{sum(1 for r in rs if r.get('ok'))}/{len(rs)} |")
        L.append("")
        return L

    # ---------- 3. overhead ----------
    def overhead(self):
        work = tempfile.mkdtemp(prefix="overhead.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        env = self.env(tmp, debug=False)
        o = self.res["overhead"]
        port = None
        try:
            port, _ = self.start_coord(work, env)
            run = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--"]
            sandboxed = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--sandbox", "--"]
            nons = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--no-namespaces", "--"]
            for name, mode, n in (("getpid", "getpid", self.a.getpid_n),
                                  ("libcgetpid", "libcgetpid", self.a.getpid_n),
                                  ("fork", "fork", self.a.fork_n)):
                vals = {"native": [], "dmtcp": [], "sandbox": [], "nons": []}
                # every way alternates, so drift of a shared machine hits all alike
                for _ in range(self.a.oh_reps):
                    for how, pre in (("native", []), ("dmtcp", run), ("sandbox", sandboxed), ("nons", nons)):
                        c = pre + [self.oh, mode, str(n)]
                        p = subprocess.run(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, timeout=300)
                        m = re.search(r"^NS (\d+) (\d+)", p.stdout, re.M)
                        if p.returncode or not m:
                            self.fail(f"overhead {name} {how}", c, f"exit {p.returncode}: {p.stdout}{p.stderr}")
                            continue
                        vals[how].append(int(m.group(1)) / n)  # ns per iteration
                for how in vals:
                    o[f"{name}_{how}_ns"] = med(vals[how])
                    o[f"{name}_{how}_all_ns"] = vals[how]
                    log(f"overhead {name} {how}: {vals[how]} ns/iter")
            for how, pre in (("native", []), ("dmtcp", run)):
                vals = []
                c = pre + ["/bin/true"]
                for _ in range(self.a.launch_n):
                    t = time.monotonic()
                    p = subprocess.run(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       timeout=60)
                    dt = time.monotonic() - t
                    if p.returncode:
                        self.fail(f"overhead /bin/true {how}", c, f"exit {p.returncode}: {p.stderr.decode()}")
                        break
                    vals.append(dt)
                o[f"true_{how}_s"] = med(vals)
                log(f"overhead /bin/true {how}: {o[f'true_{how}_s']} s/launch")
        except Exception as e:
            self.fail("overhead", [], f"{type(e).__name__}: {e}")
        finally:
            if port:
                self.stop_coord(port, env)
            shutil.rmtree(work, ignore_errors=True)

    # ---------- 3b. attach ----------
    def attach_one(self, label, mode, n):
        """A workload started outside dmtcp; `dmtcp-attach`, then `dmtcp-command -bc`.
        Returns the attach's own stop time (what it prints), the time from
        starting dmtcp-attach to attached, and to the first checkpoint durable."""
        work = tempfile.mkdtemp(prefix="attach.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp, mode=0o700)
        env = self.env(tmp, debug=False)
        port = None
        wl = att = None
        r = {"label": label}
        try:
            port, ckpt = self.start_coord(work, env)
            wl = self.popen([self.wl, mode, str(n)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
            out = Lines(wl.stdout)
            if out.wait_for(r"^READY$", 120)[0] is None:
                raise RuntimeError("workload never printed READY")
            t0 = time.monotonic()
            att = self.popen([f"{self.bin}/dmtcp-attach", "-p", str(port), str(wl.pid)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            err = Lines(att.stderr)
            t1, m = err.wait_for(r"attached to pid \d+: (\d+) process\(es\), (\d+) thread\(s\), stopped ([0-9.]+) ms", 120)
            if t1 is None:
                raise RuntimeError("dmtcp-attach did not attach: " + err.text())
            r["procs"], r["threads"], r["stopped_s"] = int(m.group(1)), int(m.group(2)), float(m.group(3)) / 1e3
            r["attach_s"] = t1 - t0
            c = self.cmd(port, "-bc", env)
            t2 = time.monotonic()
            if c.returncode != 0:
                raise RuntimeError("dmtcp-command -bc: " + c.stderr.decode(errors="replace"))
            r["first_ckpt_s"] = t2 - t0
            r["ok"] = True
        except Exception as e:
            self.fail(f"attach {label}", [], f"{type(e).__name__}: {e}")
            r["ok"] = False
        finally:
            if wl is not None:
                self.kill_group(wl.pid)
                self.reap(wl)
            if att is not None:
                self.reap(att)
            if port:
                self.stop_coord(port, env)
            shutil.rmtree(work, ignore_errors=True)
        log(f"attach {label}: {r}")
        return r

    def attach_all(self):
        if not os.access(os.path.join(self.bin, "dmtcp-attach"), os.X_OK):
            self.res["attach"] = {"skipped": "dmtcp-attach not built"}
            return
        rows = []
        for label, mode, n in (("1 thread", "threads", 0), ("64 threads", "threads", 63),
                               ("512 threads", "threads", 511), ("100 processes", "tree", 100)):
            for _ in range(self.a.reps):
                rows.append(self.attach_one(label, mode, n))
        self.res["attach"] = {"rows": rows}

    def attach_report(self):
        L = ["## dmtcp-attach\n"]
        a = self.res.get("attach")
        if not a:
            return L + ["not run (--only)\n"]
        if "skipped" in a:
            return L + [a["skipped"] + "\n"]
        L.append(f"A `workload` started outside dmtcp (own session), idle; medians of {self.a.reps} "
                 "repetition(s). *stopped*: how long the attach held one process stopped at most (its trial freeze, "
                 "as dmtcp-attach prints it); *attached*: from starting `dmtcp-attach` to its "
                 "\"attached\" line; *first checkpoint*: from starting `dmtcp-attach` to `dmtcp-command -bc` "
                 "returning (images durable).\n")
        L.append("| workload | processes | threads | stopped (ms) | attached (ms) | first checkpoint (ms) |")
        L.append("|---|---:|---:|---:|---:|---:|")
        groups = {}
        for r in a["rows"]:
            groups.setdefault(r["label"], []).append(r)
        for label, rs in groups.items():
            ok = [r for r in rs if r.get("ok")]
            if not ok:
                L.append(f"| {label} | failed | | | | |")
                continue
            L.append(f"| {label} | {ok[0]['procs']} | {ok[0]['threads']} | {ms(med([r['stopped_s'] for r in ok]))} "
                     f"| {ms(med([r['attach_s'] for r in ok]))} | {ms(med([r['first_ckpt_s'] for r in ok]))} |")
        return L + [""]

    # ---------- 3c. seccomp ----------
    def seccomp_cost(self):
        """Checkpoint and restore time of a 3-thread program with 0 and 10 seccomp filters."""
        o = self.res["overhead"]
        for n in (0, 10):
            work = tempfile.mkdtemp(prefix=f"seccomp-{n}.", dir=self.root)
            tmp = os.path.join(work, "tmp")
            os.makedirs(tmp)
            env = dict(self.env(tmp), ZDTM_STOP=os.path.join(work, "stop"))
            port = None
            try:
                port, _ = self.start_coord(work, env)
                runcmd = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--", self.sc, "many", str(n)]
                run = self.popen(runcmd, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                out, err = Lines(run.stdout), Lines(run.stderr)
                t, _ = out.wait_for(r"^READY", 60)
                if t is None:
                    self.fail(f"seccomp {n} filters: launch", runcmd, err.text())
                    continue
                nerr = len(err.lines)
                bc = [f"{self.bin}/dmtcp-command", "-p", str(port), "-bc"]
                c = subprocess.run(bc, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, timeout=120)
                if c.returncode:
                    self.fail(f"seccomp {n} filters: checkpoint", bc, c.stdout + c.stderr)
                    continue
                _, mc = err.wait_for(r"\): captured in (\S+)", 5, nerr)
                o[f"seccomp{n}_captured_s"] = parse_dur(mc.group(1)) if mc else None
                paths = [l.strip() for l in c.stdout.splitlines() if l.strip().startswith("/")]
                self.cmd(port, "-k", env)
                self.reap(run, 30)
                rscmd = [f"{self.bin}/dmtcp-restart", "-p", str(port)] + paths
                rs = self.popen(rscmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                t, ms_ = Lines(rs.stderr).wait_count(r"pid (\d+) restored \((\d+) threads\) in (\S+)", 1, 60)
                o[f"seccomp{n}_restored_s"] = parse_dur(ms_[-1].group(3)) if t is not None else None
                log(f"seccomp {n} filters: captured in {o[f'seccomp{n}_captured_s']} s, "
                    f"restored in {o[f'seccomp{n}_restored_s']} s")
                self.cmd(port, "-k", env)
                self.reap(rs, 30)
            except Exception as e:
                self.fail(f"seccomp {n} filters", [], f"{type(e).__name__}: {e}")
            finally:
                if port:
                    self.stop_coord(port, env)
                for p in list(self.procs):
                    if p.poll() is None:
                        p.kill()
                    self.reap(p, 10)
                shutil.rmtree(work, ignore_errors=True)

    def codecs(self):
        """The checkpoint's compression on every core against each codec alone on one
        thread: `workload text` checkpointed with each codec into /dev/shm (so that the disk
        does not count) with the snapshot fork (`DMTCP_PRECOPY=0`: every page after the
        thaw), the supervisor's 'image written in' (pages read, compressed by the
        page readers, one per core, and written); the codecs alone (`codec_speed --file`
        example of dmtcp-image) over the uncompressed image of the same memory. Goal: the
        checkpoint at >= 90% of cores x the codec alone."""
        c = self.res.setdefault("codecs", {"raw": {}, "ckpt": {}, "ratio": {}})
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        exe = os.path.join(target, "release", "examples", "codec_speed")
        cmd = ["cargo", "build", "--release", "-q", "-p", "dmtcp-image", "--example", "codec_speed"]
        try:
            b = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.fail("codecs: build", cmd, f"{type(e).__name__}: {e}")
            return
        if b.returncode or not os.access(exe, os.X_OK):
            self.fail("codecs: build", cmd, b.stdout)
            return
        n = os.cpu_count() or 1
        mib = 128 if self.a.quick else 512
        c.update(cores=n, mib=mib)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        root = self.root
        if shm:
            self.root = tempfile.mkdtemp(prefix="dmtcp-bench-codecs.", dir=shm)
            os.chmod(self.root, 0o755)
        c["dir"] = "/dev/shm" if shm else "the bench directory"
        kept = os.path.join(root, "codecs-none.img")
        try:
            for rep in range(self.a.reps):
                for codec in ("none", "zstd", "lz4", "gzip"):
                    keep = kept if codec == "none" and rep == 0 else None
                    # The snapshot fork, not pre-copy: every page is read, compressed
                    # and written after the thaw, in the time 'image written in' gives.
                    r = self.ckpt_one("text", mib, codec, extra_env={"DMTCP_PRECOPY": "0"},
                                      keep_image=keep)
                    if r.get("written"):
                        c["ckpt"].setdefault(codec, []).append(mib * MiB / r["written"] / 1e6)
                        c.setdefault("image", {})[codec] = r.get("image_bytes")
            if not os.path.exists(kept):
                self.fail("codecs", [], "no uncompressed image kept")
                return
            run = [exe, "--file", kept]
            for rep in range(self.a.reps):
                r = subprocess.run(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=1800)
                if r.returncode:
                    self.fail("codecs", run, r.stdout + r.stderr)
                    return
                for line in r.stdout.splitlines():
                    m = re.match(r"^raw (\S+) 1 thread: (\d+) MB/s ratio ([\d.]+)", line)
                    if m:
                        c["raw"].setdefault(m.group(1), []).append(float(m.group(2)))
                        c["ratio"][m.group(1)] = float(m.group(3))
            log(f"codecs: checkpoint MB/s {c['ckpt']}, codecs alone {c['raw']}")
        finally:
            if shm:
                shutil.rmtree(self.root, ignore_errors=True)
            self.root = root
            try:
                os.unlink(kept)
            except OSError:
                pass

    def codecs_report(self):
        c = self.res.get("codecs")
        if not c or not c.get("ckpt"):
            return []
        n = c.get("cores", 1)
        L = ["## Codecs: the checkpoint on every core against the codec alone\n",
             f"`workload text {c.get('mib')}` checkpointed with `--compress CODEC` into {c.get('dir')} "
             "(the disk does not count), with the snapshot fork (`DMTCP_PRECOPY=0`, so that every "
             "page is read, compressed and written after the thaw); checkpoint = memory / the supervisor's 'image written in' "
             f"(pages read, compressed by the page readers, {n} threads, and written). Codec alone = "
             "one thread compressing the uncompressed image of the same memory in 4 MiB blocks "
             "(`codec_speed --file`, the checkpoint's levels: zstd 1, gzip 1). "
             f"Medians of {self.a.reps}. Goal: the checkpoint at >= 90% of {n} x the codec alone.\n",
             f"| codec | image | checkpoint, {n} threads | codec alone, 1 thread | checkpoint / ({n} x alone) |",
             "|---|---|---|---|---|"]
        alone = {"zstd": "zstd-1", "gzip": "gzip-1", "lz4": "lz4-0"}
        for codec in ("none", "zstd", "lz4", "gzip"):
            w = med(c["ckpt"].get(codec, []))
            raw = med(c["raw"].get(alone.get(codec), [])) if codec in alone else None
            share = w / (n * raw) if raw and w else None
            L.append(f"| {codec} | {human(c.get('image', {}).get(codec))} | {fmt(w, '{:.0f} MB/s')} | "
                     f"{fmt(raw, '{:.0f} MB/s')} | {fmt(share, '{:.0%}')} |")
        L.append("")
        return L

    def rawtrap(self):
        """Inline `syscall` getpid vs glibc's syscall() without namespaces, before and
        after a restart (after it the inline call is trapped and translated):
        `overhead rawcost N 20` blocks of 10000, checkpointed and restarted in the middle."""
        o = self.res["overhead"]
        work = tempfile.mkdtemp(prefix="rawtrap.", dir=self.root)
        tmp = os.path.join(work, "tmp")
        os.makedirs(tmp)
        env = self.env(tmp, debug=False)
        outp = os.path.join(work, "out")
        port = None
        try:
            port, _ = self.start_coord(work, env)
            n = 2_000_000 if not self.a.quick else 600_000
            runcmd = [f"{self.bin}/dmtcp-run", "--coord-port", str(port), "--no-namespaces", "--",
                      self.oh, "rawcost", str(n), "20"]
            with open(outp, "wb") as f:
                run = self.popen(runcmd, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while open(outp).read().count("BLOCK") < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
            bc = [f"{self.bin}/dmtcp-command", "-p", str(port), "-bc"]
            c = subprocess.run(bc, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=120)
            if c.returncode:
                self.fail("rawtrap: checkpoint", bc, c.stdout + c.stderr)
                return
            paths = [l.strip() for l in c.stdout.splitlines() if l.strip().startswith("/")]
            self.cmd(port, "-k", env)
            self.reap(run, 30)
            size = os.path.getsize(outp)
            rscmd = [f"{self.bin}/dmtcp-restart", "-p", str(port)] + paths
            rs = self.popen(rscmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
            err = Lines(rs.stderr)
            deadline = time.monotonic() + 300
            while not re.search(r"^NS ", open(outp).read(), re.M) and time.monotonic() < deadline:
                time.sleep(0.2)
            self.reap(rs, 30)
            # The restart cuts the file back to its size at the checkpoint.
            m = re.search(r"cut back from \d+ to (\d+) bytes", "\n".join(l for _, l in err.lines))
            cut = int(m.group(1)) if m else size
            before, after, at = [], [], 0
            for line in open(outp).read().splitlines(keepends=True):
                f = line.split()
                if f and f[0] == "BLOCK":
                    (before if at < cut else after).append((int(f[1]) / int(f[3]), int(f[2]) / int(f[3])))
                at += len(line.encode())
            for key, blocks in (("before", before), ("after", after)):
                o[f"rawtrap_{key}_inline_ns"] = med([b[0] for b in blocks])
                o[f"rawtrap_{key}_glibc_ns"] = med([b[1] for b in blocks])
                o[f"rawtrap_{key}_blocks"] = len(blocks)
                log(f"rawtrap {key} restart: {len(blocks)} blocks, inline {o[f'rawtrap_{key}_inline_ns']} ns, "
                    f"glibc {o[f'rawtrap_{key}_glibc_ns']} ns")
        except Exception as e:
            self.fail("rawtrap", [], f"{type(e).__name__}: {e}")
        finally:
            if port:
                self.stop_coord(port, env)
            for p in list(self.procs):
                if p.poll() is None:
                    p.kill()
                self.reap(p, 10)
            shutil.rmtree(work, ignore_errors=True)

    # ---------- 4. criu ----------
    @staticmethod
    def pgroup(pgid):
        """Pids of the processes (zombies too) whose process group is pgid."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                st = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(st[2]) == pgid:
                pids.append(int(d))
        return pids

    def kill_group(self, pgid, timeout=10):
        """SIGKILL a process group and wait until none of it is left (reaping the
        members that are our children: we are a subreaper). True if all gone."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            left = self.pgroup(pgid)
            for pid in left:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def criu_one(self, exe, kind, size):
        """Launch (own session), criu dump --leave-running, fsync the images,
        kill, criu restore -d, check, kill. Returns a dict."""
        label = {"threads": f"{size} threads idle",
                 "procs": f"16 processes, random, {size} MiB total"}.get(kind, kind)
        what = f"criu {kind} {size}"
        work = tempfile.mkdtemp(prefix=f"criu-{kind}-{size}.", dir=self.root)
        d = os.path.join(work, "img")
        os.makedirs(d)
        pidf = os.path.join(work, "pid")
        r = {"kind": kind, "size": size, "label": label, "ok": False}
        # The workload is a session and group leader (start_new_session = setsid), its
        # fds are /dev/null and a pipe: no --shell-job needed, on dump or on restore.
        job = []
        pgids = []
        try:
            runcmd = [self.wl, kind, str(size)]
            p = self.popen(runcmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, start_new_session=True)
            pgids.append(p.pid)
            out = Lines(p.stdout)
            if out.wait_for(r"^READY", 300)[0] is None:
                self.fail(f"{what}: launch", runcmd, f"no READY (exit {p.poll()})")
                return r
            dump = [exe, "dump", "-t", str(p.pid), "-D", d, "--leave-running", "--display-stats"] + job
            t0 = time.monotonic()
            c = subprocess.run(dump, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            r["dump_wall"] = time.monotonic() - t0
            if c.returncode != 0:
                self.fail(f"{what}: dump", dump, f"exit {c.returncode}:\n{c.stdout[-2000:]}")
                return r
            t0 = time.monotonic()
            names = os.listdir(d)
            for f in names:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            r["fsync"] = time.monotonic() - t0
            r["dump_fsync"] = r["dump_wall"] + r["fsync"]
            r["image_bytes"] = sum(os.path.getsize(os.path.join(d, f)) for f in names)
            for key, name in (("freezing_us", "Freezing time"), ("frozen_us", "Frozen time"),
                              ("memdump_us", "Memory dump time"), ("memwrite_us", "Memory write time")):
                m = re.search(rf"^{name}: (\d+) us", c.stdout, re.M)
                r[key] = int(m.group(1)) if m else None
            m = re.search(r"^Memory pages written: (\d+)", c.stdout, re.M)
            r["pages_written"] = int(m.group(1)) if m else None
            if not self.kill_group(p.pid):
                self.fail(f"{what}: kill", ["killpg", p.pid], f"left: {self.pgroup(p.pid)}")
                return r
            self.reap(p, 10)
            # restore, images warm in the page cache
            rest = [exe, "restore", "-D", d, "-d", "--pidfile", pidf, "--display-stats"] + job
            t0 = time.monotonic()
            c = subprocess.run(rest, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            r["restore_wall"] = time.monotonic() - t0
            # "Error (criu/util.c:...): rlimit: Can't setup RLIMIT_NOFILE for self" is printed
            # even on success here: only the exit code counts.
            try:
                hp = int(open(pidf).read().strip())
                pgids.append(hp)
            except (OSError, ValueError):
                hp = None
            if c.returncode != 0 or hp is None:
                self.fail(f"{what}: restore", rest, f"exit {c.returncode}, pidfile pid {hp}:\n{c.stdout[-2000:]}")
                return r
            m = re.search(r"^Restore time: (\d+) us", c.stdout, re.M)
            r["restore_us"] = int(m.group(1)) if m else None
            time.sleep(0.05)
            try:
                st = open(f"/proc/{hp}/stat").read().rsplit(")", 1)[1].split()[0]
                r["threads"] = int(re.search(r"^Threads:\s*(\d+)", open(f"/proc/{hp}/status").read(),
                                             re.M).group(1))
            except (OSError, AttributeError):
                st = "gone"
            r["state_after"] = st
            r["procs"] = len(self.pgroup(hp))
            want = 16 if kind == "procs" else 1
            if st not in ("S", "R") or r["procs"] != want:
                self.fail(f"{what}: restore", rest, f"restored pid {hp} is in state {st} 50 ms after restore, "
                          f"{r['procs']} process(es) in its group (want {want}):\n{c.stdout[-2000:]}")
                return r
            r["ok"] = True
            return r
        except Exception as e:
            self.fail(what, [kind, size], f"{type(e).__name__}: {e}")
            return r
        finally:
            for g in pgids:
                if not self.kill_group(g):
                    self.fail(f"{what}: cleanup", ["killpg", g], f"left: {self.pgroup(g)}")
            for q in list(self.procs):
                if q.poll() is None:
                    q.kill()
                self.reap(q, 10)
            shutil.rmtree(work, ignore_errors=True)

    def criu(self):
        exe = shutil.which("criu")
        if not exe:
            self.res["criu"] = {"skipped": "criu >= 4 not found: skipped"}
            print("criu >= 4 not found: skipped")
            return
        v = subprocess.run([exe, "--version"], stdout=subprocess.PIPE, text=True).stdout
        m = re.search(r"Version:\s*(\d+)\.(\d+)", v)
        if not m or int(m.group(1)) < 4:
            self.res["criu"] = {"skipped": f"criu >= 4 not found: skipped (found {v.strip()!r})"}
            print("criu >= 4 not found: skipped")
            return
        kinds = self.a.kinds or ["random", "text", "untouched", "threads", "procs"]
        plan = [(k, s) for k in ("random", "text", "untouched") if k in kinds for s in self.a.sizes
                if s < HUGE_MIB]  # CRIU holds the program frozen while it dumps: not at 16 GiB
        # threads 64 and 512, 16 processes holding 1 GiB; plus whatever the ckpt section
        # ran of these kinds, so that every one of our rows has a CRIU row next to it.
        for kind, base in (("threads", {64, 512, self.a.threads}), ("procs", {PROCS_MIB})):
            if kind in kinds:
                plan += [(kind, s) for s in sorted(base | {r["size"] for r in self.res["ckpt"]
                                                           if r["kind"] == kind})]
        rows = []
        self.res["criu"] = {"version": v.strip(), "rows": rows}
        for rep in range(self.a.reps):
            for kind, size in plan:
                t = time.monotonic()
                r = self.criu_one(exe, kind, size)
                r["rep"] = rep
                rows.append(r)
                log(f"rep {rep + 1}/{self.a.reps} criu {kind:9} {size:5}: "
                    + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in r.items() if k not in ("kind", "size", "label", "rep"))
                    + f" [{time.monotonic() - t:.1f}s]")

    # ---------- 5. report ----------
    def summary(self):
        """Medians per (kind, size, codec)."""
        groups = {}
        for r in self.res["ckpt"]:
            groups.setdefault((r["kind"], r["size"], r["codec"]), []).append(r)
        out = {}
        for key, rs in groups.items():
            s = {"n_ok": sum(1 for r in rs if r.get("ok")), "n": len(rs)}
            for f in ("ckpt_wall", "ckpt_reported", "image_bytes", "durable", "froze", "captured",
                      "capture_memory", "frozen", "thawed", "snapshot_made", "restart_wall", "restored_in", "threads",
                      "restart_eager_wall", "lazy_done"):
                s[f] = med([r.get(f) for r in rs])
            s["snapshot"] = ",".join(sorted({r.get("snapshot") or "none" for r in rs}))
            out[key] = s
        return out

    def report(self):
        S = self.summary()
        self.S = S
        m = self.res["machine"]
        o = self.res["overhead"]
        wr = max([v for v in (m.get("write_fsync_gbs"), m.get("write_fsync_end_gbs")) if v], default=None)
        hot = m.get("hot_read_gbs")
        L = []
        L.append(f"# dmtcp-rs benchmark results\n")
        L.append(f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, `{' '.join(sys.argv[1:]) or '(defaults)'}`; "
                 f"medians of {self.a.reps} repetition(s); git {self.res.get('git', '?')}.\n")
        L.append("## Machine\n")
        L.append("| nproc | memory | kernel | bench dir disk | write+fsync start / end | cold read | hot read |")
        L.append("|---|---|---|---|---|---|---|")
        cold = f"{m['cold_read_gbs']:.2f} GB/s" if m.get("cold_read_gbs") else m.get("cold_read_note", "-")
        L.append(f"| {m.get('nproc', '-')} | {m.get('mem_gib', '-')} GiB | {m.get('kernel', '-')} | {m.get('disk', '-')} | "
                 f"{fmt(m.get('write_fsync_gbs'), '{:.2f}')} / {fmt(m.get('write_fsync_end_gbs'), '{:.2f}')} GB/s | "
                 f"{cold} | {fmt(hot, '{:.1f} GB/s')} |")
        L.append(f"\n(dd of {self.a.dd_mib} MiB, bs=1M, in the bench directory; write+fsync at the start / "
                 f"at the end of the run, the faster one is the limit used below.)\n")
        L.append("## Checkpoint and restart\n")
        L.append("ckpt = wall clock of `dmtcp-command -bc` (returns when images are durable); frozen = "
                 "'froze' + 'captured' + 'thawed' from the supervisor's debug log (the whole time the "
                 "program's threads are stopped); durable = 'durable in' (written and fsynced after the "
                 "program resumed); restart = wall clock from exec of `dmtcp-restart` until the program "
                 "runs again (its 'restored' log line; image in page cache); for `none` the restart is "
                 "lazy (as root): pages-in = when the last page was in place, counted from the restore, "
                 "and copied-restart = the same restart with `DMTCP_RESTART_LAZY=0` (every page copied "
                 "before the program runs, as unprivileged restarts do). "
                 "ckpt % = (process memory / ckpt time) / write+fsync speed; restart % = "
                 "(memory / restart time) / hot read speed.\n")
        L.append("| workload | MiB | codec | image | ckpt ms | frozen ms | durable ms | "
                 "ckpt MB/s | ckpt % of fsync-write | restart ms | pages-in ms | copied-restart ms | "
                 "restart % of hot read | ok |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (kind, size, codec), s in sorted(S.items(), key=lambda kv: (
                ["random", "text", "untouched", "threads", "procs"].index(kv[0][0]), kv[0][1],
                CODECS.index(kv[0][2]) if kv[0][2] in CODECS else len(CODECS), kv[0][2])):
            mem = size * MiB if kind != "threads" else None
            tp = mem / s["ckpt_wall"] / 1e6 if (mem and s["ckpt_wall"]) else None
            rtp = mem / s["restart_wall"] / 1e9 if (mem and s["restart_wall"]) else None
            label = {"threads": f"{size} threads idle", "procs": "16 processes, random"}.get(kind, kind)
            L.append(f"| {label} | {size if kind != 'threads' else '-'} | {codec} | {human(s['image_bytes'])} | "
                     f"{ms(s['ckpt_wall'])} | {ms(s['frozen'])} | {ms(s['durable'])} | "
                     f"{fmt(tp, '{:.0f}')} | {pct(tp / 1e3 if tp else None, wr)} | {ms(s['restart_wall'])} | "
                     f"{ms(s['lazy_done'])} | {ms(s['restart_eager_wall'])} | {pct(rtp, hot)} | "
                     f"{s['n_ok']}/{s['n']} |")
        L.append(f"\n16 processes: a parent and 15 children, {PROCS_MIB // 16} MiB of random data each; "
                 "frozen = freeze of all + the capture of all (the supervisor's 'captured 16 "
                 "process(es)' line: side by side since session 35; builds before it capture one "
                 "after the other and the sum of their per-process captures is used) + thaw; "
                 "restart = until the 16th process is restored.\n")
        L.extend(self.wpfloor_report(S))
        L.extend(self.precopy_report())
        L.extend(self.threadfloor_report(S))
        L.extend(self.precopy_cost_report())
        L.extend(self.unpriv_report())
        L.extend(self.diskspeed_report())
        L.extend(self.incr_report())
        L.extend(self.codecs_report())
        L.append("## Runtime overhead (native vs under dmtcp-run)\n")
        L.append("| test | native | dmtcp-run | ratio | difference |")
        L.append("|---|---|---|---|---|")
        for name, label, unit in (("getpid", f"{self.a.getpid_n} x syscall(SYS_getpid), per call", "ns"),
                                  ("fork", f"{self.a.fork_n} x fork+waitpid, per pair", "us")):
            a, b = o.get(f"{name}_native_ns"), o.get(f"{name}_dmtcp_ns")
            div = 1 if unit == "ns" else 1e3
            L.append(f"| {label} | {fmt(a and a / div, '{:.2f} ' + unit)} | {fmt(b and b / div, '{:.2f} ' + unit)} | "
                     f"{fmt(b / a if a and b else None, '{:.3f}x')} | {fmt((b - a) / div if a and b else None, '{:+.2f} ' + unit)} |")
        a, b = o.get("true_native_s"), o.get("true_dmtcp_s")
        L.append(f"| launch /bin/true ({self.a.launch_n} each way, median) | {ms(a)} ms | {ms(b)} ms | "
                 f"{fmt(b / a if a and b else None, '{:.1f}x')} | {fmt((b - a) * 1e3 if a and b else None, '{:+.1f} ms')} |")
        L.append("\nNothing is trapped under dmtcp-run: processes are found in /proc when a checkpoint "
                 "freezes the computation.\n")
        L.append("## Without namespaces (dmtcp-run --no-namespaces: virtual pids)\n")
        L.append("| test | native | namespaces | no namespaces | ratio to native (goal <= 1.05x getpid, <= 1.5x fork) |")
        L.append("|---|---|---|---|---|")
        for name, label, unit in (("libcgetpid", f"{self.a.getpid_n} x getpid() through libc, per call", "ns"),
                                  ("getpid", f"{self.a.getpid_n} x syscall(SYS_getpid) (libc's syscall(), translated too), per call", "ns"),
                                  ("fork", f"{self.a.fork_n} x fork+waitpid, per pair", "us")):
            a, b, c = o.get(f"{name}_native_ns"), o.get(f"{name}_dmtcp_ns"), o.get(f"{name}_nons_ns")
            div = 1 if unit == "ns" else 1e3
            L.append(f"| {label} | {fmt(a and a / div, '{:.2f} ' + unit)} | {fmt(b and b / div, '{:.2f} ' + unit)} | "
                     f"{fmt(c and c / div, '{:.2f} ' + unit)} | {fmt(c / a if a and c else None, '{:.3f}x')} |")
        ib, gb = o.get("rawtrap_before_inline_ns"), o.get("rawtrap_before_glibc_ns")
        ia, ga = o.get("rawtrap_after_inline_ns"), o.get("rawtrap_after_glibc_ns")
        if ia or ib:
            L.append(f"\nRaw `syscall` instruction (`overhead rawcost`, median of blocks of 10000 getpid; "
                     f"{o.get('rawtrap_before_blocks')} blocks before the restart, "
                     f"{o.get('rawtrap_after_blocks')} after): before the restart inline {fmt(ib, '{:.0f} ns')}, "
                     f"glibc's syscall() {fmt(gb, '{:.0f} ns')}; after it (inline trapped by the filter and "
                     f"translated by the SIGSYS handler) inline {fmt(ia, '{:.0f} ns')}, glibc's "
                     f"{fmt(ga, '{:.0f} ns')} ({fmt(ia / ga if ia and ga else None, '{:.1f}x')}).")
        L.append("")
        L.extend(self.attach_report())
        L.append("## Sandbox (dmtcp-run --sandbox, default policy) and seccomp filters\n")
        L.append("| test | dmtcp-run | --sandbox | ratio (goal <= 1.05x) |")
        L.append("|---|---|---|---|")
        for name, label, unit in (("getpid", f"{self.a.getpid_n} x syscall(SYS_getpid), per call", "ns"),
                                  ("fork", f"{self.a.fork_n} x fork+waitpid, per pair", "us")):
            a, b = o.get(f"{name}_dmtcp_ns"), o.get(f"{name}_sandbox_ns")
            div = 1 if unit == "ns" else 1e3
            L.append(f"| {label} | {fmt(a and a / div, '{:.2f} ' + unit)} | {fmt(b and b / div, '{:.2f} ' + unit)} | "
                     f"{fmt(b / a if a and b else None, '{:.3f}x')} |")
        a0, a10 = o.get("seccomp0_captured_s"), o.get("seccomp10_captured_s")
        r0, r10 = o.get("seccomp0_restored_s"), o.get("seccomp10_restored_s")
        L.append(f"\n3 threads, 0 vs 10 seccomp filters: capture {ms(a0)} ms vs {ms(a10)} ms, "
                 f"restore {ms(r0)} ms vs {ms(r10)} ms.\n")
        L.extend(self.criu_report(S))
        L.append("\n## Goals\n")
        L.append("| goal | target | measured | verdict |")
        L.append("|---|---|---|---|")
        for g in self.goals(S, o):
            L.append("| " + " | ".join(g) + " |")
        L.append("\n## Failures\n")
        if self.failures:
            for f in self.failures:
                L.append("```\n" + f + "\n```")
        else:
            L.append("none")
        return "\n".join(L) + "\n"

    def criu_report(self, S):
        L = ["## CRIU\n"]
        c = self.res["criu"] or {}
        if not c:
            return L + ["not run (--only)\n"]
        if "skipped" in c:
            return L + [c["skipped"] + "\n"]
        groups = {}  # (kind, size) -> reps, in the order run
        for r in c.get("rows", []):
            groups.setdefault((r["kind"], r["size"]), []).append(r)
        C = {}
        for key, rs in groups.items():
            x = {"n_ok": sum(1 for r in rs if r.get("ok")), "n": len(rs), "label": rs[0]["label"]}
            for f in ("dump_wall", "fsync", "dump_fsync", "image_bytes", "restore_wall"):
                x[f] = med([r.get(f) for r in rs])
            for f in ("freezing_us", "frozen_us", "memdump_us", "memwrite_us"):
                x[f] = med([r[f] / 1e6 if r.get(f) is not None else None for r in rs])  # seconds
            x["stopped"] = med([(r["freezing_us"] + r["frozen_us"]) / 1e6 if r.get("freezing_us") is not None
                                and r.get("frozen_us") is not None else None for r in rs])
            C[key] = x
        ver = " ".join(c.get("version", "").split())
        L.append(f"{ver}. Medians of {self.a.reps} repetition(s). The workload runs in its own session "
                 "(setsid), stdout a pipe; `criu dump -t PID -D DIR --leave-running --display-stats` "
                 "(the program keeps running, as with ours); freezing / frozen / memory dump / memory "
                 "write = CRIU's own --display-stats; dump = wall clock of `criu dump`; +fsync = dump "
                 "then fsync of every image file and of the directory (durable, like our `-bc`); "
                 "restore = wall clock of `criu restore -D DIR -d --pidfile F` after SIGKILL of the "
                 "original process group, images in the page cache. CRIU does not compress.\n")
        L.append("| workload | MiB | image | freezing ms | frozen ms | memory dump ms | memory write ms | "
                 "dump ms | dump+fsync ms | restore ms | ok |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for (kind, size), x in C.items():
            L.append(f"| {x['label']} | {size if kind != 'threads' else '-'} | {human(x['image_bytes'])} | "
                     f"{ms(x['freezing_us'])} | {ms(x['frozen_us'])} | {ms(x['memdump_us'])} | "
                     f"{ms(x['memwrite_us'])} | {ms(x['dump_wall'])} | {ms(x['dump_fsync'])} | "
                     f"{ms(x['restore_wall'])} | {x['n_ok']}/{x['n']} |")
        L.append("\n### CRIU vs dmtcp-rs\n")
        L.append("Same workload, medians; ours with codec `none` / `zstd` (\"-\": not measured in this run). "
                 "frozen: CRIU freezing + frozen, ours 'froze' + 'captured' + 'thawed'; durable checkpoint: CRIU "
                 "dump + fsync, ours `dmtcp-command -bc`; restart: CRIU `restore -d`, ours until "
                 "'restored'. Ratio criu / ours: > 1 means CRIU is slower.\n")
        L.append("| workload | MiB | CRIU frozen ms | ours frozen ms | criu / ours | CRIU durable ckpt ms | "
                 "ours ckpt ms | criu / ours | CRIU restore ms | ours restart ms | criu / ours |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")

        def two(vals, f):
            return " / ".join(f(v) for v in vals)

        def ratio(a, b):
            return "-" if a is None or not b else f"{a / b:.2f}"

        for (kind, size), x in C.items():
            ours = [S.get((kind, size, codec)) or {} for codec in ("none", "zstd")]
            cells = []
            for cf, of in (("stopped", "frozen"), ("dump_fsync", "ckpt_wall"), ("restore_wall", "restart_wall")):
                o = [s_.get(of) for s_ in ours]
                cells += [ms(x[cf]), two(o, ms), two(o, lambda v: ratio(x[cf], v))]
            L.append(f"| {x['label']} | {size if kind != 'threads' else '-'} | " + " | ".join(cells) + " |")
        L.append("")
        return L

    def goals(self, S, o):
        G = []
        big = 1024

        def get(kind, codec, f, size=big):
            return (S.get((kind, size, codec)) or {}).get(f)

        def verdict(v, ok):
            return "n/a" if v is None else ("**met**" if ok(v) else "**missed**")

        fr = {f"{k}/{c}": get(k, c, "frozen") for k in ("random", "text") for c in CODECS}
        best = min((v for v in fr.values() if v is not None), default=None)
        G.append(["frozen time, 1 GiB touched", "<= 50 ms",
                  ", ".join(f"{k} {ms(v)} ms" for k, v in fr.items()), verdict(best, lambda v: v <= 0.05)
                  + (f" (best {ms(best)} ms)" if best is not None else "")])
        sz, ck = get("untouched", "gzip", "image_bytes"), get("untouched", "gzip", "ckpt_wall")
        both = None if sz is None or ck is None else (sz < MiB and ck < 0.030)
        G.append(["1 GiB untouched: image, checkpoint (gzip)", "< 1 MiB, < 30 ms",
                  f"{human(sz)}, {ms(ck)} ms (none: {human(get('untouched', 'none', 'image_bytes'))}, "
                  f"{ms(get('untouched', 'none', 'ckpt_wall'))} ms)",
                  "n/a" if both is None else ("**met**" if both else "**missed**")])
        inc = getattr(self, "incr_summary", {})
        sr = [v["size_ratio"] for v in inc.values() if v.get("size_ratio") is not None]
        tr = [v["time_ratio"] for v in inc.values() if v.get("time_ratio") is not None]
        G.append(["incremental after 1% dirtied: image, time vs full", "< 3%, < 10%",
                  ", ".join(f"{c}: {fmt(v.get('size_ratio') and v['size_ratio'] * 100, '{:.2f}%')}, "
                            f"{fmt(v.get('time_ratio') and v['time_ratio'] * 100, '{:.1f}%')}"
                            for c, v in inc.items()) or "-",
                  "n/a" if not sr or not tr else
                  ("**met**" if max(sr) < 0.03 and max(tr) < 0.10 else "**missed**")])
        tg, tz = get("text", "gzip", "ckpt_wall"), get("text", "zstd", "ckpt_wall")
        bestc = min((v for v in (tg, tz) if v is not None), default=None)
        G.append(["compressed checkpoint of 1 GiB text, durable", "<= 1.2 s",
                  f"gzip {ms(tg)} ms ({human(get('text', 'gzip', 'image_bytes'))}), zstd {ms(tz)} ms "
                  f"({human(get('text', 'zstd', 'image_bytes'))})", verdict(bestc, lambda v: v <= 1.2)])
        rr, rt = get("random", "none", "restart_wall"), get("text", "none", "restart_wall")
        bestr = max((v for v in (rr, rt) if v is not None), default=None)
        G.append(["uncompressed 1 GiB restart (lazy), running again", "<= 50 ms",
                  f"random {ms(rr)} ms, text {ms(rt)} ms (all pages in after "
                  f"{ms(get('random', 'none', 'lazy_done'))} / {ms(get('text', 'none', 'lazy_done'))} ms; "
                  f"copied first: {ms(get('random', 'none', 'restart_eager_wall'))} / "
                  f"{ms(get('text', 'none', 'restart_eager_wall'))} ms)",
                  verdict(bestr, lambda v: v <= 0.05)])
        th = get("threads", "zstd", "frozen", 512)
        th1 = get("untouched", "zstd", "frozen", 64)
        G.append(["512 idle threads: time frozen (freeze + capture + thaw)", "a few ms over 1 thread",
                  f"{ms(th)} ms (a 1-thread process: {ms(th1)} ms)",
                  verdict(th if th is None or th1 is None else th - th1, lambda v: v <= 0.005)])
        a, b = o.get("getpid_native_ns"), o.get("getpid_dmtcp_ns")
        r = b / a if a and b else None
        G.append(["getpid loop", "<= 1.02x native", fmt(r, "{:.3f}x"), verdict(r, lambda v: v <= 1.02)])
        a, b = o.get("fork_native_ns"), o.get("fork_dmtcp_ns")
        r = b / a if a and b else None
        G.append(["fork+waitpid", "<= 1.5x native", fmt(r, "{:.2f}x"), verdict(r, lambda v: v <= 1.5)])
        a, b = o.get("true_native_s"), o.get("true_dmtcp_s")
        d = (b - a) if a and b else None
        G.append(["launch /bin/true", "<= 10 ms over native", fmt(d and d * 1e3, "{:+.1f} ms"),
                  verdict(d, lambda v: v <= 0.010)])
        return G

    def plot(self, path):
        S = self.S
        kinds = ["random", "text", "untouched"]
        series = []  # (panel row, panel col, codec, [(x, y_ms)])
        for row, f in enumerate(("ckpt_wall", "restart_wall")):
            for col, kind in enumerate(kinds):
                for codec in CODECS:
                    pts = [(size, S[(kind, size, codec)][f] * 1e3) for size in self.a.sizes
                           if (kind, size, codec) in S and S[(kind, size, codec)].get(f) is not None]
                    series.append((row, col, codec, pts))
        titles = [[f"checkpoint {k} (ms)" for k in kinds], [f"restart {k} (ms)" for k in kinds]]
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, axes = plt.subplots(2, 3, figsize=(14, 8))
            for row, col, codec, pts in series:
                ax = axes[row][col]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=codec)
                ax.set_xscale("log", base=2)
                ax.set_xlabel("memory (MiB)")
                ax.set_title(titles[row][col])
                ax.legend()
            fig.tight_layout()
            fig.savefig(path, dpi=80)
            return "matplotlib"
        except ImportError:
            tiny_plot(path, series, titles, self.a.sizes)
            return "built-in plotter (matplotlib not importable)"


def fmt(v, f):
    return "-" if v is None else f.format(v)


def ms(v):
    if v is None:
        return "-"
    return f"{v * 1e3:.1f}" if v < 10 else f"{v * 1e3:.0f}"


def pct(v, lim):
    return "-" if v is None or not lim else f"{100 * v / lim:.0f}%"


def human(b):
    if b is None:
        return "-"
    if b < 10 * 1024:
        return f"{b:.0f} B"
    if b < 10 * MiB:
        return f"{b / 1024:.0f} KiB"
    return f"{b / MiB:.0f} MiB"


# ---------------- tiny PNG plotter (zlib + struct) ----------------
FONT = {  # 5x7, column-major, bit 0 = top row
    "0": (0x3E, 0x51, 0x49, 0x45, 0x3E), "1": (0x00, 0x42, 0x7F, 0x40, 0x00),
    "2": (0x42, 0x61, 0x51, 0x49, 0x46), "3": (0x21, 0x41, 0x45, 0x4B, 0x31),
    "4": (0x18, 0x14, 0x12, 0x7F, 0x10), "5": (0x27, 0x45, 0x45, 0x45, 0x39),
    "6": (0x3C, 0x4A, 0x49, 0x49, 0x30), "7": (0x01, 0x71, 0x09, 0x05, 0x03),
    "8": (0x36, 0x49, 0x49, 0x49, 0x36), "9": (0x06, 0x49, 0x49, 0x29, 0x1E),
    "A": (0x7E, 0x11, 0x11, 0x11, 0x7E), "B": (0x7F, 0x49, 0x49, 0x49, 0x36),
    "C": (0x3E, 0x41, 0x41, 0x41, 0x22), "D": (0x7F, 0x41, 0x41, 0x22, 0x1C),
    "E": (0x7F, 0x49, 0x49, 0x49, 0x41), "F": (0x7F, 0x09, 0x09, 0x09, 0x01),
    "G": (0x3E, 0x41, 0x49, 0x49, 0x7A), "H": (0x7F, 0x08, 0x08, 0x08, 0x7F),
    "I": (0x00, 0x41, 0x7F, 0x41, 0x00), "J": (0x20, 0x40, 0x41, 0x3F, 0x01),
    "K": (0x7F, 0x08, 0x14, 0x22, 0x41), "L": (0x7F, 0x40, 0x40, 0x40, 0x40),
    "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F), "N": (0x7F, 0x04, 0x08, 0x10, 0x7F),
    "O": (0x3E, 0x41, 0x41, 0x41, 0x3E), "P": (0x7F, 0x09, 0x09, 0x09, 0x06),
    "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E), "R": (0x7F, 0x09, 0x19, 0x29, 0x46),
    "S": (0x46, 0x49, 0x49, 0x49, 0x31), "T": (0x01, 0x01, 0x7F, 0x01, 0x01),
    "U": (0x3F, 0x40, 0x40, 0x40, 0x3F), "V": (0x1F, 0x20, 0x40, 0x20, 0x1F),
    "W": (0x3F, 0x40, 0x38, 0x40, 0x3F), "X": (0x63, 0x14, 0x08, 0x14, 0x63),
    "Y": (0x07, 0x08, 0x70, 0x08, 0x07), "Z": (0x61, 0x51, 0x49, 0x45, 0x43),
    "(": (0x00, 0x1C, 0x22, 0x41, 0x00), ")": (0x00, 0x41, 0x22, 0x1C, 0x00),
    "-": (0x08, 0x08, 0x08, 0x08, 0x08), ".": (0x00, 0x60, 0x60, 0x00, 0x00),
    "/": (0x20, 0x10, 0x08, 0x04, 0x02), ":": (0x00, 0x36, 0x36, 0x00, 0x00),
    ",": (0x00, 0x50, 0x30, 0x00, 0x00), "%": (0x23, 0x13, 0x08, 0x64, 0x62),
    " ": (0, 0, 0, 0, 0), "=": (0x14, 0x14, 0x14, 0x14, 0x14),
}
COLORS = {"gzip": (31, 119, 180), "zstd": (255, 127, 14), "none": (44, 160, 44), "default": (148, 103, 189)}


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(n + 1):
            x = x0 + (x1 - x0) * i / n
            y = y0 + (y1 - y0) * i / n
            for dx in range(-(width // 2), width - width // 2):
                for dy in range(-(width // 2), width - width // 2):
                    self.set(int(round(x)) + dx, int(round(y)) + dy, c)

    def rect(self, x, y, w, h, c):
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.set(xx, yy, c)

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s.upper():
            cols = FONT.get(ch, FONT[" "])
            for cx, bits in enumerate(cols):
                for cy in range(7):
                    if bits >> cy & 1:
                        self.rect(x + cx * scale, y + cy * scale, scale, scale, c)
            x += 6 * scale

    def save(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def nice_max(v):
    if v <= 0:
        return 1.0
    e = 10 ** len(str(int(v))) / 10 if v >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def tiny_plot(path, series, titles, sizes):
    import math
    pw, ph, mx, my = 420, 300, 90, 60
    cv = Canvas(mx + 3 * (pw + mx), my + 2 * (ph + my + 30) + 20)
    xs = sorted(sizes)
    lx0, lx1 = math.log2(xs[0]), math.log2(xs[-1])
    if lx1 == lx0:
        lx1 = lx0 + 1
    for row in range(2):
        for col in range(3):
            ox, oy = mx + col * (pw + mx), my + row * (ph + my + 30)
            pts_all = [p for r, c, _, pts in series if r == row and c == col for p in pts]
            ymax = nice_max(max((p[1] for p in pts_all), default=1.0) * 1.05)
            cv.text(ox, oy - 30, titles[row][col])
            cv.line(ox, oy + ph, ox + pw, oy + ph, (0, 0, 0), 2)
            cv.line(ox, oy, ox, oy + ph, (0, 0, 0), 2)
            for i in range(5):
                yv = ymax * i / 4
                yy = oy + ph - ph * i / 4
                cv.line(ox - 5, yy, ox, yy, (0, 0, 0))
                if i:
                    cv.line(ox + 1, yy, ox + pw, yy, (225, 225, 225))
                lab = f"{yv:.0f}" if ymax >= 10 else f"{yv:.1f}"
                cv.text(ox - 8 - 12 * len(lab), int(yy) - 7, lab)

            def X(s):
                return ox + 10 + (pw - 20) * (math.log2(s) - lx0) / (lx1 - lx0)

            for s in xs:
                cv.line(X(s), oy + ph, X(s), oy + ph + 5, (0, 0, 0))
                cv.text(int(X(s)) - 6 * len(str(s)), oy + ph + 10, str(s))
            cv.text(ox + pw // 2 - 60, oy + ph + 30, "memory MIB")
            for r, c, codec, pts in series:
                if r != row or c != col or not pts:
                    continue
                col_ = COLORS[codec]
                P = [(X(s), oy + ph - ph * min(y, ymax) / ymax) for s, y in pts]
                for a, b in zip(P, P[1:]):
                    cv.line(a[0], a[1], b[0], b[1], col_, 3)
                for x, y in P:
                    cv.rect(int(x) - 4, int(y) - 4, 9, 9, col_)
    # legend
    lx = mx
    ly = cv.h - 22
    for codec in CODECS:
        cv.rect(lx, ly + 2, 30, 10, COLORS[codec])
        cv.text(lx + 38, ly, codec)
        lx += 160
    cv.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 64,256, 1 rep, smaller overhead loops (< 3 min)")
    ap.add_argument("--large", action="store_true",
                    help="add 4096 MiB and 16384 MiB (random only; skipped when memory or disk is short)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    ap.add_argument("--sizes", default=None, help="comma-separated MiB (default 64,256,1024)")
    ap.add_argument("--bin", default=None, help="directory with the dmtcp-* binaries")
    ap.add_argument("--dir", default=None, help="parent of the scratch directory (default $TMPDIR or /tmp)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--only", default="machine,wpfloor,ckpt,precopy,precopycost,unpriv,diskspeed,threadfloor,incr,codecs,overhead,rawtrap,attach,seccomp,criu",
                    help="sections to run")
    ap.add_argument("--disk-sizes", default="1024,4096",
                    help="comma-separated MiB for the diskspeed section (default 1024,4096)")
    ap.add_argument("--precopy-kinds", default="random",
                    help="comma-separated workloads for the precopy section (default random; random,text)")
    ap.add_argument("--precopy-users", default="0",
                    help="comma-separated uids for the precopy section (default 0; 0,65534)")
    ap.add_argument("--precopy-sizes", default="1024,4096",
                    help="comma-separated MiB for the precopy section (default 1024,4096)")
    ap.add_argument("--codecs", default=None,
                    help="comma-separated codecs for the ckpt section, with optional level (zstd:-3)")
    ap.add_argument("--kinds", default=None,
                    help="comma-separated workloads for the ckpt and criu sections: "
                         "random,text,untouched,threads,procs")
    a = ap.parse_args()
    a.codecs = a.codecs.split(",") if a.codecs else None
    a.kinds = a.kinds.split(",") if a.kinds else None
    a.precopy_sizes = [int(x) for x in a.precopy_sizes.split(",")]
    a.disk_sizes = [int(x) for x in a.disk_sizes.split(",")]
    a.precopy_kinds = a.precopy_kinds.split(",")
    a.precopy_users = [int(x) for x in a.precopy_users.split(",")]
    if a.sizes:
        a.sizes = [int(s) for s in a.sizes.split(",")]
    else:
        a.sizes = [64, 256] if a.quick else [64, 256, 1024]
    if a.large:
        a.sizes += [4096, HUGE_MIB]
    a.reps = a.reps or (1 if a.quick else 3)
    a.threads = 64
    a.dd_mib = 256 if a.quick else 1024
    a.getpid_n = 10_000_000
    a.fork_n = 2000
    a.launch_n = 30 if a.quick else 100
    a.oh_reps = 1 if a.quick else 3
    if not a.bin:
        ct = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        a.bin = os.path.join(ct, "release")
    for b in ("dmtcp-coordinator", "dmtcp-run", "dmtcp-command", "dmtcp-restart"):
        if not os.access(os.path.join(a.bin, b), os.X_OK):
            sys.exit(f"bench: {a.bin}/{b} not found (build first: cargo build --release, or --bin DIR)")
    os.makedirs(a.out, exist_ok=True)
    try:  # reap orphaned daemons' zombies ourselves (daemons started by the runs reparent to us)
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    b = Bench(a)
    t0 = time.monotonic()
    try:
        b.res["git"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
        b.build()
        only = a.only.split(",")
        if "machine" in only:
            b.machine()
        if "wpfloor" in only:
            b.wpfloor()
        if "ckpt" in only:
            b.ckpt_all()
        if "precopy" in only:
            b.precopy_all()
        if "precopycost" in only:
            b.precopy_cost_all()
        if "unpriv" in only:
            b.unpriv_all()
        if "diskspeed" in only:
            b.diskspeed_all()
        if "threadfloor" in only:
            b.threadfloor()
        if "incr" in only:
            b.incr_all()
        if "codecs" in only:
            b.codecs()
        if "overhead" in only:
            b.overhead()
        if "rawtrap" in only:
            b.rawtrap()
        if "attach" in only:
            b.attach_all()
        if "seccomp" in only:
            b.seccomp_cost()
        if "criu" in only:
            b.criu()
        if "machine" in only:
            b.machine()  # dd write again: the disk speed drifts a lot
    except KeyboardInterrupt:
        log("interrupted: writing what we have")
    finally:
        b.cleanup()
        reap_orphans()
    md = b.report()
    md += f"\nTotal benchmark time: {time.monotonic() - t0:.0f} s.\n"
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump({"results": b.res, "failures": b.failures,
                   "summary": [dict(kind=k[0], size=k[1], codec=k[2], **v) for k, v in b.S.items()]},
                  f, indent=1, default=str)
    how = b.plot(os.path.join(a.out, "ckpt_restart.png"))
    print(md)
    print(f"wrote {a.out}/latest.md, latest.json, ckpt_restart.png ({how})")
    return 1 if b.failures else 0


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    sys.exit(main())
