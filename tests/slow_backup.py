"""``python slow_backup.py SECONDS prismq-queue-args...``: the real command line, with a pause
before each of its progress reports, so a test can stop a backup while it is under way whatever
the machine's speed."""

from __future__ import annotations

import sys
import time

from prismq_queue import cli

if __name__ == "__main__":
    pause = float(sys.argv[1])
    report = cli._Progress.__call__

    def slowed(self, done, total):
        time.sleep(pause)
        report(self, done, total)

    cli._Progress.__call__ = slowed
    cli.main(sys.argv[2:], prog_name="prismq-queue")
