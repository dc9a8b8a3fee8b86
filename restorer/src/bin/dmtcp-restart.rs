fn main() {
    dmtcp_restorer::cli::main()
}

/// Which standard fds were closed at exec, before the Rust runtime reopens
/// them on /dev/null (an outside pipe inherited from a closed fd then gets
/// a closed peer at restart, not /dev/null).
#[used]
#[link_section = ".init_array"]
static NOTE_CLOSED_STDIO: extern "C" fn() = dmtcp_supervisor::kernel::sys::note_closed_stdio;
