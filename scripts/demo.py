"""`make demo`: a verifier, five simulated GPU hosts and a regulator, over loopback, end to end.

Starts `gpu-attest-verifier serve` (embedded SQLite, TLS, its own CA), imports the example
registry, enrolls five simulated hosts with one-time tokens (8x H100 SXM, 8x H200 and 4x GB200 in
Frankfurt, a host in Virginia that reports a cloned GPU UUID, and 8x H200 in Abu Dhabi held under
a licence for 4), runs their agents, waits until the verifier has stored every GPU, prints the
fleet and findings as the verifier stored them, shows the AI Diffusion policy pack in short and
reconciles the fleet against it (the planted licence and UVEU-share violations, with their
arithmetic), shows where the landmark run by the verifier (at Frankfurt's coordinates) placed
the hosts that dialled it: acme-fra1 verified, acme-iad1 contradicted (its host answered faster
than light allows from Virginia), globex-auh1 unverified (its host has no landmark), verifies the
log's signed checkpoint and one envelope's inclusion proof as a
regulator would (offline, key only), writes acme's signed report for this month (JSON and HTML)
and verifies it with `gpu-attest-report verify`, and shuts everything down.
Exits 0 when all of that happened, 1 otherwise. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_STATE = ROOT / "demo-state"
MACHINES = ROOT / "examples" / "machines"
HOSTS = {  # machine file -> GPUs it reports
    "h100-node.toml": 8,
    "h200-node.toml": 8,
    "gb200-node.toml": 4,
    "clone-node.toml": 2,
    "auh-node.toml": 8,
}
SITES = {"clone-node": "acme-iad1", "auh-node": "globex-auh1"}  # the others: acme-fra1
#: The landmark the verifier runs: at Frankfurt, where acme-fra1 is.
LANDMARK = ("lm-fra", 50.11, 8.68)
#: What the location checks must say of each site (docs/design.md §16).
LOCATIONS = {"acme-fra1": "verified", "acme-iad1": "contradicted", "globex-auh1": "unverified"}
#: What reconciling the demo fleet under the published AI Diffusion rule must find.
PLANTED = {"licence-exceeded": "authorization:D1234567", "uveu-us-share": "entity:acme@US"}
CLONED_UUID = "GPU-9303fa81-971e-427a-073f-68bae45210bd"
DEADLINE_S = 90.0


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"verifier exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Demo:
    state: Path
    verifier_toml: Path
    attest_port: int
    enroll_port: int
    landmark_port: int

    def verifier(self, *args: str) -> str:
        cmd = [str(BIN / "gpu-attest-verifier"), "--config", str(self.verifier_toml), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[1:])} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def verifier_json(self, *args: str) -> Any:
        return json.loads(self.verifier(*args, "--json"))


def write_verifier_config(state: Path) -> Demo:
    attest_port, enroll_port, landmark_port = free_port(), free_port(), free_port()
    landmark = state / "landmark.toml"
    landmark_id, lat, lon = LANDMARK
    landmark.write_text(
        f'id = "{landmark_id}"\nlat = {lat}\nlon = {lon}\n'
        f'listen = "127.0.0.1:{landmark_port}"\n'
        f'state_dir = "{state / "verifier" / "landmark"}"\n'
        'metrics_listen = ""\n'
    )
    path = state / "verifier.toml"
    path.write_text(
        f'listen = "127.0.0.1:{attest_port}"\n'
        f'enroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'state_dir = "{state / "verifier"}"\n'
        'metrics_listen = ""\n'
        f'landmark = "{landmark}"\n'
        "[tls]\n"
        'names = ["localhost", "127.0.0.1"]\n'
        "[fleet]\n"
        "sweep_interval_s = 2\n"
    )
    return Demo(state, path, attest_port, enroll_port, landmark_port)


def write_registry(demo: Demo) -> Path:
    """The example registry plus the landmark's stanza, as an operator enrolls a landmark."""
    stanza = demo.verifier("landmark", "enroll", "--config", str(demo.state / "landmark.toml"))
    path = demo.state / "registry.toml"
    path.write_text((ROOT / "examples" / "registry.toml").read_text() + "\n" + stanza)
    return path


