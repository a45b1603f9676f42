"""``python -m prismq_queue``: the command line (see ``prismq_queue.cli``)."""

from .cli import main

main(prog_name="prismq-queue")
