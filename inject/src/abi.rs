//! The state page: everything `libdmtcp_inject.so` and the supervisor (or
//! restorer) agree on, in one place.
//!
//! This file has no dependencies and no `unsafe` so that the supervisor can
//! compile it as its own module (`#[path = "../../inject/src/abi.rs"]`)
//! without linking the library (whose rlib would bring the constructor and
//! the exported C symbols into the supervisor's binaries).
//!
//! The library maps one anonymous page at start-up and names it
//! [`STATE_VMA_NAME`], so it appears as `[anon:dmtcp_state]` in
//! `/proc/PID/maps`; the supervisor finds it there and reads or writes it
//! through `/proc/PID/mem` (while the process is frozen, except for the
//! coordinator publication, which is guarded by [`off::COORD_SEQ`]).
//!
//! Layout (all little-endian x86-64, naturally aligned, [`STATE_SIZE`] bytes):
//!
//! | offset | size | field          | written by                                 |
//! |-------:|-----:|----------------|--------------------------------------------|
//! |      0 |    8 | magic          | library: [`STATE_MAGIC`] (`"DMTCPST1"`)    |
//! |      8 |    4 | abi_version    | library: [`ABI_VERSION`]                   |
//! |     12 |    4 | size           | library: [`STATE_SIZE`]                    |
//! |     16 |    4 | disable_count  | library (i32): > 0 = checkpoints must wait |
//! |     20 |    4 | ckpt_waiting   | supervisor: 1 = a checkpoint waits          |
//! |     24 |    8 | generation     | supervisor: +1 per completed checkpoint    |
//! |     32 |    8 | restarts       | restorer: +1 per restart                   |
//! |     40 |    4 | coord_seq      | supervisor: seqlock over the 3 coord fields|
//! |     44 |    2 | coord_port     | supervisor                                 |
//! |     46 |    2 | reserved       | 0                                          |
//! |     48 |   64 | coord_host     | supervisor, NUL-padded                     |
//! |    112 |  128 | secret         | supervisor, NUL-padded                     |
//!
//! Plugin hook area (present when `size` >= [`HOOKS_SIZE`]; additive, same
//! ABI version; all zero in a process without plugins):
//!
//! | offset | size | field          | written by                                 |
//! |-------:|-----:|----------------|--------------------------------------------|
//! |    240 |    4 | hook_version   | library: [`HOOK_VERSION`] once a hook thread runs; supervisor: [`HOOK_HUNG`] after a hung hook |
//! |    244 |    4 | hook_tid       | library: the hook thread's tid (in the namespace) |
//! |    248 |    4 | hook_req_fd    | library: write end of the request pipe     |
//! |    252 |    4 | hook_reply_fd  | library: read end of the reply pipe        |
//! |    256 |    4 | hook_plugins   | library: number of plugins                 |
//! |    260 |    4 | hook_busy      | library: 1 while a hook runs               |
//!
//! Raw pid calls (at fixed offsets, whatever `size` says; all zero unless
//! the computation runs without namespaces, see [`vtrap`]):
//!
//! | offset | size | field          | written by                                 |
//! |-------:|-----:|----------------|--------------------------------------------|
//! |    264 |    4 | trap_filter    | restorer: 1 = the trap filter is the root of every thread's seccomp chain; library: 1 when it finds the filter after an exec |
//! |    268 |    4 | pid_prev       | restorer: 1 = the pid table's previous-real column follows its pairs |
//! |    272 |    8 | sigsys_handler | library: address of its SIGSYS handler, once installed |
//! |    280 |    8 | wait_redo      | library: address of the trampoline a wait made again after a restart goes through ([`crate::vpid`]) |
//! |    288 |    8 | sigsys_prog    | library (its `sigaction(SIGSYS)`, raw ones included) and restorer: the program's own SIGSYS handler while the kernel's is the library's |
//! |    296 |    8 | sigsys_flags   | the same: its `sa_flags` (the kernel's layout) |
//! |    304 |    8 | sigsys_restorer| the same: its `sa_restorer` |
//! |    312 |    8 | sigsys_mask    | the same: the first word of its `sa_mask` |
//! |    320 |    8 | sigsys_lib_restorer | library: the `sa_restorer` its own SIGSYS handler was installed with (glibc's) |
//!
//! Pid table (at a fixed offset, whatever `size` says; all zero unless
//! the computation runs without namespaces and was restarted):
//!
//! | offset | size | field          | written by                                 |
//! |-------:|-----:|----------------|--------------------------------------------|
//! |    512 |    4 | pid_count      | restorer: number of pairs that follow      |
//! |    516 |    4 | tid_offset     | library: where glibc keeps a thread's kernel tid, from its thread pointer (0: not found) |
//! |    520 | 8 * n| pid pairs      | restorer: i32 virtual, i32 real (pids and tids the program sees / the kernel's) |
//! | 520+8n | 4 * n| previous reals | restorer, when `pid_prev` is 1: row i's real id before this restart (its virtual id before the first; 0 rows: see below) |
//!
//! A thread can be stopped for a checkpoint between a system call and the
//! translation of the id the call returned, or between the translation of
//! an id and the call that takes it: it then holds a real id of the run
//! the image was taken in. The library notes `restarts` around each such
//! call: when it changed, an id returned is looked up among the current
//! real ids, then among the previous ones, and a call that found no such
//! process is made again ([`crate::vpid`]). Previous real ids of processes
//! that no longer exist (reaped before the checkpoint) have rows of their
//! own with real id 0 (never a match for a virtual id).
//!
//! The restorer also writes each restored thread's new kernel tid at
//! `fs_base + tid_offset`, so that glibc's own uses of it
//! (`pthread_kill`, `raise`) reach the right thread.
//! The library translates every pid it passes in or out of libc through
//! this table ([`PIDMAP_MAX`] pairs at most); a pid not in it is its own
//! virtual pid. The restorer writes it while the process is stopped,
//! before any thread runs again; a forked child inherits its parent's copy.
//!
//! `coord_seq` is 0 while no coordinator was published, odd while the
//! supervisor writes the coordinator fields, and even (non-zero) when they
//! are valid. Bump [`ABI_VERSION`] whenever a field moves or changes meaning;
//! new fields go at the end (the reader checks `size`).

