#!/usr/bin/python3
"""The region at scale, by simulation: many hosts, many instances, a real azote-region and
a real etcd; the hosts are bench/region/sim_hosts.cpp (azote-sim-hosts), a stand-in that
speaks the hosts' gRPC API over mutual TLS and runs no VM — not the controller.

Starts one etcd member, azote-sim-hosts with HOSTS hosts, registers each with the region,
starts azote-region (default host lease: 30 s), then, with requests signed by botocore's
own SigV4 signer and sent over one kept-alive HTTPS connection (the XML is not parsed, so
the times are the region's, not a client's XML parser's):

  1. RunInstances of 20 t3.nano, until INSTANCES instances exist: each call's latency,
     instances placed per second;
  2. DescribeInstances of one instance (by id), 200 times; DescribeInstances pages of 1000
     (MaxResults), 20 times; one full listing through every page;
  3. etcd: database size and revision (etcdctl endpoint status), and lease keep-alives
     over an idle minute (etcd's etcd_debugging_lease_renewed_total), per host per 10 s;
  4. azote-region's RSS.

  bench/region/scale.py BUILD_DIR [HOSTS] [INSTANCES] [IDLE_S]
      prints progress and one JSON summary; exits 1 if the full listing does not show every
      instance exactly once (IDLE_S, default 60: the idle minute for step 3; 0 skips it)
"""
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

from common import free_port, pct, stop_all

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.httpsession


def stats(xs):
    return {"n": len(xs), "p50": round(statistics.median(xs), 1), "p99": round(pct(xs, 0.99), 1),
            "max": round(max(xs), 1)}


