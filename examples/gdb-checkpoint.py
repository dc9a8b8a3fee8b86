"""gdb command `dmtcp-checkpoint`: checkpoint the process gdb holds.

A process traced by a debugger cannot be frozen by dmtcp (ptrace allows one
tracer), so `dmtcp-command --checkpoint` refuses it. This command goes
through the debugger's stop instead:

  1. SIGSTOP is queued on the process, and gdb detaches: gdb takes its
     breakpoints out of memory, and every thread enters a job-control stop
     exactly where gdb held it;
  2. `dmtcp-command -bc [ARGS]` checkpoints the computation (the stopped
     process is frozen and captured like any other, and stays stopped);
  3. gdb attaches again: same session, breakpoints put back.

Load it with `gdb -x examples/gdb-checkpoint.py` (or `source` it), then
`dmtcp-checkpoint [dmtcp-command options, e.g. -p PORT]`. The process stays
in the job-control stop after gdb detaches for good: resume it with
`kill -CONT PID`. `DMTCP_COMMAND` names the dmtcp-command binary (default:
the one on PATH).
"""

import os
import signal
import subprocess

import gdb


class DmtcpCheckpoint(gdb.Command):
    """Checkpoint the process gdb holds, through gdb's stop.
Usage: dmtcp-checkpoint [dmtcp-command options, e.g. -p PORT]"""

    def __init__(self):
        super().__init__("dmtcp-checkpoint", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        pid = gdb.selected_inferior().pid
        if pid <= 0:
            raise gdb.GdbError("dmtcp-checkpoint: no process is being debugged")
        cmd = [os.environ.get("DMTCP_COMMAND", "dmtcp-command"), "-bc"]
        cmd += gdb.string_to_argv(arg)
        os.kill(pid, signal.SIGSTOP)
        gdb.execute("detach", to_string=True)
        try:
            result = subprocess.run(cmd, check=False)
        finally:
            gdb.execute("attach %d" % pid, to_string=True)
        if result.returncode != 0:
            raise gdb.GdbError(
                "dmtcp-checkpoint: %s exited with %d" % (" ".join(cmd), result.returncode)
            )


DmtcpCheckpoint()
