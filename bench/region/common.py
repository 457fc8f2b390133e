"""What bench/region/launch.py and scale.py share."""
import shutil
import socket
import subprocess


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, q):
    """The q-quantile of xs (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def stop_all(procs, top):
    """Stops the processes started, last first (SIGTERM, then SIGKILL after 30 s), and
    removes their temp directory."""
    for pr in reversed(procs):
        pr.terminate()
        try:
            pr.wait(30)
        except subprocess.TimeoutExpired:
            pr.kill()
    shutil.rmtree(top, ignore_errors=True)
