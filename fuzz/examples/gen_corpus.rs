//! Writes the seed corpora (fuzz/corpus/<target>/seed-*): `cargo run --example
//! gen_corpus` from fuzz/. Seeds are built the way real peers build their input: a
//! virtio driver's rings and chains, the message sequence DPDK's virtio-user sends
//! when it attaches, curl's requests, the example configs. Crash regressions are
//! added next to them by hand (`regress-*`) and are not touched here.

use std::path::Path;

use podwire_fuzz::ring::{
    put_packed_desc, put_split_desc, Op, RingInput, F_CALL, F_END_ALIGNED, F_EVENT_IDX, F_HDR12,
    F_MRG,
};
use podwire_fuzz::Put;
use podwire_vhost::proto::VringAddr;

const UVA: u64 = 0x7f00_0000_0000;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn addr(desc: u64, avail: u64, used: u64) -> VringAddr {
    VringAddr { index: 0, flags: 0, desc: UVA + desc, avail: UVA + avail, used: UVA + used, log: 0 }
}

/// Split ring, size 16: table at 0, avail at 0x100, used at 0x140, buffers of 256
/// bytes from 0x400 (gpa = offset + 0x10000).
fn split_seeds() {
    const GPA: u64 = 0x10000;
    let region = vec![(GPA, UVA, 0x2000u64)];
    let buf = |i: u64| GPA + 0x400 + 256 * i;
    // tx: single-descriptor chains, a 3-descriptor chain and an indirect chain.
    let mut img = vec![0u8; 0x600];
    for i in 0..4u16 {
        put_split_desc(&mut img, 16 * i as usize, (buf(i as u64 % 2), 12 + 60, 0, 0));
    }
    put_split_desc(&mut img, 16 * 4, (buf(0), 12, 1, 5));
    put_split_desc(&mut img, 16 * 5, (buf(1), 30, 1, 6));
    put_split_desc(&mut img, 16 * 6, (buf(2) + 7, 40, 0, 0));
    // Indirect table of 2 at 0x380.
    put_split_desc(&mut img, 16 * 7, (GPA + 0x380, 32, 4, 0));
    put_split_desc(&mut img, 0x380, (buf(1), 20, 1, 1));
    put_split_desc(&mut img, 0x390, (buf(2), 50, 0, 0));
    let heads = [0u16, 1, 2, 3, 4, 7];
    for (k, h) in heads.iter().enumerate() {
        img[0x104 + 2 * k..0x106 + 2 * k].copy_from_slice(&h.to_le_bytes());
    }
    img[0x102..0x104].copy_from_slice(&(heads.len() as u16).to_le_bytes());
    for (i, b) in img[0x400..0x600].iter_mut().enumerate() {
        *b = i as u8;
    }
    let tx = RingInput {
        flags: F_HDR12 | F_EVENT_IDX,
        size: 16,
        base: 0,
        addr: addr(0, 0x100, 0x140),
        regions: region.clone(),
        ops: vec![
            Op::Dequeue(3),
            Op::Dequeue(32),
            Op::Publish { a: 0, b: 0, c: 0 },
            Op::Dequeue(8),
        ],
        image: img.clone(),
    };
    write("split_ring", "tx-chains", &tx.encode());
    write(
        "split_ring",
        "tx-end-aligned-call",
        &RingInput { flags: tx.flags | F_END_ALIGNED | F_CALL, ..tx.clone() }.encode(),
    );
    // rx: 8 writable 256-byte buffers, mergeable.
    let mut img = vec![0u8; 0x400];
    for i in 0..8u16 {
        put_split_desc(&mut img, 16 * i as usize, (buf(i as u64), 256, 2, 0));
        img[0x104 + 2 * i as usize..0x106 + 2 * i as usize].copy_from_slice(&i.to_le_bytes());
    }
    img[0x102..0x104].copy_from_slice(&8u16.to_le_bytes());
    let rx = RingInput {
        flags: F_HDR12 | F_MRG,
        size: 16,
        base: 0,
        addr: addr(0, 0x100, 0x140),
        regions: region.clone(),
        ops: vec![
            Op::Enqueue { count: 3, len: 64, step: 1 },
            Op::Enqueue { count: 2, len: 600, step: 0 },
            Op::Publish { a: 0, b: 0, c: 0 },
            Op::Enqueue { count: 4, len: 1500, step: 0 },
        ],
        image: img.clone(),
    };
    write("split_ring", "rx-mergeable", &rx.encode());
    write("split_ring", "rx-plain", &RingInput { flags: 0, ..rx.clone() }.encode());
    // Two regions, gpa-contiguous: a buffer straddles them; ring wraps from 0xfffe.
    let two = RingInput {
        flags: F_HDR12,
        size: 16,
        base: 0xfffe,
        addr: addr(0, 0x100, 0x140),
        regions: vec![(GPA, UVA, 0x1000), (GPA + 0x1000, UVA + 0x1000, 0x1000)],
        ops: vec![Op::Dequeue(32), Op::Enqueue { count: 1, len: 64, step: 0 }],
        image: {
            let mut img = vec![0u8; 0x200];
            put_split_desc(&mut img, 0, (GPA + 0xf80, 0x100, 0, 0));
            img[0x102..0x104].copy_from_slice(&0u16.to_le_bytes());
            img[0x140 + 2..0x140 + 4].copy_from_slice(&0xfffeu16.to_le_bytes());
            img
        },
    };
    write("split_ring", "two-regions-wrap", &two.encode());
}

