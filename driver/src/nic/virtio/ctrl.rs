//! The virtio-net control virtqueue (virtio 1.2 section 5.1.6.5), driver side: one
//! command at a time, polled to completion. podwire uses it for one command,
//! `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`, which turns on the queue pairs beyond the
//! first once multiqueue is negotiated.
//!
//! A command is two descriptors: the device-readable `class, command, data` and the
//! device-writable one-byte `ack`. Both live in a 64-byte command buffer in DMA
//! memory that belongs to this queue. The device's used entry is checked (the id
//! must be the head we posted) before the ack is read.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::regs::VRING_DESC_F_WRITE;
use super::ring::SplitQueue;

/// Control class for multiqueue.
pub const CTRL_MQ: u8 = 4;
/// `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`: data is a le16 number of queue pairs.
pub const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
/// The ack a device writes for a command it carried out.
pub const CTRL_OK: u8 = 0;
/// Bytes of DMA memory a [`CtrlQueue`] needs for its command buffer.
pub const CMD_BUF_LEN: usize = 64;
/// Largest command payload (`data`) that fits the command buffer.
const MAX_DATA: usize = 32;
/// Where the ack byte sits in the command buffer.
const ACK_OFF: usize = 48;
const NEXT: u16 = super::regs::VRING_DESC_F_NEXT;

/// The control virtqueue with its command buffer.
#[derive(Debug)]
pub struct CtrlQueue {
    q: SplitQueue,
    buf: NonNull<u8>,
    buf_iova: u64,
}

// SAFETY: the command buffer, like the queue memory, belongs to this queue alone.
unsafe impl Send for CtrlQueue {}

impl CtrlQueue {
    /// A control queue over `q` (at least 2 descriptors) with its command buffer at
    /// `buf` (IOVA `buf_iova`).
    ///
    /// # Safety
    /// `buf..buf + CMD_BUF_LEN` must be valid memory that lives as long as the
    /// queue and that only this queue and the device use.
    pub unsafe fn new(q: SplitQueue, buf: NonNull<u8>, buf_iova: u64) -> Self {
        Self { q, buf, buf_iova }
    }

    /// The queue, for its ring addresses.
    pub fn queue(&self) -> &SplitQueue {
        &self.q
    }