/// `"DMTCPST1"` read as a little-endian u64.
pub const STATE_MAGIC: u64 = u64::from_le_bytes(*b"DMTCPST1");
/// Version of this layout.
pub const ABI_VERSION: u32 = 1;
/// Name given with `PR_SET_VMA_ANON_NAME`.
pub const STATE_VMA_NAME: &str = "dmtcp_state";
/// How the page shows in `/proc/PID/maps`.
pub const STATE_MAPS_NAME: &str = "[anon:dmtcp_state]";
/// Bytes mapped for the page.
pub const STATE_MAP_LEN: usize = 4096;
/// Bytes of the page in use.
pub const STATE_SIZE: usize = 240;
/// Bytes of the page in use by a library with plugin hooks (the fields
/// after [`STATE_SIZE`] are the hook area).
pub const HOOKS_SIZE: usize = 264;
/// Version of the hook area and of the pipe messages below.
pub const HOOK_VERSION: u32 = 1;
/// `hook_version` written by the supervisor once a hook did not return
/// within `DMTCP_PLUGIN_TIMEOUT`: the hook thread is stuck in a plugin, so
/// the process's plugins get no more moments (later checkpoints skip it).
/// A forked child starts a hook thread of its own and a version of its own.
pub const HOOK_HUNG: u32 = 0x474e_5548;
pub const COORD_HOST_LEN: usize = 64;
pub const SECRET_LEN: usize = 128;

