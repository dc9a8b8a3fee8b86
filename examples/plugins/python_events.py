#!/usr/bin/env python3
"""python_events.py: a Python program that checkpoints itself and reacts to
checkpoints, with the dmtcp module (python/dmtcp.py on PYTHONPATH).

    PYTHONPATH=python dmtcp-run -- python3 examples/plugins/python_events.py

It prints "enabled=True", checkpoints itself (dmtcp.checkpoint() returns 1;
2 when restarted from that checkpoint), prints one line per event, then runs
until the file named by $ZDTM_STOP exists (or forever), sleeping, or with
PY_BUSY=1 computing in Python."""

import os
import sys
import time

import dmtcp


def say(*a):
    print(*a, flush=True)


@dmtcp.on_checkpoint
def flush():
    say(f"event checkpoint gen={dmtcp.generation()}")


@dmtcp.on_resume
def resumed(restarted):
    say(f"event resume restarted={restarted} gen={dmtcp.generation()}")


def named(name):
    say(f"event {name} gen={dmtcp.generation()} restarts={dmtcp.restart_count()}")


for _name in ("RESUME", "RESTART"):
    dmtcp.on_event(_name, named)
try:
    dmtcp.on_event("PRECHECKPOINT", named)
except ValueError as e:
    say(f"PRECHECKPOINT refused: {e}")


say(f"enabled={dmtcp.is_enabled()}")
dmtcp.publish("python_events", b"greeting", b"hello " * 1000)
say(f"query ok={dmtcp.query('python_events', b'greeting') == b'hello ' * 1000}")
r = dmtcp.checkpoint()
say(f"checkpoint returned {r}")
stop = os.environ.get("ZDTM_STOP")
busy = os.environ.get("PY_BUSY") == "1"
while not (stop and os.path.exists(stop)):
    if busy:
        # Pure Python work: this thread holds the interpreter lock most of
        # the time, also when a checkpoint stops it.
        sum(range(20000))
    else:
        time.sleep(0.01)
say("done")
sys.exit(0)
