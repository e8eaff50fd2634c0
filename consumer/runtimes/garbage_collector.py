"""The cyclic garbage collector tuned for a daemon that allocates per record and keeps little.

CPython runs a young-generation pass every 700 new container objects. Decoding one Kinesis
page of 1,000 JSON records creates tens of thousands (dicts, records, strings in lists), so
passes run dozens of times per page, and every tenth one also walks the older objects,
among them the ~105,000 that start-up leaves (botocore's service models, pydantic schemas,
modules). `python -m bench gc` measures parse + decode of Kinesis JSON pages with and
without this tuning (docs/benchmarks.md). Reference counting frees almost everything the hot
path allocates; the collector is only needed for cycles, which it rarely finds here.
"""

from __future__ import annotations

import gc

# Young passes every 50,000 new containers instead of 700: about once per page.
YOUNG_THRESHOLD = 50_000


def tune_for_throughput() -> None:
    """Freeze what start-up allocated and make young passes rare; call once start-up is done."""
    gc.collect()
    # Objects alive now (imported modules, clients, settings) live as long as the process:
    # the permanent generation keeps every later pass from walking them again.
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
