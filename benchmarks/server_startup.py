"""Start-up time and memory of ``frankensplit serve``, per server configuration and checkout.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/server_startup.py [--repeat 3]
        [--configs torch torch-no-images onnx before] [--before-checkout PATH]
        [--model fs-lite0-l4] [--json OUT]

Each run starts ``python -m frankensplit serve ...`` as a fresh subprocess on a free loopback port
and measures, from the moment it is spawned:

- ``listen_s``: the first HTTP answer of any status from ``GET /readyz`` (imports, app, uvicorn);
- ``ready_s``: the first 200 from ``GET /readyz`` (models loaded, decoder worker started);
- memory at that moment from ``/proc/PID/status``: the server process's ``VmRSS`` and ``VmHWM``
  (peak), and the same summed over it and its descendants (the sandboxed rANS worker, a plain
  ``python -c`` subprocess started before ready; ``--no-isolate-decoder`` has none). The summed
  peak is the sum of each process's own peak, an upper bound of the peak of the sum;
- one real packet POSTed to ``/v1/classify``: its latency (``first_classify_ms``, the first request
  of the process) and the memory again after it; the answer must be 200, and the top-1 class is
  printed so that configurations can be seen to agree;
- the clean stop: SIGTERM until the process exits (``stop_s``): uvicorn's graceful shutdown, logged
  as "Finished server process" (uvicorn then re-raises the signal, so the exit code is -15, or 0),
  with no SIGKILL needed and no child process left behind. A run that fails any of these, or the
  200, makes the exit code 1.

Configurations (``--configs``, default all):

- ``torch``: ``serve --model M --threads 1`` (the torch server half and the teacher's head, for
  ``/v1/classify-image``);
- ``torch-no-images``: the same with ``--no-images`` (no teacher head);
- ``onnx``: ``serve --onnx --model DIR --threads 1``, DIR the ONNX server half written once, before
  any timing, by ``frankensplit export --model M --server-onnx`` into a temporary folder;
- ``before``: the ``torch`` command run from another checkout, ``--before-checkout PATH`` (e.g. a
  git worktree of an older commit), with ``PYTHONPATH=PATH`` and ``cwd=PATH`` so that its package
  is imported (checked, and printed); its command is kept minimal (``serve --model M --port P``,
  plus ``--threads 1`` when that checkout's ``serve --help`` lists it). Skipped with a note
  without ``--before-checkout``.

The packet is encoded once, before any timing, by this checkout's ``frankensplit encode`` (torch
edge) from one photo (the shared tiny16 fixtures, else a sample photo shipped with
scikit-image/matplotlib). Runs are interleaved (every configuration once, then again), so a change
of machine load reaches every configuration alike; medians and minima over ``--repeat`` runs are
printed with the CPU, the load average before and after and each checkout's commit. Start-up time
is mostly imports and file reads: the first run after an idle spell may read from disk, not the
page cache, and the load of other processes moves it by seconds on a small CPU. Measure on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.serve_process import free_port

from frankensplit.protocol import CLASSIFY_PATH
from frankensplit.sim.timing import cpu_name

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"
CONFIGS = ("torch", "torch-no-images", "onnx", "before")
METRICS = (  # (key, label, format)
    ("listen_s", "first /readyz answer, s", "{:.2f}"),
    ("ready_s", "first /readyz 200, s", "{:.2f}"),
    ("ready_main_rss_mib", "at ready: server VmRSS, MiB", "{:.0f}"),
    ("ready_main_hwm_mib", "at ready: server VmHWM, MiB", "{:.0f}"),
    ("ready_total_rss_mib", "at ready: + children VmRSS, MiB", "{:.0f}"),
    ("ready_total_hwm_mib", "at ready: + children VmHWM, MiB", "{:.0f}"),
    ("first_classify_ms", "first /v1/classify, ms", "{:.0f}"),
    ("served_main_rss_mib", "after it: server VmRSS, MiB", "{:.0f}"),
    ("served_total_rss_mib", "after it: + children VmRSS, MiB", "{:.0f}"),
    ("stop_s", "SIGTERM to exit, s", "{:.2f}"),
)


@dataclass
class Config:
    """One server configuration: the ``serve`` arguments (no port) and the checkout it runs from."""

    name: str
    serve_args: list[str]
    checkout: Path
    runs: list[dict] = field(default_factory=list)

    def command(self, port: int) -> list[str]:
        """The full command line of a run on ``port``."""
        return [sys.executable, "-m", "frankensplit", "serve", *self.serve_args,
                "--port", str(port)]

    def env(self) -> dict[str, str]:
        """The environment of a run: this checkout's package first on the path."""
        return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(self.checkout)}


