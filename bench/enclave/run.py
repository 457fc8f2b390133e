#!/usr/bin/python3
"""What an enclave costs, on one host (azote-controller as root, a temp state dir):

1. Start: `azote enclave run-enclave` of the built-in guest's init program (an EIF) until
   its console says "azote-guest: ready", against the parent's own start: `azote
   run-instances` of the same program until its console says the same; alternating, N
   runs each. Both from the API call, through the CLI (mutual TLS), the console files read
   directly (root) every millisecond.
2. vsock between a parent and its enclave: round trips of one 4 KiB write and a stream
   (the guests' vsock-echo / vsock-bench through the parent's azote-card-vsock); no peer
   is measured (the host's vhost-vsock is not available to these guests).
3. Attestation documents per second: the built-in guest's `nsm-bench` in an enclave (its
   NSM driver, azote-card-nsm over vhost-user, azote-rot), against azote-rot's own
   `attest` over its control socket from the host (bench/rot/attest.py's peer), the same
   number of PCRs (16) and a nonce.

  bench/enclave/run.py BUILD_DIR [RUNS]       prints each run and one JSON summary
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    bin_dir = os.path.join(build, "bin")
    az = os.path.join(bin_dir, "azote")
    state = tempfile.mkdtemp(prefix="azote-bench-enclave-")
    out = open(os.path.join(state, "out"), "w")
    log = open(os.path.join(state, "log"), "w")
    ctl = subprocess.Popen([os.path.join(bin_dir, "azote-controller"), "--state-dir", state, "--on-exit", "stop"],
                           stdout=out, stderr=log)
    env = dict(os.environ, AZOTE_ENDPOINT="unix:" + state + "/api.sock", AZOTE_CREDENTIALS=state + "/creds")

    def cli(*args, check=True):
        r = subprocess.run([az, *args], env=env, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(" ".join(args) + ": " + r.stderr)
        return r.stdout

    def wait_console(ident, needle, t0, timeout=60):
        path = os.path.join(state, "instances", ident, "console.log")
        end = t0 + timeout
        while time.perf_counter() < end:
            try:
                with open(path, "rb") as f:
                    if needle in f.read():
                        return (time.perf_counter() - t0) * 1000
            except FileNotFoundError:
                pass
            time.sleep(0.001)
        raise RuntimeError(ident + ": no " + needle.decode() + " within " + str(timeout) + " s")

    try:
        for _ in range(300):
            if "ready" in open(os.path.join(state, "out")).read():
                break
            time.sleep(0.05)
        subprocess.run([az, "admin", "issue-cert", "--state-dir", state, "--role", "control-plane", "--name", "bench",
                        "--out", state + "/creds"], check=True, capture_output=True)
        work = os.path.join(state, "images")
        os.makedirs(work, exist_ok=True)
        for name in ("boot", "app"):
            with open(os.path.join(work, name), "w") as f:
                f.write(name)

        def eif(program, name):
            path = os.path.join(work, name)
            subprocess.run([az, "enclave", "build-enclave", "--kernel", os.path.join(bin_dir, "azote-guest.elf"),
                            "--initrd", os.path.join(work, "boot"), "--initrd", os.path.join(work, "app"),
                            "--cmdline", "azote.run=" + program, "--output-file", path],
                           check=True, capture_output=True)
            return path

        init_eif = eif("init", "init.eif")
        bench_eif = eif("nsm-bench 3", "bench.eif")
        parent = json.loads(cli("run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.micro",
                                "--no-network-interface", "--enclave-options", "Enabled=true", "--wait",
                                "--output", "json"))["instances"][0]["instance_id"]
        wait_console(parent, b"azote-guest: ready", time.perf_counter())

        def one_instance():
            t0 = time.perf_counter()
            ident = json.loads(cli("run-instances", "--image-id", "ami-builtin", "--instance-type", "t3.nano",
                                   "--no-network-interface", "--output", "json"))["instances"][0]["instance_id"]
            ms = wait_console(ident, b"azote-guest: ready", t0)
            cli("terminate-instances", "--instance-ids", ident, "--wait")
            return ms

        def one_enclave():
            t0 = time.perf_counter()
            ident = json.loads(cli("enclave", "run-enclave", "--instance-id", parent, "--eif-path", init_eif,
                                   "--cpu-count", "1", "--memory", "128"))["EnclaveID"]
            ms = wait_console(ident, b"azote-guest: ready", t0)
            cli("enclave", "terminate-enclave", "--enclave-id", ident)
            return ms

        one_instance(), one_enclave()  # warm-up
        inst, encl = [], []
        for i in range(runs):
            a, b = one_instance(), one_enclave()
            inst.append(a)
            encl.append(b)
            print(f"run {i + 1}: instance {a:.1f} ms, enclave {b:.1f} ms", flush=True)

        # Attestation documents per second through an enclave's NSM.
        t0 = time.perf_counter()
        ident = json.loads(cli("enclave", "run-enclave", "--instance-id", parent, "--eif-path", bench_eif,
                               "--cpu-count", "1", "--memory", "128"))["EnclaveID"]
        wait_console(ident, b"azote-guest: nsm-bench ", t0, timeout=120)
        time.sleep(0.2)
        line = [l for l in open(os.path.join(state, "instances", ident, "console.log")).read().splitlines()
                if l.startswith("azote-guest: nsm-bench ")][0]
        fields = dict(kv.split("=") for kv in line.split()[2:])
        cli("enclave", "terminate-enclave", "--enclave-id", ident, check=False)
        # vsock between a parent and its enclave: the parent's vsock-echo, the enclave's
        # vsock-bench (round trips of one 4 KiB write, then a stream), through the
        # parent's vsock card.
        echo_image = json.loads(cli("register-image", "--name", "vsock-echo", "--kernel",
                                    os.path.join(bin_dir, "azote-guest.elf"), "--cmdline",
                                    "azote.run=vsock-echo 5000", "--output", "json"))["image_id"]
        echo_parent = json.loads(cli("run-instances", "--image-id", echo_image, "--instance-type", "t3.micro",
                                     "--no-network-interface", "--enclave-options", "Enabled=true", "--wait",
                                     "--output", "json"))["instances"][0]["instance_id"]
        wait_console(echo_parent, b"vsock-echo ready", time.perf_counter())
        vbench_eif = eif("vsock-bench 3 5000 3 4096", "vbench.eif")
        t0 = time.perf_counter()
        ident = json.loads(cli("enclave", "run-enclave", "--instance-id", echo_parent, "--eif-path", vbench_eif,
                               "--cpu-count", "1", "--memory", "128"))["EnclaveID"]
        wait_console(ident, b"azote-guest: vsock-bench ", t0, timeout=120)
        time.sleep(0.2)
        vline = [l for l in open(os.path.join(state, "instances", ident, "console.log")).read().splitlines()
                 if l.startswith("azote-guest: vsock-bench ")][0]
        vfields = dict(kv.split("=") for kv in vline.split()[2:] if "=" in kv)
        cli("enclave", "terminate-enclave", "--enclave-id", ident, check=False)
        peer = json.loads(subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..", "rot",
                                                                             "attest.py"), bin_dir, "300"],
                                         check=True, capture_output=True, text=True).stdout)
        summary = {
            "runs": runs,
            "instance_start_ms_p50": round(statistics.median(inst), 1),
            "enclave_start_ms_p50": round(statistics.median(encl), 1),
            "enclave_over_instance": round(statistics.median(encl) / statistics.median(inst), 2),
            "enclave_attestations_per_s": int(fields["attest_per_s"]),
            "enclave_attest_us_avg": int(fields["attest_us_avg"]),
            "enclave_describe_pcr_per_s": int(fields["describe_pcr_per_s"]),
            "vsock_rtt_us_p50": int(vfields["rtt_us_p50"]),
            "vsock_rtt_us_p99": int(vfields["rtt_us_p99"]),
            "vsock_stream_mbps": float(vfields["mbps"]),
            "rot_attest_ms_p50": peer["attest_ms"]["p50"],
            "rot_direct_attestations_per_s": round(1000 / peer["attest_ms"]["p50"]),
            "enclave_over_rot_direct": round(int(fields["attest_per_s"]) / (1000 / peer["attest_ms"]["p50"]), 2),
        }
        print(json.dumps(summary, indent=2))
    finally:
        ctl.terminate()
        try:
            ctl.wait(30)
        except subprocess.TimeoutExpired:
            ctl.kill()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
