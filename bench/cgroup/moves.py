#!/usr/bin/python3
"""How long moving a process between two cgroup v1 leaves takes after a quiet moment, with
the cgroup2 option favordynmods off and on (what azote-launcher sets on hybrid hosts).

    sudo bench/cgroup/moves.py [ROUNDS]

Root only. Needs a v1 memory hierarchy and a cgroup2 mount at /sys/fs/cgroup/unified (a
hybrid host). Toggles favordynmods on that mount and puts back what it found."""
import ctypes, glob, os, subprocess, sys, time

MS_REMOUNT = 32
UNIFIED = '/sys/fs/cgroup/unified'
libc = ctypes.CDLL(None, use_errno=True)

def super_opts():
    for line in open('/proc/self/mountinfo'):
        pre, post = line.split(' - ')
        if pre.split()[4] == UNIFIED:
            return [o for o in post.split()[2].split(',') if o not in ('rw', 'ro')]
    sys.exit('no cgroup2 mount at ' + UNIFIED)

def set_favor(on):
    opts = [o for o in super_opts() if o != 'favordynmods'] + (['favordynmods'] if on else [])
    if libc.mount(None, UNIFIED.encode(), None, MS_REMOUNT, ','.join(opts).encode()) != 0:
        sys.exit('remount %s: %s' % (UNIFIED, os.strerror(ctypes.get_errno())))

def moves(rounds):
    mem = glob.glob('/sys/fs/cgroup/memory/*/')[0] if not os.path.exists('/sys/fs/cgroup/memory/cgroup.procs') \
        else '/sys/fs/cgroup/memory/'
    home = open('/proc/self/cgroup').read()
    base = next(l.split(':')[2].strip() for l in home.splitlines() if l.split(':')[1] == 'memory')
    root = '/sys/fs/cgroup/memory' + base
    a, b = root + '/azote-moves-a', root + '/azote-moves-b'
    for d in (a, b): os.makedirs(d, exist_ok=True)
    p = subprocess.Popen(['sleep', '600'])
    out = []
    try:
        for i in range(rounds):
            time.sleep(0.2)  # a quiet moment: no cgroup change for 200 ms
            t = time.perf_counter()
            with open((a if i % 2 == 0 else b) + '/cgroup.procs', 'w') as f: f.write(str(p.pid))
            out.append((time.perf_counter() - t) * 1e6)
        with open(root + '/cgroup.procs', 'w') as f: f.write(str(p.pid))
    finally:
        p.kill(); p.wait()
        for d in (a, b): os.rmdir(d)
    out.sort()
    return out[len(out) // 2], out[-1]

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
was = 'favordynmods' in super_opts()
try:
    for on in (False, True):
        set_favor(on)
        med, worst = moves(rounds)
        print('favordynmods %-3s: move after 200 ms idle: median %.0f us, max %.0f us (%d moves)'
              % ('on' if on else 'off', med, worst, rounds))
finally:
    set_favor(was)