def start_agent(demo: Demo, machine: str, log: Any) -> subprocess.Popen[bytes]:
    name = machine.removesuffix(".toml")
    state_dir = demo.state / name
    site = SITES.get(name, "acme-fra1")
    token = demo.verifier("token", "create", "--site", site, "--ttl", "1h").strip()
    agent = str(BIN / "gpu-attest-agent")
    ca = str(demo.state / "ca.pem")
    machine_path = str(MACHINES / machine)
    config = state_dir / "agent.toml"
    state_dir.mkdir(mode=0o700)
    config.write_text(
        f'verifier = "127.0.0.1:{demo.attest_port}"\n'
        f'state_dir = "{state_dir}"\n'
        "interval_seconds = 5\n"
        "inventory_poll_seconds = 2\n"
        + (f'landmarks = ["127.0.0.1:{demo.landmark_port}"]\n' if site != "globex-auh1" else "")
    )
    enroll = [agent, "enroll", "--verifier", f"127.0.0.1:{demo.enroll_port}", "--token", token]
    enroll += ["--ca", ca, "--state-dir", str(state_dir), "--simulate", machine_path]
    subprocess.run(enroll, check=True, stdout=log, stderr=log)
    print(f"   enrolled {name} (site {site})", flush=True)
    run = [agent, "run", "--config", str(config), "--simulate", machine_path]
    return subprocess.Popen(run, stdout=log, stderr=log)


def stop(proc: subprocess.Popen[bytes], what: str) -> bool:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        print(f"   {what} did not stop on SIGTERM", flush=True)
        return False
    print(f"   {what} exited {code}", flush=True)
    return code == 0


def wait_for_fleet(demo: Demo) -> list[dict[str, Any]]:
    want = sum(HOSTS.values()) - 1  # the cloned UUID is one GPU seen by two hosts
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        hosts = demo.verifier_json("fleet")
        uuids = {g["uuid"] for h in hosts for g in h["gpus"]}
        if len(hosts) == len(HOSTS) and len(uuids) >= want:
            return list(hosts)
        time.sleep(1.0)
    raise SystemExit(f"the verifier did not see all {want} GPUs within {DEADLINE_S:.0f} s")


def wait_for_duplicate(demo: Demo) -> list[dict[str, Any]]:
    end = time.monotonic() + 30.0
    while time.monotonic() < end:
        findings = demo.verifier_json("findings")
        if any(f["rule"] == "duplicate-gpu" for f in findings):
            return list(findings)
        time.sleep(1.0)
    raise SystemExit("no duplicate-gpu finding for the cloned UUID within 30 s")


def show_fleet(demo: Demo) -> None:
    say("fleet, as the verifier stored it")
    print(demo.verifier("fleet"))
    say("agents")
    print(demo.verifier("agents"))
    say("findings")
    print(demo.verifier("findings"))


def show_locations(demo: Demo) -> bool:
    """Wait for the location pass to judge every site as planted, then print what it says."""
    end = time.monotonic() + 60.0
    sites: dict[str, dict[str, Any]] = {}
    while time.monotonic() < end:
        sites = {h["site_id"]: h["location"] for h in demo.verifier_json("fleet") if h["location"]}
        if {site: where["status"] for site, where in sites.items()} == LOCATIONS:
            break
        time.sleep(1.0)
    for site, where in sorted(sites.items()):
        print(f"{site:12} {where['status']:13} {where['reason']}")
    found = [f for f in demo.verifier_json("findings") if f["rule"].startswith("location-")]
    for f in found:
        print(f"{f['severity']:8} {f['rule']} {f['subject']}: {f['message']}")
    got = {site: where["status"] for site, where in sites.items()}
    if got != LOCATIONS:
        print(f"   location statuses {got}, expected {LOCATIONS}")
    return got == LOCATIONS


def show_policy(demo: Demo) -> None:
    """The pack's headline lines: tiers, caps, shares, thresholds (not sources or catalogue)."""
    for line in demo.verifier("policy", "show", "aidr-2025").splitlines():
        if line.startswith("catalogue"):
            print(f"{line}; `gpu-attest-verifier policy show aidr-2025` lists them")
            return
        if not line.startswith("    "):
            print(line[:160])


def reconcile(demo: Demo) -> bool:
    """Reconcile under aidr-2025 (the pack in force today, baseline-2025-05, sets no UVEU
    shares) and check the planted violations were found; print what a licence officer reads."""
    cmd = [str(BIN / "gpu-attest-verifier"), "--config", str(demo.verifier_toml)]
    done = subprocess.run(
        [*cmd, "reconcile", "--policy", "aidr-2025"], capture_output=True, text=True, check=False
    )
    print(done.stdout.rstrip())
    found = json.loads(
        subprocess.run(
            [*cmd, "reconcile", "--policy", "aidr-2025", "--json"],
            capture_output=True, text=True, check=False,
        ).stdout
    )["findings"]  # fmt: skip
    raised = {(f["rule"], f["subject"]) for f in found}
    missing = [rule for rule, subject in PLANTED.items() if (rule, subject) not in raised]
    if missing:
        print(f"   planted violations not found: {', '.join(missing)}")
    return not missing