def run_checked(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a preparation command; its stdout, or SystemExit with the end of its output."""
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def checkout_commit(path: Path) -> str:
    """The commit checked out at ``path``, marked when tracked files differ from it."""
    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(path), *a], capture_output=True, text=True,
                              check=False)

    head = git("rev-parse", "--short=10", "HEAD")
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
    return head.stdout.strip() + (" (tracked files changed since)" if dirty else "")


def photo() -> Path:
    """One real photo: the first tiny16 fixture, else a sample photo shipped with a package."""
    found = sorted(TINY16.glob("*.jpg"))
    if not found:
        from frankensplit.data import bundled_photos

        found = bundled_photos()
    if not found:
        raise SystemExit("no photo found (neither ../shared/data nor scikit-image's samples)")
    return found[0]


def make_packet(model: str, workdir: Path) -> bytes:
    """One packet of ``model`` from a photo, by this checkout's ``frankensplit encode``."""
    image = photo()
    out = workdir / "packets"
    run_checked([sys.executable, "-m", "frankensplit", "encode", "--model", model,
                 "--out", str(out), str(image)], cwd=REPO)
    packet = (out / f"{image.stem}.fsb").read_bytes()
    print(f"packet: {image.name} -> {len(packet)} bytes ({model}, frankensplit encode)")
    return packet


def export_onnx(model: str, workdir: Path) -> Path:
    """The ONNX server half of ``model`` (``frankensplit export --server-onnx``), in ``workdir``."""
    out = workdir / "export"
    run_checked([sys.executable, "-m", "frankensplit", "export", "--model", model,
                 "--out", str(out), "--server-onnx"], cwd=REPO)
    print(f"onnx: exported {model}'s server half to {out / 'server-onnx'}")
    return out / "server-onnx"


def checkout_info(path: Path) -> tuple[str, str]:
    """The ``frankensplit`` package a run from ``path`` imports, and its ``serve --help``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(path)}
    code = "import frankensplit; print(frankensplit.__file__)"
    package = run_checked([sys.executable, "-c", code], cwd=path, env=env).strip()
    if not Path(package).resolve().is_relative_to(path.resolve()):
        raise SystemExit(f"{path}: imports {package}, not its own frankensplit")
    usage = run_checked([sys.executable, "-m", "frankensplit", "serve", "--help"], cwd=path,
                        env=env)
    return package, usage


def configurations(args: argparse.Namespace, workdir: Path) -> list[Config]:
    """The asked configurations, preparing what they need (ONNX export); skipped ones say why."""
    usage = checkout_info(REPO)[1]
    threads = ["--threads", "1"] if "--threads" in usage else []
    configs = []
    for name in args.configs:
        if name == "torch":
            configs.append(Config(name, ["--model", args.model, *threads], REPO))
        elif name == "torch-no-images":
            if "--no-images" not in usage:
                print("torch-no-images: skipped (this checkout's serve has no --no-images)")
                continue
            configs.append(Config(name, ["--model", args.model, "--no-images", *threads], REPO))
        elif name == "onnx":
            folder = export_onnx(args.model, workdir)
            configs.append(Config(name, ["--onnx", "--model", str(folder), *threads], REPO))
        elif args.before_checkout is None:
            print("before: skipped (no --before-checkout; e.g. `git worktree add ../wt-before "
                  "92db7a1^`)")
        else:
            path = Path(args.before_checkout).resolve()
            package, old = checkout_info(path)
            print(f"before: {path} imports {package}")
            old_threads = ["--threads", "1"] if "--threads" in old else []
            configs.append(Config(name, ["--model", args.model, *old_threads], path))
    return configs


def status_mib(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of process ``pid`` in MiB (empty once it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, ppid
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def memory(pid: int, prefix: str) -> dict[str, float | int]:
    """The server's RSS and peak, and both summed with its descendants', keys ``prefix_...``."""
    main = status_mib(pid)
    children = [status_mib(c) for c in descendants(pid)]
    return {
        f"{prefix}_main_rss_mib": main.get("VmRSS", float("nan")),
        f"{prefix}_main_hwm_mib": main.get("VmHWM", float("nan")),
        f"{prefix}_total_rss_mib": main.get("VmRSS", 0.0) + sum(c.get("VmRSS", 0.0)
                                                                 for c in children),
        f"{prefix}_total_hwm_mib": main.get("VmHWM", 0.0) + sum(c.get("VmHWM", 0.0)
                                                                 for c in children),
        f"{prefix}_children": len(children),
    }


def wait_ready(process: subprocess.Popen, url: str, start: float, timeout: float) -> dict:
    """Poll ``/readyz`` every 20 ms: seconds from ``start`` to its first answer and first 200."""
    times: dict[str, float] = {}
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5.0) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            status = e.code  # 503 while loading
        except OSError:
            status = None  # not listening yet
        now = time.perf_counter() - start
        if status is not None:
            times.setdefault("listen_s", now)
        if status == 200:
            return {**times, "ready_s": now}
        if now > timeout:
            raise RuntimeError(f"not ready within {timeout:.0f} s")
        time.sleep(0.02)


def classify(url: str, packet: bytes) -> dict:
    """POST ``packet`` to ``/v1/classify``: the latency and top-1 class of a 200 answer."""
    request = urllib.request.Request(f"{url}{CLASSIFY_PATH}", data=packet, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60.0) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"/v1/classify answered {e.code}: {e.read()[:300]!r}") from None
    ms = (time.perf_counter() - start) * 1000.0
    top = answer["predictions"][0]
    return {"first_classify_ms": ms, "top1": f"{top['name']} ({top['probability']:.3f})"}


def stop(process: subprocess.Popen, children: list[int], log: Path) -> dict:
    """SIGTERM, wait for the exit (SIGKILL after 30 s); kill and count children left behind."""
    start = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30.0)
    except subprocess.TimeoutExpired:
        process.kill()
        code = None
        process.wait(timeout=10.0)
    stop_s = time.perf_counter() - start
    graceful = (code in (0, -signal.SIGTERM)
                and "Finished server process" in log.read_text(errors="replace"))
    time.sleep(0.2)  # an orphan is reparented and reaped by init; give it a moment
    left = [c for c in children if status_mib(c)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # a worker of the server this script started
    return {"stop_s": stop_s, "exit_code": code, "graceful": graceful,
            "children_left": len(left)}


def measure(config: Config, packet: bytes, workdir: Path, timeout: float) -> dict:
    """One fresh server of ``config``: start-up time, memory, one packet, clean stop."""
    port = free_port()
    log = workdir / f"{config.name}-{len(config.runs)}.log"
    with open(log, "wb") as out:  # the child keeps its own descriptor
        start = time.perf_counter()
        process = subprocess.Popen(config.command(port), cwd=config.checkout, env=config.env(),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        run = wait_ready(process, url, start, timeout)
        run |= memory(process.pid, "ready")
        run |= classify(url, packet)
        run |= memory(process.pid, "served")
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        process.kill()
        process.wait(timeout=10.0)
        tail = log.read_text(errors="replace")[-1500:].strip()
        return {"error": f"{e}\n--- server log tail ---\n{tail}"}
    return run | stop(process, descendants(process.pid), log)


def summary(configs: Sequence[Config]) -> str:
    """Median (min) of each metric, one column per configuration."""
    width = 34
    lines = ["".ljust(width) + "".join(c.name.rjust(20) for c in configs),
             "runs ok".ljust(width) + "".join(
                 f"{sum('error' not in r for r in c.runs)}/{len(c.runs)}".rjust(20)
                 for c in configs),
             "clean stops".ljust(width) + "".join(
                 f"{sum(bool(r.get('graceful')) and not r.get('children_left') for r in c.runs)}"
                 f"/{len(c.runs)}".rjust(20) for c in configs)]
    for key, label, fmt in METRICS:
        cells = []
        for c in configs:
            values = [r[key] for r in c.runs if "error" not in r]
            cells.append(f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))})"
                         if values else "-")
        lines.append(label.ljust(width) + "".join(cell.rjust(20) for cell in cells))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--repeat", type=int, default=3, help="fresh servers per configuration")
    parser.add_argument("--model", default="fs-lite0-l4", help="zoo model id")
    parser.add_argument("--before-checkout", default=None, metavar="PATH",
                        help="another checkout (e.g. a git worktree of an older commit) whose "
                             "`serve --model M` is the `before` configuration")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a server may take to become ready")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write every run here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="server-startup-"))
    try:
        configs = configurations(args, workdir)
        if not configs:
            raise SystemExit("nothing to measure: every configuration asked for was skipped")
        packet = make_packet(args.model, workdir)
        print(f"cpu: {cpu_name()}, {os.cpu_count()} logical cores")
        for c in configs:
            print(f"{c.name}: commit {checkout_commit(c.checkout)} ({c.checkout})\n"
                  f"    PYTHONPATH={c.checkout} python "
                  f"{' '.join(c.command(0)[1:]).replace('--port 0', '--port P')}")
        load_before = os.getloadavg()
        print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
        for i in range(args.repeat):
            for c in configs:
                c.runs.append(run := measure(c, packet, workdir, args.timeout))
                shown = run.get("error") or " ".join(
                    f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in run.items())
                print(f"[{i + 1}/{args.repeat}] {c.name}: {shown}", flush=True)
        load_after = os.getloadavg()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
        print(f"\nmedian (min) over {args.repeat} run(s) per configuration, model {args.model}:")
        print(summary(configs))
        if args.json:
            Path(args.json).write_text(json.dumps({
                "cpu": cpu_name(), "load_average_before": load_before,
                "load_average_after": load_after, "model": args.model,
                "configs": {c.name: {"commit": checkout_commit(c.checkout),
                                     "command": c.command(0)[1:], "runs": c.runs}
                            for c in configs}}, indent=1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all("error" not in r and r["graceful"] and r["children_left"] == 0
             for c in configs for r in c.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
