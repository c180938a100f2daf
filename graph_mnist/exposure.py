"""What a listener of ours exposes: the facts the cluster launcher, its tasks and the
server share to decide whether to warn (standard library only: the launcher reads it
before anything else is imported)."""

import ipaddress
import os

# set in the environment of every process inside graph_mnist.cluster's private network
PRIVATE_NETWORK = 'GRAPH_MNIST_PRIVATE_NETWORK'


def in_private_network(environ=None):
    """Whether this process runs in the launcher's network namespace (loopback only)."""
    return bool((os.environ if environ is None else environ).get(PRIVATE_NETWORK))


def is_loopback(host):
    """Whether `host` (an address or 'localhost') is reachable from this machine only."""
    if host.strip('[]').lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
