"""Runs the prismq-queue command line in a process whose files cannot grow past LIMIT bytes: a
full disk for this process only, real and without root (RLIMIT_FSIZE; SIGXFSZ ignored, so a write
past the limit fails with EFBIG instead of killing the process). The limit is lifted when the
file LIFT appears, as when space is freed.

    python fsize_wrapper.py LIMIT LIFT worker --db ...
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time


def main() -> None:
    limit, lift = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    def lift_when_asked() -> None:
        while not os.path.exists(lift):
            time.sleep(0.05)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    threading.Thread(target=lift_when_asked, daemon=True).start()
    from prismq_queue.cli import main as cli

    cli(args=sys.argv[3:], prog_name="prismq-queue")


if __name__ == "__main__":
    main()