    /// Sends one command and polls for the device's answer for at most `limit`;
    /// `notify` kicks the device. Errors say which command failed and how.
    pub fn command(
        &mut self,
        class: u8,
        cmd: u8,
        data: &[u8],
        limit: Duration,
        notify: impl Fn(),
    ) -> Result<(), String> {
        if data.len() > MAX_DATA || self.q.size() < 2 {
            return Err(format!("control command {class}.{cmd} does not fit the control queue"));
        }
        let p = self.buf.as_ptr();
        // SAFETY: the buffer holds CMD_BUF_LEN bytes (contract of `new`); the header
        // and data take at most 2 + MAX_DATA < ACK_OFF bytes and the ack one more.
        unsafe {
            p.write_volatile(class);
            p.add(1).write_volatile(cmd);
            for (i, b) in data.iter().enumerate() {
                p.add(2 + i).write_volatile(*b);
            }
            p.add(ACK_OFF).write_volatile(0xff);
        }
        let out_len = 2 + data.len() as u32;
        self.q.set_desc(0, self.buf_iova, out_len, NEXT);
        self.q.set_next(0, 1);
        self.q.set_desc(1, self.buf_iova + ACK_OFF as u64, 1, VRING_DESC_F_WRITE);
        self.q.push_avail(0);
        self.q.publish();
        if self.q.needs_notify() {
            notify();
        }
        let start = Instant::now();
        loop {
            if let Some((id, _len)) = self.q.take_used() {
                if id != 0 {
                    return Err(format!(
                        "the device returned descriptor {id} for control command {class}.{cmd} \
                         (posted 0)"
                    ));
                }
                break;
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "the device did not answer control command {class}.{cmd} within {limit:?}"
                ));
            }
            std::hint::spin_loop();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: inside the command buffer, as above.
        let ack = unsafe { p.add(ACK_OFF).read_volatile() };
        if ack != CTRL_OK {
            return Err(format!("the device refused control command {class}.{cmd} (ack {ack})"));
        }
        Ok(())
    }

    /// Asks the device to use `pairs` queue pairs.
    pub fn set_queue_pairs(&mut self, pairs: u16, notify: impl Fn()) -> Result<(), String> {
        self.command(
            CTRL_MQ,
            CTRL_MQ_VQ_PAIRS_SET,
            &pairs.to_le_bytes(),
            Duration::from_secs(2),
            notify,
        )
        .map_err(|e| format!("setting {pairs} queue pairs: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    /// Queue memory plus a command buffer on the heap; IOVA = address.
    struct Mem {
        p: *mut u8,
        layout: Layout,
    }

    impl Mem {
        fn new(len: usize) -> Self {
            let layout = Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { alloc_zeroed(layout) };
            assert!(!p.is_null());
            Self { p, layout }
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.p, self.layout) };
        }
    }

    fn queue(mem: &Mem, size: u16) -> CtrlQueue {
        let qlen = SplitQueue::bytes(size);
        // SAFETY: mem holds qlen + CMD_BUF_LEN bytes, 4096-aligned, owned by the test.
        unsafe {
            let q = SplitQueue::new(NonNull::new(mem.p).unwrap(), mem.p as u64, size);
            let buf = mem.p.add(qlen.next_multiple_of(64));
            CtrlQueue::new(q, NonNull::new(buf).unwrap(), buf as u64)
        }
    }

    /// A device that carries out the posted command on queue memory `q` (a device
    /// view): checks the chain, reads the command through the descriptors'
    /// addresses and writes `ack`, then returns the used entry `id`.
    fn device_answers(q: &SplitQueue, ack: u8, id: u32) -> (u8, u8, Vec<u8>) {
        let mut heads = Vec::new();
        q.device_avail(0, &mut heads);
        assert_eq!(heads, [0]);
        let (a0, l0, f0) = q.desc(0);
        let (a1, l1, f1) = q.desc(1);
        assert_eq!(f0 & NEXT, NEXT, "header descriptor chains on");
        assert_eq!(q.next(0), 1);
        assert_eq!(f1 & VRING_DESC_F_WRITE, VRING_DESC_F_WRITE, "ack is device-writable");
        assert_eq!(l1, 1);
        // SAFETY: the addresses are the test's own heap memory (IOVA = address).
        let cmd = unsafe { std::slice::from_raw_parts(a0 as *const u8, l0 as usize) }.to_vec();
        // SAFETY: as above.
        unsafe { (a1 as *mut u8).write_volatile(ack) };
        q.device_put_used(id, 1);
        (cmd[0], cmd[1], cmd[2..].to_vec())
    }

    #[test]
    fn set_queue_pairs_sends_the_mq_command() {
        let mem = Mem::new(8192);
        let mut cq = queue(&mem, 16);
        let dev = cq.queue().device_view();
        let seen = std::cell::RefCell::new(None);
        // The "device" answers as soon as it is notified.
        let r = cq.set_queue_pairs(2, || {
            *seen.borrow_mut() = Some(device_answers(&dev, CTRL_OK, 0));
        });
        assert_eq!(r, Ok(()));
        assert_eq!(seen.into_inner(), Some((CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, vec![2, 0])));
    }

    #[test]
    fn refusal_wrong_id_and_silence_are_errors() {
        let mem = Mem::new(8192);
        let mut cq = queue(&mem, 16);
        let dev = cq.queue().device_view();
        let e = cq.set_queue_pairs(4, || drop(device_answers(&dev, 1, 0)));
        assert!(e.unwrap_err().contains("refused control command 4.0 (ack 1)"));

        let mem = Mem::new(8192);
        let mut cq = queue(&mem, 16);
        let dev = cq.queue().device_view();
        let e = cq.set_queue_pairs(2, || drop(device_answers(&dev, 0, 7)));
        assert!(e.unwrap_err().contains("returned descriptor 7"));

        let mem = Mem::new(8192);
        let mut cq = queue(&mem, 16);
        let e = cq.command(CTRL_MQ, 0, &[2, 0], Duration::from_millis(20), || {});
        assert!(e.unwrap_err().contains("did not answer"));
        let e = cq.command(CTRL_MQ, 0, &[0; 40], Duration::from_millis(20), || {});
        assert!(e.unwrap_err().contains("does not fit"));
    }
}
