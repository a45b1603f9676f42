"""Instruction count of enqueue_many, for A/B of two builds on a noisy machine (callgrind counts
instructions, not seconds, so the figure repeats whatever else the machine does):

    valgrind --tool=callgrind --callgrind-out-file=cg.out python benches/callgrind_enqueue_many.py
    callgrind_annotate --tree=calling --inclusive=yes cg.out | less

20 calls of 1,000 tasks each, as bench_core's enqueue_many builds them.
"""

import os, sys, tempfile
from prismq_queue import Queue
d = tempfile.mkdtemp()
q = Queue(os.path.join(d, "q.db"))
batches = [[{"type": "email.send", "payload": {"to": "a@example.com", "i": i}, "priority": 100}
            for i in range(s, s + 1000)] for s in range(0, 20000, 1000)]
for b in batches:
    q.enqueue_many(b)
q.close()
