"""dmtcp: checkpoint control and checkpoint events for Python programs.

Under ``dmtcp-run`` the preloaded ``libdmtcp_inject.so`` provides the C API
of ``inject/include/dmtcp.h``; this module calls it through ctypes. Without
DMTCP every call is harmless: ``is_enabled()`` is False, ``checkpoint()``
returns ``NOT_PRESENT`` and callbacks are never called.

Events: ``on_checkpoint(fn)`` registers ``fn()`` to run when a checkpoint
begins, while the program still runs (DMTCP_EVENT_PRESUSPEND: flush, close,
tell peers); ``on_resume(fn)`` registers ``fn(restarted)`` to run as soon as
the program runs again after the checkpoint (``restarted`` False) or after a
restart from it (True) (DMTCP_EVENT_RUNNING). ``on_event(name, fn)``
registers ``fn(name)`` for "PRESUSPEND" and "RUNNING" (at those moments),
"RESUME" (after a checkpoint) and "RESTART" (after a restart): these two
are called once the program's threads run again, right before the RUNNING
callbacks, not while they are stopped. Python code cannot run while the
program's threads are stopped (PRECHECKPOINT and DMTCP's own RESUME and
RESTART moments): a stopped thread may hold the interpreter lock, or wait
for it in a way that makes the next thread to release it wait for that
stopped thread (CPython's forced switching); ``on_event("PRECHECKPOINT",
...)`` raises ValueError. Callbacks run in the library's hook thread; an
exception is printed and ignored. RUNNING also follows a checkpoint that
failed after PRESUSPEND.

Publish/subscribe: ``publish(db, key, value)`` and ``query(db, key)`` (bytes)
use the coordinator's database of the computation's current generation.
"""

import ctypes
import sys
import threading

__all__ = [
    "NOT_PRESENT",
    "AFTER_CHECKPOINT",
    "AFTER_RESTART",
    "is_enabled",
    "checkpoint",
    "generation",
    "restart_count",
    "disabled",
    "publish",
    "query",
    "on_checkpoint",
    "on_resume",
    "on_event",
    "EVENTS",
]

NOT_PRESENT = 3
AFTER_CHECKPOINT = 1
AFTER_RESTART = 2

# dmtcp.h's DmtcpEvent_t numbers used here.
_EVENT_PRESUSPEND = 15
_EVENT_RUNNING = 19
# The events on_event takes.
EVENTS = ("PRESUSPEND", "RESUME", "RESTART", "RUNNING")

_lib = ctypes.CDLL(None, use_errno=True)


def _fn(name, restype, argtypes):
    try:
        f = getattr(_lib, name)
    except AttributeError:
        return None
    f.restype = restype
    f.argtypes = argtypes
    return f


_c = ctypes
_is_enabled = _fn("dmtcp_is_enabled", _c.c_int, [])
_checkpoint = _fn("dmtcp_checkpoint", _c.c_int, [])
_disable = _fn("dmtcp_disable_ckpt", _c.c_int, [])
_enable = _fn("dmtcp_enable_ckpt", _c.c_int, [])
_generation = _fn("dmtcp_get_generation", _c.c_int, [])
_restarts = _fn("dmtcp_get_restart_count", _c.c_int, [])
_publish = _fn(
    "dmtcp_send_key_val_pair_to_coordinator",
    _c.c_int,
    [_c.c_char_p, _c.c_void_p, _c.c_uint32, _c.c_void_p, _c.c_uint32],
)
_query = _fn(
    "dmtcp_send_query_to_coordinator",
    _c.c_int,
    [_c.c_char_p, _c.c_void_p, _c.c_uint32, _c.c_void_p, _c.POINTER(_c.c_uint32)],
)

_HOOK = _c.CFUNCTYPE(None, _c.c_int, _c.c_void_p)


class _Descriptor(_c.Structure):
    _fields_ = [
        ("pluginApiVersion", _c.c_char_p),
        ("dmtcpVersion", _c.c_char_p),
        ("pluginName", _c.c_char_p),
        ("authorName", _c.c_char_p),
        ("authorEmail", _c.c_char_p),
        ("description", _c.c_char_p),
        ("event_hook", _HOOK),
    ]


_register = _fn("dmtcp_register_plugin_events", None, [_Descriptor, _c.c_uint64])


def is_enabled():
    """True when the program runs under DMTCP."""
    return bool(_is_enabled and _is_enabled())