def check_log_offline(demo: Demo) -> bool:
    """What a regulator does with files it was handed: verify them with the log's public key."""
    key, checkpoint = demo.state / "verifier.pub", demo.state / "log.checkpoint"
    proof = demo.state / "0.tlog-proof"
    demo.verifier("log", "key", "--out", str(key))
    demo.verifier("log", "checkpoint", "--out", str(checkpoint))
    demo.verifier("log", "proof", "--index", "0", "--out", str(proof))
    report = str(BIN / "gpu-attest-report")
    results = []
    for args in (["checkpoint", "verify", str(checkpoint)], ["proof", "verify", str(proof)]):
        cmd = [report, *args, "--key", str(key)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(f"$ gpu-attest-report {' '.join(args[:2])} {Path(args[2]).name} --key verifier.pub")
        print(done.stdout.rstrip() or done.stderr.rstrip())
        results.append(done.returncode == 0)
    return all(results)


def write_report(demo: Demo) -> bool:
    """A signed report of acme for this month (JSON and a page to read), verified offline as
    a regulator would, with nothing but the report key (docs/verify.md)."""
    month = datetime.now(UTC).strftime("%Y-%m")
    out, page, key = demo.state / "acme.json", demo.state / "acme.html", demo.state / "report.pub"
    demo.verifier("report", "key", "--out", str(key))
    create = ["report", "create", "--entity", "acme", "--period", month, "--out", str(out)]
    print(f"$ gpu-attest-verifier {' '.join(create[:-1])} acme.json --html acme.html")
    print(demo.verifier(*create, "--html", str(page)).rstrip())
    cmd = [str(BIN / "gpu-attest-report"), "verify", str(out), "--key", str(key)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    print("$ gpu-attest-report verify acme.json --key report.pub")
    print(done.stdout.rstrip() or done.stderr.rstrip())
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="emptied, then used")
    state = parser.parse_args(argv).state.resolve()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700, parents=True)
    os.chdir(state)
    demo = write_verifier_config(state)
    log = (state / "processes.log").open("ab")
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    ok = False
    try:
        say("registry: acme (UVEU) in DE and US; globex in AE, licensed for 4 GPUs; a landmark")
        print(demo.verifier("registry", "import", str(write_registry(demo))))
        say(
            f"verifier: mTLS on 127.0.0.1:{demo.attest_port}, enrollment on :{demo.enroll_port}, "
            f"landmark {LANDMARK[0]} on :{demo.landmark_port}"
        )
        serve = [str(BIN / "gpu-attest-verifier"), "--config", str(demo.verifier_toml), "serve"]
        verifier = subprocess.Popen(serve, stdout=log, stderr=log)
        procs.append(("verifier", verifier))
        wait_port(demo.enroll_port, verifier)
        wait_port(demo.attest_port, verifier)
        (state / "ca.pem").write_text(demo.verifier("ca", "export"))
        say("agents: one-time tokens, enrollment, signed evidence streams")
        procs.extend((m.removesuffix(".toml"), start_agent(demo, m, log)) for m in HOSTS)
        hosts = wait_for_fleet(demo)
        findings = wait_for_duplicate(demo)
        show_fleet(demo)
        say(f"location: round trips timed by landmark {LANDMARK[0]} (Frankfurt), by site")
        located = show_locations(demo)
        say("policy pack aidr-2025 (the AI Diffusion rule as published), in short")
        show_policy(demo)
        say("reconcile: the fleet against the registry and aidr-2025")
        planted_ok = reconcile(demo)
        say("regulator: the log's signed checkpoint and one envelope's inclusion proof, offline")
        regulator_ok = check_log_offline(demo)
        say("report: acme's holdings this month, signed, and verified offline")
        regulator_ok = write_report(demo) and regulator_ok
        gpus = sum(len(h["gpus"]) for h in hosts)
        dup = [f for f in findings if f["rule"] == "duplicate-gpu"]
        print(f"{len(hosts)} hosts, {gpus} GPU records; duplicate-gpu: {dup[0]['subject']}")
        ok = planted_ok and regulator_ok and located
        ok = ok and any(CLONED_UUID in f["subject"] for f in dup)
    finally:
        say("shutting down (SIGTERM)")
        for what, proc in reversed(procs):
            ok = stop(proc, what) and ok
        log.close()
    print(f"\ndemo {'succeeded' if ok else 'FAILED'}; state and logs in {state}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
