//! The `bpf(2)` calls AF_XDP needs, and the XSKMAP redirect program, written as raw
//! instructions (no C toolchain, no libbpf).
//!
//! The program is six instructions:
//! ```text
//! r2 = *(u32 *)(r1 + 16)      ; ctx->rx_queue_index
//! r1 = map_fd ll              ; the XSKMAP (ld_imm64, src = BPF_PSEUDO_MAP_FD)
//! r3 = XDP_PASS               ; flags: what to do when the queue has no socket
//! call bpf_redirect_map       ; helper 51
//! exit
//! ```
//! so a queue without a socket keeps passing its packets to the kernel stack.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `attach_type` of an XDP link.
pub const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// Size of the attribute block passed to every command: larger than every command's
/// part of `union bpf_attr` used here, zero-filled beyond it (which the kernel checks).
const ATTR_SIZE: usize = 128;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// The redirect program for the XSKMAP `map_fd`.
pub fn redirect_program(map_fd: RawFd) -> [Insn; 6] {
    [
        // BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + 16)
        insn(0x61, 2, 1, 16, 0),
        // BPF_LD | BPF_DW | BPF_IMM (two slots): r1 = map
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = XDP_PASS
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // BPF_JMP | BPF_CALL
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT
        insn(0x95, 0, 0, 0, 0),
    ]
}

#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Self {
        Self([0; ATTR_SIZE])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(&mut self, off: usize, b: &[u8]) -> &mut Self {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: attr points at ATTR_SIZE readable and writable bytes laid out as the
    // part of `union bpf_attr` this command reads; every pointer stored in it refers
    // to memory that outlives the call (the callers keep it borrowed).
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), ATTR_SIZE as libc::c_uint)
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_result(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the command returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

/// Creates an XSKMAP with `entries` slots (one per queue id).
pub fn create_xskmap(entries: u32) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_XSKMAP).u32(4, 4).u32(8, 4).u32(12, entries);
    // map_name at offset 28 (after map_flags, inner_map_fd, numa_node).
    a.bytes(28, b"podwire_xsks");
    sys_bpf(BPF_MAP_CREATE, &mut a).map(fd_result)
}

/// Puts the socket `xsk_fd` at slot `queue` of the XSKMAP `map`.
pub fn xskmap_set(map: &OwnedFd, queue: u32, xsk_fd: RawFd) -> std::io::Result<()> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &value as *const u32 as u64)
        .u64(24, 0);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Removes slot `queue` of the XSKMAP `map`.
pub fn xskmap_delete(map: &OwnedFd, queue: u32) -> std::io::Result<()> {
    let key = queue;
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32).u64(8, &key as *const u32 as u64);
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut a).map(|_| ())
}

/// Loads the redirect program for `map`. On failure the error carries the verifier
/// log.
pub fn load_redirect_program(map: &OwnedFd) -> Result<OwnedFd, (std::io::Error, String)> {
    load_xdp_program(&redirect_program(map.as_raw_fd()))
}

/// `r0 = action; exit`: a program that returns one XDP action (1 = XDP_DROP,
/// 3 = XDP_TX), for benchmarks and tests.
pub fn action_program(action: i32) -> [Insn; 2] {
    [insn(0xb7, 0, 0, 0, action), insn(0x95, 0, 0, 0, 0)]
}

/// Loads an XDP program. On failure the error carries the verifier log.
pub fn load_xdp_program(insns: &[Insn]) -> Result<OwnedFd, (std::io::Error, String)> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .bytes(48, b"podwire_xsk");
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(fd_result(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).trim().replace('\n', "; ")))
        }
    }
}

/// Attaches `prog` to interface `ifindex` as an XDP link in the mode `xdp_flags`
/// (XDP_FLAGS_SKB_MODE or XDP_FLAGS_DRV_MODE). The program stays attached while the
/// returned link fd is open, and is detached by the kernel when it is closed, even
/// if the process dies.
pub fn link_create_xdp(prog: &OwnedFd, ifindex: u32, xdp_flags: u32) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32).u32(4, ifindex).u32(8, BPF_XDP).u32(12, xdp_flags);
    sys_bpf(BPF_LINK_CREATE, &mut a).map(fd_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encoding() {
        let p = redirect_program(7);
        assert_eq!(p[0], Insn { code: 0x61, regs: 0x12, off: 16, imm: 0 });
        assert_eq!(p[1], Insn { code: 0x18, regs: 0x11, off: 0, imm: 7 });
        assert_eq!(p[4].imm, 51);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