/// Packed ring, size 16, descriptors at 0, driver area 0x100, device area 0x104.
fn packed_seeds() {
    const GPA: u64 = 0x20000;
    let region = vec![(GPA, UVA, 0x2000u64)];
    let buf = |i: u64| GPA + 0x400 + 256 * i;
    const AVAIL: u16 = 1 << 7;
    let mut img = vec![0u8; 0x600];
    // tx (wrap counter 1: AVAIL set, USED clear): singles, a chain of 2, an indirect.
    put_packed_desc(&mut img, 0, (buf(0), 72, AVAIL, 0));
    put_packed_desc(&mut img, 16, (buf(1), 12, AVAIL | 1, 7));
    put_packed_desc(&mut img, 32, (buf(2), 50, AVAIL, 1));
    put_packed_desc(&mut img, 48, (GPA + 0x380, 32, AVAIL | 4, 2));
    put_packed_desc(&mut img, 0x380, (buf(3), 20, 0, 0));
    put_packed_desc(&mut img, 0x390, (buf(0), 50, 0, 0));
    for (i, b) in img[0x400..0x600].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let tx = RingInput {
        flags: F_HDR12 | F_EVENT_IDX | F_CALL,
        size: 16,
        base: 0x8000,
        addr: addr(0, 0x100, 0x104),
        regions: region.clone(),
        ops: vec![
            Op::Dequeue(1),
            Op::Dequeue(32),
            Op::Publish { a: 4, b: 0, c: 0x80 },
            Op::Dequeue(32),
        ],
        image: img,
    };
    write("packed_ring", "tx-chains", &tx.encode());
    let mut img = vec![0u8; 0x200];
    for i in 0..8u16 {
        put_packed_desc(&mut img, 16 * i as usize, (buf(i as u64), 256, AVAIL | 2, i));
    }
    let rx = RingInput {
        flags: F_HDR12 | F_MRG | F_END_ALIGNED,
        size: 16,
        base: 0x8000,
        addr: addr(0, 0x100, 0x104),
        regions: region,
        ops: vec![
            Op::Enqueue { count: 3, len: 64, step: 1 },
            Op::Enqueue { count: 2, len: 600, step: 0 },
            Op::Publish { a: 8, b: 0, c: 0x82 },
            Op::Enqueue { count: 4, len: 1500, step: 0 },
        ],
        image: img,
    };
    write("packed_ring", "rx-mergeable", &rx.encode());
    write("packed_ring", "rx-plain-size8", &RingInput { flags: 0, size: 8, ..rx.clone() }.encode());
}

