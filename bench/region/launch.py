#!/usr/bin/python3
"""Launch latency through azote-region against the host's own API, on one host.

Starts (temp dirs, loopback): one etcd member (Debian's), one azote-controller (as root,
its launcher, cards), azote-region with the host registered. Then, in alternating blocks
of 10, RUNS launches on each path, every launch one t3.nano of the built-in image:

  region: boto3 (Debian's, unmodified) RunInstances through azote-region (HTTPS, SigV4,
          policy, audit, etcd record, the host's API over mTLS), then DescribeInstances
          through the region every 5 ms until "running";
  host:   azote-launch-bench (bench/controller: one gRPC channel, mTLS) RunInstances
          straight to the controller, then DescribeInstances every 5 ms until "running".

Each launch is timed from before the call to the first "running" answer (both clients keep
their connection open between calls); terminated after (untimed). The region's figures are
per launch; the host's are azote-launch-bench's per-block p50/p99, combined as the median
of the blocks' p50.

  bench/region/launch.py BUILD_DIR [RUNS]          prints each block and one JSON summary
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import free_port, pct, stop_all


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    bins = os.path.join(build, "bin")
    top = tempfile.mkdtemp(prefix="azote-bench-region-")
    os.chmod(top, 0o755)
    procs = []
    try:
        c, p = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["/usr/bin/etcd", "--name", "b", "--data-dir", top + "/etcd", "--listen-client-urls",
             "http://127.0.0.1:%d" % c, "--advertise-client-urls", "http://127.0.0.1:%d" % c, "--listen-peer-urls",
             "http://127.0.0.1:%d" % p, "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % p,
             "--initial-cluster", "b=http://127.0.0.1:%d" % p],
            stdout=subprocess.DEVNULL, stderr=open(top + "/etcd.log", "w")))
        host = top + "/h1"
        os.makedirs(host)
        out = open(host + "/controller.out", "w")
        ctl = subprocess.Popen([bins + "/azote-controller", "--state-dir", host, "--on-exit", "stop", "--capacity-vcpus",
                                "256", "--capacity-memory", "64G"], stdout=out, stderr=open(host + "/controller.log", "w"))
        procs.append(ctl)
        for _ in range(600):
            if "ready" in open(host + "/controller.out").read():
                break
            time.sleep(0.05)
        # One credential for the benchmark's own calls to the host, another for the region
        # (whose calls carry its lease's epoch: the host fences that principal alone).
        for name, out_dir in (("bench", host + "/creds"), ("region", host + "/region-creds")):
            subprocess.run([bins + "/azote", "admin", "issue-cert", "--state-dir", host, "--role", "control-plane",
                            "--name", name, "--out", out_dir], check=True, capture_output=True)
        rdir = top + "/region"
        for _ in range(100):
            r = subprocess.run([bins + "/azote-region", "register-host", "--state-dir", rdir, "--etcd", "127.0.0.1:%d" % c,
                                "--host-id", "h1", "--endpoint", "unix:" + host + "/api.sock", "--credentials",
                                host + "/region-creds", "--zone", "us-east-1a", "--vcpus", "256", "--memory-mib", "65536"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        keys = json.loads(subprocess.run([bins + "/azote-region", "add-principal", "--state-dir", rdir, "--name", "bench"],
                                         check=True, capture_output=True, text=True).stdout)
        port = free_port()
        rout = open(top + "/region.out", "w")
        procs.append(subprocess.Popen([bins + "/azote-region", "serve", "--state-dir", rdir, "--etcd", "127.0.0.1:%d" % c,
                                       "--listen", "127.0.0.1:%d" % port], stdout=rout, stderr=open(top + "/region.log", "w")))
        for _ in range(200):
            if "ready" in open(top + "/region.out").read():
                break
            time.sleep(0.05)

        import boto3
        import botocore.config
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url="https://127.0.0.1:%d" % port,
                           verify=rdir + "/pki/ca.crt", aws_access_key_id=keys["AccessKeyId"],
                           aws_secret_access_key=keys["SecretAccessKey"],
                           config=botocore.config.Config(retries={"max_attempts": 1}))
        ec2.describe_regions()  # the TLS session and the client are warm for both paths alike below

        def region_launch():
            t0 = time.perf_counter()
            iid = ec2.run_instances(ImageId="ami-builtin", InstanceType="t3.nano", MinCount=1,
                                    MaxCount=1)["Instances"][0]["InstanceId"]
            t1 = time.perf_counter()
            while True:
                st = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
                if st == "running":
                    break
                time.sleep(0.005)
            t2 = time.perf_counter()
            ec2.terminate_instances(InstanceIds=[iid])
            return (t1 - t0) * 1000, (t2 - t0) * 1000

        def host_block(n):
            r = subprocess.run([bins + "/azote-launch-bench", "--endpoint", "unix:" + host + "/api.sock", "--credentials",
                                host + "/creds", "--controller-pid", str(ctl.pid), "--launches", str(n), "--burst", "1"],
                               check=True, capture_output=True, text=True)
            # Its burst of one is left running: ended here (untimed), as the region's are.
            cli = [bins + "/azote", "--endpoint", "unix:" + host + "/api.sock", "--credentials", host + "/creds"]
            d = json.loads(subprocess.run(cli + ["describe-instances", "--output", "json"], check=True, capture_output=True,
                                          text=True).stdout)
            live = [i["instance_id"] for i in d.get("instances", []) if i["state"]["name"] in ("pending", "running")]
            if live:
                subprocess.run(cli + ["terminate-instances", "--instance-ids", *live], check=True, capture_output=True)
            return json.loads(r.stdout)

        res = {"region_call": [], "region_running": [], "host_p50": [], "host_p99": []}
        block = 10
        for b in range(max(1, runs // block)):
            calls, runnings = [], []
            for _ in range(block):
                call, running = region_launch()
                calls.append(call)
                runnings.append(running)
            res["region_call"] += calls
            res["region_running"] += runnings
            h = host_block(block)
            res["host_p50"].append(h["p50_ms"])
            res["host_p99"].append(h["p99_ms"])
            print("block %d: region running p50 %.1f ms (call p50 %.1f) | host running p50 %.1f ms p99 %.1f" %
                  (b, statistics.median(runnings), statistics.median(calls), h["p50_ms"], h["p99_ms"]), flush=True)
        summary = {}
        for name in ("region_call", "region_running"):
            xs = res[name]
            summary[name + "_ms"] = {"p50": round(statistics.median(xs), 1), "p99": round(pct(xs, 0.99), 1),
                                     "min": round(min(xs), 1), "max": round(max(xs), 1)}
        summary["host_running_ms"] = {"p50_of_block_p50s": round(statistics.median(res["host_p50"]), 1),
                                      "max_block_p99": round(max(res["host_p99"]), 1)}
        summary["ratio_running_p50_region_over_host"] = round(
            summary["region_running_ms"]["p50"] / summary["host_running_ms"]["p50_of_block_p50s"], 2)
        summary["runs"] = runs
        summary["loadavg"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(summary, indent=1))
    finally:
        stop_all(procs, top)


if __name__ == "__main__":
    main()