def checkpoint():
    """Checkpoints the whole computation and waits until the images are
    durable: AFTER_CHECKPOINT in the running program, AFTER_RESTART in a
    program restarted from this checkpoint, NOT_PRESENT without DMTCP.
    Raises OSError when the checkpoint fails."""
    if _checkpoint is None:
        return NOT_PRESENT
    r = _checkpoint()
    if r < 0:
        e = _c.get_errno()
        raise OSError(e, "dmtcp_checkpoint failed")
    return r


def generation():
    """Checkpoints this process went through (0 without DMTCP)."""
    return _generation() if _generation else 0


def restart_count():
    """Times this process was restarted (0 without DMTCP)."""
    return _restarts() if _restarts else 0


class disabled:
    """``with dmtcp.disabled(): ...``: no checkpoint lands inside the block
    (dmtcp_disable_ckpt / dmtcp_enable_ckpt, per thread)."""

    def __enter__(self):
        if _disable:
            _disable()
        return self

    def __exit__(self, *exc):
        if _enable:
            _enable()
        return False


def publish(db, key, value):
    """Stores bytes ``value`` under bytes ``key`` in database ``db`` (str).
    Returns True when the coordinator kept it."""
    if _publish is None:
        return False
    key, value = bytes(key), bytes(value)
    return bool(_publish(db.encode(), key, len(key), value, len(value)))


def query(db, key):
    """The bytes stored under ``key`` in ``db``, or None."""
    if _query is None:
        return None
    key = bytes(key)
    size = 1 << 16
    while True:
        buf = _c.create_string_buffer(size)
        n = _c.c_uint32(size)
        if not _query(db.encode(), key, len(key), buf, _c.byref(n)):
            return None
        if n.value <= size:
            return buf.raw[: n.value]
        size = n.value


_lock = threading.Lock()
_on_checkpoint = []
_on_resume = []
_on_event = {n: [] for n in EVENTS}
_registered = []
_seen_restarts = [None]
_seen_generation = [None]


def _call(fns, *args):
    for f in list(fns):
        try:
            f(*args)
        except Exception as e:  # a callback must not break the checkpoint
            print(f"dmtcp: callback {f!r} failed: {e!r}", file=sys.stderr)


def _hook(event, _data):
    if event == _EVENT_PRESUSPEND:
        _call(_on_checkpoint)
        _call(_on_event["PRESUSPEND"], "PRESUSPEND")
    elif event == _EVENT_RUNNING:
        now = restart_count()
        restarted = _seen_restarts[0] is not None and now != _seen_restarts[0]
        _seen_restarts[0] = now
        # After a checkpoint that failed, the generation did not move: no
        # RESUME then.
        gen = generation()
        if restarted:
            _call(_on_event["RESTART"], "RESTART")
        elif gen != _seen_generation[0]:
            _call(_on_event["RESUME"], "RESUME")
        _seen_generation[0] = gen
        _call(_on_resume, restarted)
        _call(_on_event["RUNNING"], "RUNNING")


def _ensure_registered():
    with _lock:
        if _registered or _register is None:
            return
        _seen_restarts[0] = restart_count()
        _seen_generation[0] = generation()
        hook = _HOOK(_hook)
        d = _Descriptor(
            b"3",
            b"3.0.0",
            b"python",
            b"dmtcp.py",
            b"",
            b"Python callbacks",
            hook,
        )
        # Kept alive for the life of the process: the library calls them.
        _registered.extend([hook, d])
        _register(d, (1 << _EVENT_PRESUSPEND) | (1 << _EVENT_RUNNING))


def on_checkpoint(fn):
    """Calls ``fn()`` when a checkpoint begins (the program still runs).
    Usable as a decorator."""
    _on_checkpoint.append(fn)
    _ensure_registered()
    return fn


def on_resume(fn):
    """Calls ``fn(restarted)`` when the program runs again after a
    checkpoint (False) or after a restart (True). Usable as a decorator."""
    _on_resume.append(fn)
    _ensure_registered()
    return fn


def on_event(name, fn):
    """Calls ``fn(name)`` at DMTCP event ``name``: "PRESUSPEND" (a
    checkpoint begins, the program runs), "RESUME" / "RESTART" (the program
    runs again after a checkpoint / after a restart), "RUNNING" (after
    either). "PRECHECKPOINT" raises ValueError: Python cannot run while the
    program's threads are stopped."""
    if name == "PRECHECKPOINT":
        raise ValueError(
            "PRECHECKPOINT: Python code cannot run while the program's threads are "
            "stopped (one may hold or wait for the interpreter lock); use PRESUSPEND"
        )
    if name not in _on_event:
        raise ValueError(f"unknown DMTCP event {name!r} (one of {', '.join(EVENTS)})")
    _on_event[name].append(fn)
    _ensure_registered()
    return fn