/// One vhost-user message as a record of the vhost_msg input.
fn msg(out: &mut Vec<u8>, fds: u8, request: u32, flags: u32, payload: &[u8]) {
    let mut m = Vec::new();
    m.put32(request);
    m.put32(flags);
    m.put32(payload.len() as u32);
    m.extend_from_slice(payload);
    out.put8(fds);
    out.put16(m.len() as u16);
    out.extend_from_slice(&m);
}

/// The messages DPDK's virtio-user sends when it attaches (lib/vhost and
/// drivers/net/virtio/virtio_user), for 1 queue pair.
fn attach(packed: bool, mmap_offset: u64) -> Vec<u8> {
    use podwire_vhost::proto::{feat, req};
    let v = 1u32;
    let need_reply = 1 | 8;
    let mut o = Vec::new();
    msg(&mut o, 0, req::GET_FEATURES, v, &[]);
    msg(&mut o, 0, req::SET_OWNER, v, &[]);
    msg(&mut o, 0, req::GET_PROTOCOL_FEATURES, v, &[]);
    msg(&mut o, 0, req::SET_PROTOCOL_FEATURES, v, &(1u64 | 1 << 3 | 1 << 16).to_le_bytes());
    msg(&mut o, 0, req::GET_QUEUE_NUM, v, &[]);
    let mut f = feat::F_VERSION_1
        | feat::NET_F_MRG_RXBUF
        | feat::NET_F_MAC
        | feat::RING_F_EVENT_IDX
        | feat::VHOST_USER_F_PROTOCOL_FEATURES;
    if packed {
        f |= feat::F_RING_PACKED;
    }
    msg(&mut o, 0, req::SET_FEATURES, v, &f.to_le_bytes());
    // One 64 KiB region: gpa 0, frontend address UVA.
    let mut t = Vec::new();
    t.put32(1);
    t.put32(0);
    t.put64(0);
    t.put64(0x10000 - mmap_offset);
    t.put64(UVA);
    t.put64(mmap_offset);
    msg(&mut o, 1, req::SET_MEM_TABLE, need_reply, &t);
    for vr in 0..2u32 {
        let base = vr as u64 * 0x4000;
        let mut s = Vec::new();
        s.put32(vr);
        s.put32(256);
        msg(&mut o, 0, req::SET_VRING_NUM, v, &s);
        let mut s = Vec::new();
        s.put32(vr);
        s.put32(if packed { 0x8000 } else { 0 });
        msg(&mut o, 0, req::SET_VRING_BASE, v, &s);
        let mut a = Vec::new();
        a.put32(vr);
        a.put32(0);
        a.put64(UVA + base);
        a.put64(UVA + base + 0x1800);
        a.put64(UVA + base + 0x1000);
        a.put64(0);
        msg(&mut o, 0, req::SET_VRING_ADDR, v, &a);
        msg(&mut o, 0x11, req::SET_VRING_KICK, v, &(vr as u64).to_le_bytes());
        msg(&mut o, 0x11, req::SET_VRING_CALL, v, &(vr as u64).to_le_bytes());
        let mut s = Vec::new();
        s.put32(vr);
        s.put32(1);
        msg(&mut o, 0, req::SET_VRING_ENABLE, need_reply, &s);
    }
    let mut c = Vec::new();
    c.put32(0);
    c.put32(12);
    c.put32(0);
    c.extend_from_slice(&[0; 12]);
    msg(&mut o, 0, req::GET_CONFIG, v, &c);
    msg(&mut o, 0, req::SET_STATUS, v, &15u64.to_le_bytes());
    msg(&mut o, 0, req::GET_STATUS, v, &[]);
    let mut s = Vec::new();
    s.put32(0);
    s.put32(0);
    msg(&mut o, 0, req::GET_VRING_BASE, v, &s);
    msg(&mut o, 0, req::RESET_DEVICE, v, &[]);
    o
}

