"""What a measurement was made on: written beside every figure the scripts produce."""

import os
import subprocess
from importlib import metadata


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
