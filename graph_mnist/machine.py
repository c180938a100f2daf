"""What a measurement was made on: written beside every figure the scripts produce."""

from importlib import metadata
import os
import subprocess


def machine():
    """What the figures were measured on."""
    cpu, extensions = 'unknown', []
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and cpu == 'unknown':
                    cpu = line.split(':', 1)[1].strip()
                if line.startswith('flags') and not extensions:
                    extensions = sorted(x for x in line.split(':', 1)[1].split()
                                        if x.startswith(('avx', 'fma', 'amx')))
    except OSError:
        pass
    versions = {}
    for package in ('tensorflow', 'keras', 'torch', 'numpy'):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    here = os.path.dirname(os.path.abspath(__file__))  # the checkout this runs from
    git = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                         text=True, cwd=here)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, cwd=here).stdout.strip()
    return {'cpu': cpu, 'vector_extensions': extensions, 'cores': os.cpu_count(),
            'versions': versions,
            'commit': git.stdout.strip() + ('-dirty' if dirty else '') if git.returncode == 0
            else None}


def usable_cores(cgroup='/sys/fs/cgroup'):
    """The cores this process may use: those it may run on, capped by a CPU quota where
    its cgroup sets one (a container given 2 CPUs on a 64-core node has 64 cores in
    os.cpu_count() but time for 2). cgroup v2's cpu.max, else v1's cpu.cfs_quota_us."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = period = None
    try:
        with open(os.path.join(cgroup, 'cpu.max')) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        try:
            with open(os.path.join(cgroup, 'cpu', 'cpu.cfs_quota_us')) as f:
                quota = f.read().strip()
            with open(os.path.join(cgroup, 'cpu', 'cpu.cfs_period_us')) as f:
                period = f.read().strip()
        except OSError:
            pass
    try:
        quota, period = int(quota), int(period)
    except (TypeError, ValueError):  # 'max', -1 or nothing: no quota
        return cores
    if quota <= 0 or period <= 0:
        return cores
    return max(1, min(cores, -(-quota // period)))
