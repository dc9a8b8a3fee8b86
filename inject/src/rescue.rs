//! The rescue stubs the supervisor runs its injected system calls from
//! (see the supervisor's `kernel/remote.rs`).
//!
//! The supervisor checkpoints from outside: it points a stopped thread's
//! registers at a `syscall` instruction, lets it run to the syscall's exit
//! and puts the registers back. If the supervisor dies in between, the
//! kernel lets the thread run on from there. Here each `syscall` is
//! followed by a tail that puts the thread back where the freeze found it
//! (signal mask and registers from a block the supervisor wrote below the
//! thread's red zone), so the program goes on unharmed. The code is never
//! called from Rust; the supervisor finds it by the marker in front of it
//! and checks every byte before using it.
//!
//! The bytes must equal the supervisor's `RESCUE_TAIL` and `CLONE_PREFIX`.

std::arch::global_asm!(
    ".pushsection .text.dmtcp_rescue,\"ax\",@progbits",
    // The tail: mask and registers back from the block at rsp, then to
    // the saved rip with rsp where it was.
    ".macro dmtcp_rescue_tail",
    "mov eax, 14", // rt_sigprocmask
    "mov edi, 2",  // SIG_SETMASK
    "mov rsi, rsp",
    "xor edx, edx",
    "mov r10d, 8",
    "syscall",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rax",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "popfq",
    "ret 128",
    ".endm",
    ".balign 16",
    ".ascii \"DMTCP_RESCUE_V1\\0\"",
    // The stub: a system call, then the tail.
    ".globl dmtcp_rescue_stub",
    ".hidden dmtcp_rescue_stub",
    "dmtcp_rescue_stub:",
    "syscall",
    "dmtcp_rescue_tail",
    // The clone stub: a child that runs without the supervisor exits.
    "syscall",
    "test rax, rax",
    "jnz 3f",
    "mov eax, 60", // exit
    "xor edi, edi",
    "syscall",
    "3:",
    "dmtcp_rescue_tail",
    ".popsection",
);

extern "C" {
    /// The first stub (never called from Rust: referenced only so that the
    /// linker keeps its section).
    fn dmtcp_rescue_stub();
}

/// Keeps `.text.dmtcp_rescue` in the library (nothing else refers to it).
#[used]
static KEEP_RESCUE_STUBS: unsafe extern "C" fn() = dmtcp_rescue_stub;