/// Offset of `trap_filter` (see the table above).
pub const TRAP_FILTER_OFF: usize = 264;
/// Offset of `sigsys_handler` (see the table above).
pub const SIGSYS_HANDLER_OFF: usize = 272;
/// Offset of `wait_redo` (see the table above).
pub const WAIT_REDO_OFF: usize = 280;
/// Offset of `sigsys_prog`, the first of the program's SIGSYS action's
/// four words (handler, flags, restorer, mask; see the table above).
pub const SIGSYS_PROG_OFF: usize = 288;
/// `SA_RESTORER` (x86-64; not in every libc crate).
pub const SA_RESTORER: u64 = 0x0400_0000;
/// Offset of `sigsys_lib_restorer` (see the table above).
pub const SIGSYS_LIB_RESTORER_OFF: usize = 320;
/// The `sa_flags` the library's SIGSYS handler is installed with
/// (`SA_SIGINFO | SA_NODEFER | SA_RESTART`; the restorer adds
/// `SA_RESTORER`, glibc does too).
pub const SIGSYS_LIB_FLAGS: u64 = 0x4 | 0x4000_0000 | 0x1000_0000;

/// The seccomp filter that sends raw pid system calls to the library
/// without namespaces after a restart (built by the supervisor's
/// `resources/vpid_trap.rs`, handled by the library's `vpid_trap.rs`).
pub mod vtrap {
    /// `SECCOMP_RET_DATA` of its `SECCOMP_RET_TRAP` (the SIGSYS's
    /// `si_errno`): tells the library's handler the trap is ours.
    pub const TRAP_DATA: u32 = 0x0d7c;
    /// `getppid(PROBE)` returns `-PROBE_ERRNO` where the filter is
    /// installed (how the library finds it after an exec).
    pub const PROBE: u64 = 0x6474_6d63_7072_6f62;
    pub const PROBE_ERRNO: u32 = 4000;
    /// Also trapped: `rt_sigaction` of `SIGSYS` (the library keeps the
    /// program's action, the kernel's is the library's handler).
    pub const SIGACTION: i64 = 13;
    pub const SIGSYS: u32 = 31;
    /// The calls trapped (those `vpid::syscall` translates).
    pub const CALLS: &[i64] = &[
        39,  // getpid
        110, // getppid
        186, // gettid
        111, // getpgrp
        112, // setsid
        121, // getpgid
        124, // getsid
        109, // setpgid
        62,  // kill
        200, // tkill
        234, // tgkill
        61,  // wait4
        203, // sched_setaffinity
        204, // sched_getaffinity
        144, // sched_setscheduler
        145, // sched_getscheduler
        142, // sched_setparam
        143, // sched_getparam
        148, // sched_rr_get_interval
        314, // sched_setattr
        315, // sched_getattr
        302, // prlimit64
        434, // pidfd_open
        140, // getpriority
        141, // setpriority
        129, // rt_sigqueueinfo
        297, // rt_tgsigqueueinfo
        247, // waitid
    ];
}

/// Offset of the pid table's count (see the table above).
pub const PIDMAP_OFF: usize = 512;
/// Offset of the library's `tid_offset` (see the table above).
pub const TID_OFFSET_OFF: usize = 516;
/// Offset of its first (virtual, real) pair.
pub const PIDMAP_PAIRS: usize = 520;
/// Most pairs the table holds.
pub const PIDMAP_MAX: usize = (STATE_MAP_LEN - PIDMAP_PAIRS) / 8;
/// Offset of `pid_prev` (see the table above).
pub const PIDMAP_PREV_OFF: usize = 268;
/// Most rows the table holds with its previous-real column.
pub const PIDMAP_PREV_MAX: usize = (STATE_MAP_LEN - PIDMAP_PAIRS) / 12;

