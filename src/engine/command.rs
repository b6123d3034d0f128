//! Commands from the control thread to a running worker, and the worker's replies.
//!
//! The hand-off is lock-free on the worker's side: each worker has an [`Inbox`], a
//! bounded lock-free queue (`crossbeam_queue::ArrayQueue`) plus a `pending` flag.
//! The worker loads the flag (one relaxed atomic load) once per poll round and only
//! when it is set drains the queue, applies each command between two polls and
//! answers on the command's reply channel. Ports never pause: a command is applied
//! in the gap between two rounds, which every port sees anyway.
//!
//! Ports travel inside the commands and replies: a port is created on the control
//! thread and moved to the worker in [`Command::AddMember`] or
//! [`Command::AddXconnect`]; a port leaving comes back in [`Reply::Ports`] so that
//! the control thread drops it (closing its socket) off the datapath.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crossbeam_queue::ArrayQueue;
use podwire_driver::Port;

use super::xconnect::XconnectPair;
use super::PortStatus;
use crate::bridge::{Bridge, RemoteMember, VlanMode};

/// Commands a worker holds unapplied at most (more are refused as busy).
pub(crate) const INBOX_CAPACITY: usize = 64;

/// A change to what a worker runs.
pub(crate) enum Command {
    /// Start running this cross-connect.
    AddXconnect(XconnectPair),
    /// Stop the cross-connect with `port` on either side; reply with both ports.
    RemoveXconnect { port: String },
    /// Start running this (empty or populated) bridge.
    AddBridge(Bridge),
    /// Stop running bridge `name` and hand its ports back (normally none).
    RemoveBridge { name: String },
    /// `port` (engine-wide id `id`) joins bridge `bridge`, polled by this worker.
    AddMember {
        bridge: String,
        port: Box<dyn Port>,
        status: Arc<PortStatus>,
        id: u32,
        mode: VlanMode,
    },
    /// A port polled by another worker joins this worker's part of bridge `bridge`.
    AddRemote { bridge: String, remote: RemoteMember },
    /// Port `port` (id `id`) leaves this worker's part of bridge `bridge`; reply
    /// with it if this worker polled it.
    RemoveMember { bridge: String, port: String, id: u32 },
}

impl Command {
    /// What it is, for logs and errors.
    pub(crate) fn describe(&self) -> String {
        match self {
            Command::AddXconnect(p) => {
                format!("add cross-connect {} <-> {}", p.status[0].name(), p.status[1].name())
            }
            Command::RemoveXconnect { port } => format!("remove the cross-connect of {port}"),
            Command::AddBridge(b) => format!("add bridge {}", b.name()),
            Command::RemoveBridge { name } => format!("remove bridge {name}"),
            Command::AddMember { bridge, status, .. } => {
                format!("add port {} to bridge {bridge}", status.name())
            }
            Command::AddRemote { bridge, remote } => {
                format!("add port {} of another worker to bridge {bridge}", remote.status.name())
            }
            Command::RemoveMember { bridge, port, .. } => {
                format!("remove port {port} from bridge {bridge}")
            }
        }
    }
}

/// A worker's answer.
pub(crate) enum Reply {
    /// Applied; these ports left the worker (possibly none).
    Ports(Vec<Box<dyn Port>>),
    /// Not applied (the worker does not run what the command names); any port the
    /// command carried is handed back.
    Rejected(String, Vec<Box<dyn Port>>),
}

/// A command with where its reply goes.
pub(crate) type Envelope = (Command, mpsc::Sender<Reply>);

/// One worker's inbox. See the module docs.
pub(crate) struct Inbox {
    queue: ArrayQueue<Envelope>,
    pending: AtomicBool,
}

impl Inbox {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { queue: ArrayQueue::new(INBOX_CAPACITY), pending: AtomicBool::new(false) })
    }

    /// Queues a command; gives it back when the inbox is full.
    #[allow(clippy::result_large_err)] // the caller drops it at once; no hot path
    pub(crate) fn send(&self, env: Envelope) -> Result<(), Envelope> {
        self.queue.push(env)?;
        // After the push: a worker that sees the flag finds the command.
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// The worker's check, once per poll round: one relaxed load when idle.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes the queued commands (the worker's side). The flag is cleared first (a
    /// read-modify-write, so it synchronizes with the sender's release store and the
    /// pushes before it are visible), so a command queued while this runs either is
    /// taken now or sets the flag again.
    pub(crate) fn take(&self) -> impl Iterator<Item = Envelope> + '_ {
        self.pending.swap(false, Ordering::Acquire);
        std::iter::from_fn(|| self.queue.pop())
    }
}
