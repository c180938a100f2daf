"""Writing files so that a killed process never leaves half of one behind."""

import json
import os
import tempfile


def write_atomically(path, data):
    """Writes bytes to a temporary file beside `path`, then renames it into place."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.partial-', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are for everyone
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, value):
    write_atomically(path, json.dumps(value, indent=1, allow_nan=False).encode())