/// The pid table for programs exec'd after a restart: a new program image
/// maps a state page of its own, empty. At each restart the restorer writes
/// the table it gave the restored processes to `vpids-KEY` in the private
/// runtime directory, KEY being [`VPID_KEY_ENV`] of the computation's
/// environment (16 to 64 lowercase hex digits, set at launch); the
/// library's constructor copies it into its page when that is empty.
/// Layout: [`VPID_FILE_MAGIC`], `pid_prev` (u32), the row count (u32),
/// then the bytes of the page from [`PIDMAP_PAIRS`] on: the pairs, then the
/// previous-real column when `pid_prev` is 1.
pub const VPID_KEY_ENV: &str = "DMTCP_VPID_KEY";
/// File name prefix of the exec pid table (see [`VPID_KEY_ENV`]).
pub const VPID_FILE_PREFIX: &str = "vpids-";
/// First bytes of the exec pid table file.
pub const VPID_FILE_MAGIC: &[u8; 8] = b"DMTCPVP1";
/// Header size of the exec pid table file.
pub const VPID_FILE_HDR: usize = 16;

/// Whether `key` is a [`VPID_KEY_ENV`] value (it becomes part of a path).
pub fn vpid_key_ok(key: &str) -> bool {
    (16..=64).contains(&key.len()) && key.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The rows of an exec pid table file (see [`VPID_KEY_ENV`]): whether the
/// previous-real column is there, the row count, and the bytes that go to
/// [`PIDMAP_PAIRS`]; `None` for anything else.
pub fn vpid_file_rows(b: &[u8]) -> Option<(bool, usize, &[u8])> {
    if b.len() < VPID_FILE_HDR || &b[..8] != VPID_FILE_MAGIC {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let prev = match word(8) {
        0 => false,
        1 => true,
        _ => return None,
    };
    let n = word(12) as usize;
    let (max, row) = if prev {
        (PIDMAP_PREV_MAX, 12)
    } else {
        (PIDMAP_MAX, 8)
    };
    (n <= max && b.len() == VPID_FILE_HDR + n * row).then(|| (prev, n, &b[VPID_FILE_HDR..]))
}

/// Field offsets (see the table above).
pub mod off {
    pub const MAGIC: usize = 0;
    pub const ABI_VERSION: usize = 8;
    pub const SIZE: usize = 12;
    pub const DISABLE_COUNT: usize = 16;
    pub const CKPT_WAITING: usize = 20;
    pub const GENERATION: usize = 24;
    pub const RESTARTS: usize = 32;
    pub const COORD_SEQ: usize = 40;
    pub const COORD_PORT: usize = 44;
    pub const COORD_HOST: usize = 48;
    pub const SECRET: usize = 112;
    pub const HOOK_VERSION: usize = 240;
    pub const HOOK_TID: usize = 244;
    pub const HOOK_REQ_FD: usize = 248;
    pub const HOOK_REPLY_FD: usize = 252;
    pub const HOOK_PLUGINS: usize = 256;
    pub const HOOK_BUSY: usize = 260;
}

/// The pipes between the supervisor and a process's hook thread.
///
/// Requests (supervisor to hook thread) are 8 bytes: kind and argument,
/// both u32 little-endian. Replies (hook thread to supervisor) are a u32
/// kind, a u32 length and that many bytes of text.
pub mod hook {
    /// Run the hooks of a moment (argument: `MOMENT_*`); replied to with
    /// `REP_START` before each hook, `REP_BARRIER` at each barrier and
    /// `REP_DONE` at the end.
    pub const REQ_RUN: u32 = 1;
    /// Leave the barrier the thread waits at.
    pub const REQ_GO: u32 = 2;
    /// User threads run again: deliver `DMTCP_EVENT_RUNNING` (no reply).
    pub const REQ_RUNNING: u32 = 3;
    /// The environment of `dmtcp-restart` follows (argument: its length,
    /// at most [`MAX_ENV`]; `NAME=value` entries, each NUL-terminated), for
    /// `dmtcp_get_restart_env`. Sent before `REQ_RUN` of RESTART; no reply.
    pub const REQ_ENV: u32 = 4;
    /// Longest `REQ_ENV` payload (less than a pipe's buffer, so writing it
    /// into an empty pipe never blocks).
    pub const MAX_ENV: usize = 60 << 10;

    pub const MOMENT_PRESUSPEND: u32 = 1;
    pub const MOMENT_PRECHECKPOINT: u32 = 2;
    pub const MOMENT_RESUME: u32 = 3;
    pub const MOMENT_RESTART: u32 = 4;

    /// A hook starts (text: `plugin-name DMTCP_EVENT_NAME`).
    pub const REP_START: u32 = 1;
    /// The thread waits at a barrier (text: its name) for `REQ_GO`.
    pub const REP_BARRIER: u32 = 2;
    /// Every hook of the moment returned.
    pub const REP_DONE: u32 = 3;
    /// The moment could not run (text: why).
    pub const REP_ERROR: u32 = 4;
    /// Longest reply text.
    pub const MAX_TEXT: usize = 4096;

    /// Name of a moment, for messages.
    pub fn moment_name(m: u32) -> &'static str {
        match m {
            MOMENT_PRESUSPEND => "PRESUSPEND",
            MOMENT_PRECHECKPOINT => "PRECHECKPOINT",
            MOMENT_RESUME => "RESUME",
            MOMENT_RESTART => "RESTART",
            _ => "?",
        }
    }
}

/// Return values of `dmtcp_checkpoint()` (same numbers as DMTCP's `dmtcp.h`).
pub const DMTCP_NOT_PRESENT: i32 = 3;
/// Return value of the `dmtcp_get_*_status` calls under DMTCP.
pub const DMTCP_IS_PRESENT: i32 = 4;
pub const DMTCP_AFTER_CHECKPOINT: i32 = 1;
pub const DMTCP_AFTER_RESTART: i32 = 2;

const _: () = assert!(off::SECRET + SECRET_LEN == STATE_SIZE);
const _: () = assert!(off::COORD_HOST + COORD_HOST_LEN == off::SECRET);
const _: () = assert!(STATE_SIZE <= STATE_MAP_LEN);
const _: () = assert!(off::HOOK_VERSION == STATE_SIZE);
const _: () = assert!(off::HOOK_BUSY + 4 == HOOKS_SIZE);
const _: () = assert!(HOOKS_SIZE <= TRAP_FILTER_OFF);
const _: () = assert!(SIGSYS_HANDLER_OFF + 8 <= WAIT_REDO_OFF);
const _: () = assert!(WAIT_REDO_OFF + 8 <= PIDMAP_OFF);

/// The seccomp/Landlock log: a separate anonymous mapping of
/// [`SECLOG_MAP_LEN`] bytes named [`SECLOG_VMA_NAME`], made by the library
/// the first time the program installs a seccomp filter, enters strict
/// mode or restricts itself with Landlock through libc (`prctl`,
/// `syscall`). The supervisor reads it through `/proc/PID/mem` at each
/// checkpoint. Header: magic u64, used u64 (bytes of entries after the
/// header), flags u64 ([`SECLOG_OVERFLOW`]); then entries, each
/// [`SECLOG_ENTRY_HDR`] bytes of little-endian u32 {kind, flags, pid, tid,
/// len, reserved} followed by `len` bytes padded to 8.
pub const SECLOG_MAGIC: u64 = u64::from_le_bytes(*b"DMTCPSC1");
pub const SECLOG_VMA_NAME: &str = "dmtcp_seclog";
pub const SECLOG_MAPS_NAME: &str = "[anon:dmtcp_seclog]";
pub const SECLOG_MAP_LEN: usize = 1 << 20;
pub const SECLOG_HDR: usize = 24;
pub const SECLOG_ENTRY_HDR: usize = 24;
/// An entry did not fit: the log is incomplete.
pub const SECLOG_OVERFLOW: u64 = 1;
/// Entry kinds: a filter (data: the `sock_filter` array), strict mode, a
/// Landlock `landlock_restrict_self` (data: none).
pub const SECLOG_FILTER: u32 = 1;
pub const SECLOG_STRICT: u32 = 2;
pub const SECLOG_LANDLOCK: u32 = 3;
