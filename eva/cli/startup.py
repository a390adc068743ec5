"""Start-up with the cyclic garbage collector paused.

A launch builds hundreds of thousands of objects that live as long as the process: the
modules of torch, of torch._dynamo (which torch imports when the first optimizer is
built), of Hydra, and in the writer process of MLflow. CPython's collector runs every 700
net allocations and rescans the older generations as they grow, so it spends a good part
of the import time walking objects that will never be garbage (benchmarks/startup.py
measures what pausing it saves).

So `python -m eva` pauses the collector for its start-up (eva.cli.errors.run), and the first
loop turns it back on (training, evaluation, LR range test); so does the start of a sweep
whose jobs run in other processes (joblib: eva/tracking/callback.py), and the end of the
command whatever happened. Turning it back on first freezes (gc.freeze) everything
start-up made: later collections never scan it, and stay as cheap as in a small process.
The price: the few cycles start-up left unreachable are never freed (a few MB, once).
Importing eva as a library changes nothing: only pause_gc() turns the collector off, and
resume_gc() acts only after it did.
"""

import gc

_paused = False


def pause_gc() -> None:
    """Stop the cyclic collector until resume_gc() (left alone if it is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """Start-up is over: freeze what it made and collect as usual from now on.

    Cheap and idempotent (every loop calls it); does nothing unless pause_gc() paused.
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
