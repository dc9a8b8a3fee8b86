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
pub const COORD_HOST_LEN: usize = 64;
pub const SECRET_LEN: usize = 128;

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
}

/// Return values of `dmtcp_checkpoint()` (same numbers as DMTCP's `dmtcp.h`).
pub const DMTCP_NOT_PRESENT: i32 = 0;
pub const DMTCP_AFTER_CHECKPOINT: i32 = 1;
pub const DMTCP_AFTER_RESTART: i32 = 2;

const _: () = assert!(off::SECRET + SECRET_LEN == STATE_SIZE);
const _: () = assert!(off::COORD_HOST + COORD_HOST_LEN == off::SECRET);
const _: () = assert!(STATE_SIZE <= STATE_MAP_LEN);