def wait_file(path, needle, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            if needle in open(path).read():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s: no %r within %d s" % (path, needle, seconds))


def lease_renewals(port):
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    m = re.search(r"^etcd_debugging_lease_renewed_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    hosts = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    instances = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    idle = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    bins = os.path.join(build, "bin")
    for need in ("/usr/bin/etcd", "/usr/bin/etcdctl", bins + "/azote-sim-hosts", bins + "/azote-region"):
        if not os.path.exists(need):
            print("SKIPPED: %s is missing (scripts/deps.sh installs etcd; make builds the rest)" % need)
            return 77
    top = tempfile.mkdtemp(prefix="azote-bench-scale-")
    procs = []
    summary = {"hosts": hosts, "instances": instances}
    try:
        c, p = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["/usr/bin/etcd", "--name", "s", "--data-dir", top + "/etcd", "--listen-client-urls",
             "http://127.0.0.1:%d" % c, "--advertise-client-urls", "http://127.0.0.1:%d" % c, "--listen-peer-urls",
             "http://127.0.0.1:%d" % p, "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % p,
             "--initial-cluster", "s=http://127.0.0.1:%d" % p],
            stdout=subprocess.DEVNULL, stderr=open(top + "/etcd.log", "w")))
        sim = top + "/sim"
        procs.append(subprocess.Popen([bins + "/azote-sim-hosts", "--dir", sim, "--hosts", str(hosts)],
                                      stdout=open(top + "/sim.out", "w"), stderr=subprocess.STDOUT))
        wait_file(top + "/sim.out", "ready", 120)
        wait_file(top + "/etcd.log", "ready to serve client requests", 30)
        rdir = top + "/region"
        t0 = time.perf_counter()
        for h in range(1, hosts + 1):
            subprocess.run([bins + "/azote-region", "register-host", "--state-dir", rdir, "--etcd", "127.0.0.1:%d" % c,
                            "--host-id", "h%d" % h, "--endpoint", "unix:" + sim + "/sim.sock", "--credentials",
                            sim + "/creds/h%d" % h, "--zone", "us-east-1" + "abc"[h % 3], "--vcpus", "256",
                            "--memory-mib", "262144"], check=True, capture_output=True)
        summary["register_hosts_s"] = round(time.perf_counter() - t0, 1)
        keys = json.loads(subprocess.run([bins + "/azote-region", "add-principal", "--state-dir", rdir, "--name", "scale"],
                                         check=True, capture_output=True, text=True).stdout)
        port = free_port()
        region = subprocess.Popen([bins + "/azote-region", "serve", "--state-dir", rdir, "--etcd", "127.0.0.1:%d" % c,
                                   "--listen", "127.0.0.1:%d" % port],
                                  stdout=open(top + "/region.out", "w"), stderr=open(top + "/region.log", "w"))
        procs.append(region)
        wait_file(top + "/region.out", "ready", 120)
        print("scale: %d hosts registered in %.1f s; region ready" % (hosts, summary["register_hosts_s"]), flush=True)

        url = "https://127.0.0.1:%d/" % port
        session = botocore.httpsession.URLLib3Session(verify=rdir + "/pki/ca.crt", max_pool_connections=1)
        signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(keys["AccessKeyId"], keys["SecretAccessKey"]),
                                         "ec2", "us-east-1")

        def call(params):
            body = "&".join("%s=%s" % (k, v) for k, v in [("Version", "2016-11-15")] + params)
            req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body,
                                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
            signer.add_auth(req)
            prepared = req.prepare()
            t = time.perf_counter()
            resp = session.send(prepared)
            text = resp.content.decode()
            ms = (time.perf_counter() - t) * 1000
            if resp.status_code != 200:
                raise RuntimeError("%s: %d %s" % (params[0][1], resp.status_code, text[:300]))
            return ms, text

        # 1. Launches.
        run_ms, ids = [], []
        t0 = time.perf_counter()
        while len(ids) < instances:
            n = min(20, instances - len(ids))
            ms, text = call([("Action", "RunInstances"), ("ImageId", "ami-builtin"), ("InstanceType", "t3.nano"),
                             ("MinCount", str(n)), ("MaxCount", str(n))])
            run_ms.append(ms)
            got = re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", text)
            ids += got
            if len(ids) % 1000 < 20:
                print("scale: %d instances, last RunInstances %.1f ms" % (len(ids), ms), flush=True)
        elapsed = time.perf_counter() - t0
        summary["run_instances_20_ms"] = stats(run_ms)
        summary["run_instances_20_ms_last_50"] = stats(run_ms[-50:])
        summary["placed_per_s"] = round(len(ids) / elapsed, 1)

        # 2. Descriptions.
        one = [call([("Action", "DescribeInstances"), ("InstanceId.1", random.choice(ids))])[0] for _ in range(200)]
        summary["describe_one_ms"] = stats(one)
        page = [call([("Action", "DescribeInstances"), ("MaxResults", "1000")])[0] for _ in range(20)]
        summary["describe_page_1000_ms"] = stats(page)
        t0 = time.perf_counter()
        token, pages, seen, unique = None, 0, 0, set()
        while True:
            params = [("Action", "DescribeInstances"), ("MaxResults", "1000")] + ([("NextToken", token)] if token else [])
            _, text = call(params)
            pages += 1
            page_ids = re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", text)
            seen += len(page_ids)
            unique.update(page_ids)
            m = re.search(r"<nextToken>([^<]+)</nextToken>", text)
            if not m:
                break
            token = m.group(1)
        summary["describe_all_pages"] = {"pages": pages, "instances": seen, "unique": len(unique),
                                         "total_ms": round((time.perf_counter() - t0) * 1000, 1)}
        print("scale: described %d instances in %d pages" % (seen, pages), flush=True)

        # 3. etcd.
        st = json.loads(subprocess.run(["/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints",
                                        "127.0.0.1:%d" % c, "endpoint", "status", "-w", "json"],
                                       check=True, capture_output=True, text=True).stdout)[0]["Status"]
        summary["etcd_db_size_mib"] = round(st["dbSize"] / 2**20, 2)
        summary["etcd_revision"] = st["header"]["revision"]
        if idle > 0:
            r0 = lease_renewals(c)
            time.sleep(idle)
            r1 = lease_renewals(c)
            if r0 is not None and r1 is not None:
                summary["lease_keepalives_per_host_per_10s"] = round((r1 - r0) / hosts / (idle / 10), 2)
        summary["region_rss_mib"] = round(int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % region.pid).read())
                                              .group(1)) / 1024, 1)
        summary["loadavg"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(summary, indent=1))
        if seen != len(ids) or len(unique) != len(ids):
            print("scale: FAILED: the listing showed %d instances (%d distinct), %d were launched" % (seen, len(unique), len(ids)))
            return 1
        return 0
    finally:
        stop_all(procs, top)


if __name__ == "__main__":
    sys.exit(main())