fn vhost_seeds() {
    write("vhost_msg", "attach-split", &attach(false, 0));
    write("vhost_msg", "attach-packed", &attach(true, 0));
    write("vhost_msg", "attach-offset", &attach(false, 0x1000));
    // A header cut short, then too many fds, then a legacy (no protocol features) kick.
    let mut o = Vec::new();
    msg(&mut o, 0x09, 1, 1, &[]);
    o.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 1]);
    write("vhost_msg", "short-and-fds", &o);
}

fn http_seeds() {
    let reqs: &[(&str, &[u8])] = &[
        ("curl-stats", b"\x00GET /stats HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"),
        ("health-10", b"\x03\x01\x02\x05GET /health HTTP/1.0\n\n"),
        ("absolute", b"\x00GET http://podwire/bridges/br0/macs?x=1#f HTTP/1.1\r\nHost: podwire\r\n\r\n"),
        ("post", b"\x01\x01POST /bridges HTTP/1.1\r\nContent-Length: 0\r\n\r\nbody"),
        ("bad-header", b"\x00GET /stats HTTP/1.1\r\n folded\r\n\r\n"),
        ("no-end", b"\x00GET /stats HTTP/1.1\r\nHost: x\r\n"),
    ];
    for (name, bytes) in reqs {
        write("control_http", name, bytes);
    }
}

fn config_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["xconnect.toml", "afxdp-vhost.toml"] {
        let text = std::fs::read(root.join("examples").join(name)).expect("example config");
        write("config", name, &text);
    }
    write(
        "config",
        "bridge-vlans",
        br#"control_socket = "/tmp/pw/ctl.sock"
log_level = "info,podwire=debug"
[workers]
cores = [0]
[memory]
buffers = 4096
hugepages = false
buffer_size = 9216
[[ports]]
name = "a"
type = "vhost-user"
socket = "/tmp/pw/a.sock"
mode = "client"
queues = 2
mac = "02:00:00:00:00:01"
socket_perms = "0660"
trunk = [10, 20]
[[ports]]
name = "b"
type = "vhost-user"
socket = "/tmp/pw/b.sock"
vlan = 10
socket_perms = 0o600
[[ports]]
name = "vf"
type = "vfio"
pci = "0000:01:10.0"
ring_size = 512
[[ports]]
name = "x"
type = "af-xdp"
interface = "eth1"
xdp_mode = "generic"
zero_copy = "off"
[[xconnect]]
ports = ["vf", "x"]
[[bridge]]
name = "br0"
ports = ["a", "b"]
mac_age_secs = 30
mac_table_size = 64
"#,
    );
}

fn bridge_seeds() {
    // 3 ports: access VLAN 1, access VLAN 1, trunk VLANs 1+2; table limit 4.
    let mut o = vec![1u8, 3, 0, 0, 0x83];
    // a->b unknown (flood), b->a (learned: forward), broadcast, tagged on the trunk.
    o.extend_from_slice(&[0, 0x08, 0, 20]);
    o.extend_from_slice(&[1, 0x01, 0, 20]);
    o.extend_from_slice(&[0, 0x0c, 0, 20]);
    o.extend_from_slice(&[2, 0x10, 1, 20]);
    o.extend_from_slice(&[2, 0x11, 2, 20]);
    o.extend_from_slice(&[0, 0x01, 1, 20]); // tagged on an access port: drop
    o.extend_from_slice(&[0xff, 120]); // age everything
    o.extend_from_slice(&[0, 0x08, 0, 20]);
    o.extend_from_slice(&[0x81, 5, 1, 2, 3, 4, 5]); // runt
    write("bridge", "learn-flood-trunk", &o);
    // 5 ports, limit 1: the table fills up.
    let mut o = vec![3u8, 0, 0, 1, 0x8f, 0x81, 2];
    for i in 0..10u8 {
        o.extend_from_slice(&[i % 5, (i * 9) & 0x3f, if i % 3 == 0 { 0x80 } else { 0 }]);
        if i % 3 == 0 {
            o.extend_from_slice(&[1, 0]);
        }
        o.push(30);
    }
    write("bridge", "full-table", &o);
}

fn main() {
    split_seeds();
    packed_seeds();
    vhost_seeds();
    http_seeds();
    config_seeds();
    bridge_seeds();
    println!("corpus written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
