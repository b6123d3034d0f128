//! The MAC table: open addressing with linear probing over a power-of-two array of
//! 16-byte slots, owned by one worker (no locks, no atomics). Sized at twice the
//! entry limit, so a probe always meets an empty slot soon and a lookup touches one
//! or two cache lines. Aging is lazy for lookups (an entry older than the age is a
//! miss) and incremental for removal ([`MacTable::sweep`] looks at a few slots per
//! call, outside the per-packet path); removal shifts later entries of the probe run
//! back, so no tombstones accumulate.

use super::vlan::MacKey;

/// Set in every occupied slot's key, so that key 0 means "empty" even for MAC
/// 00:00:00:00:00:00 on VLAN 0.
const OCCUPIED: u64 = 1 << 63;

/// Largest entry limit accepted.
pub const MAX_TABLE_SIZE: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// `OCCUPIED | vlan << 48 | mac`, or 0 when empty.
    key: u64,
    /// Millisecond clock when last seen.
    seen: u32,
    /// Bridge-local port index.
    port: u16,
}

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The entry existed on the same port; its time was refreshed.
    Refreshed,
    /// A new entry.
    New,
    /// The address moved to another port.
    Moved,
    /// No room: the table holds its limit.
    Full,
}

/// One entry, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    /// The address.
    pub mac: MacKey,
    /// Its VLAN.
    pub vlan: u16,
    /// Bridge-local port index.
    pub port: u16,
    /// Milliseconds since last seen.
    pub age_ms: u32,
}

/// A worker-owned MAC table. See the module docs.
#[derive(Debug)]
pub struct MacTable {
    slots: Box<[Slot]>,
    mask: usize,
    shift: u32,
    len: usize,
    limit: usize,
    age_ms: u32,
    sweep_at: usize,
}

#[inline]
fn make_key(mac: MacKey, vlan: u16) -> u64 {
    OCCUPIED | (u64::from(vlan & 0x0fff) << 48) | (mac & 0xffff_ffff_ffff)
}

impl MacTable {
    /// A table holding at most `limit` entries (clamped to 1..=[`MAX_TABLE_SIZE`]),
    /// forgetting entries not seen for `age_ms` milliseconds (clamped below 2^31).
    pub fn new(limit: usize, age_ms: u32) -> Self {
        let limit = limit.clamp(1, MAX_TABLE_SIZE);
        let cap = (limit * 2).next_power_of_two().max(16);
        Self {
            slots: vec![Slot::default(); cap].into_boxed_slice(),
            mask: cap - 1,
            shift: 64 - cap.trailing_zeros(),
            len: 0,
            limit,
            age_ms: age_ms.clamp(1, i32::MAX as u32),
            sweep_at: 0,
        }
    }

    /// Entries held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize & self.mask
    }

    #[inline]
    fn expired(&self, s: &Slot, now: u32) -> bool {
        now.wrapping_sub(s.seen) >= self.age_ms
    }

    /// The port `mac` on `vlan` was last seen on, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, mac: MacKey, vlan: u16, now: u32) -> Option<u16> {
        let key = make_key(mac, vlan);
        let mut i = self.home(key);
        // At most every slot; in practice one or two (load factor <= 1/2).
        for _ in 0..=self.mask {
            let s = &self.slots[i];
            if s.key == key {
                return (!self.expired(s, now)).then_some(s.port);
            }
            if s.key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Records that `mac` on `vlan` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, mac: MacKey, vlan: u16, port: u16, now: u32) -> Learned {
        let key = make_key(mac, vlan);
        let mut i = self.home(key);
        let mut stale: Option<usize> = None;
        for _ in 0..=self.mask {
            let age_ms = self.age_ms;
            let s = &mut self.slots[i];
            if s.key == key {
                s.seen = now;
                if s.port == port {
                    return Learned::Refreshed;
                }
                s.port = port;
                return Learned::Moved;
            }
            if s.key == 0 {
                break;
            }
            if stale.is_none() && now.wrapping_sub(s.seen) >= age_ms {
                stale = Some(i);
            }
            i = (i + 1) & self.mask;
        }
        // Reusing an expired slot in the probe run keeps every run intact (the slot
        // stays occupied) and makes room even when the table is at its limit.
        if let Some(j) = stale {
            self.slots[j] = Slot { key, seen: now, port };
            return Learned::New;
        }
        if self.len >= self.limit || self.slots[i].key != 0 {
            return Learned::Full;
        }
        self.slots[i] = Slot { key, seen: now, port };
        self.len += 1;
        Learned::New
    }

    /// Empties slot `i` and shifts later members of its probe run back.
    fn remove_at(&mut self, mut i: usize) {
        self.slots[i] = Slot::default();
        self.len -= 1;
        let mut j = (i + 1) & self.mask;
        while self.slots[j].key != 0 {
            let home = self.home(self.slots[j].key);
            // Move j into the hole at i unless j's home lies cyclically in (i, j].
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(i) & self.mask) {
                self.slots[i] = self.slots[j];
                self.slots[j] = Slot::default();
                i = j;
            }
            j = (j + 1) & self.mask;
        }
    }

    /// Looks at up to `n` slots from where the last sweep stopped and removes the
    /// expired entries; returns how many were removed.
    pub fn sweep(&mut self, now: u32, n: usize) -> usize {
        let mut removed = 0;
        let mut looked = 0;
        // Removals are bounded by the entries held, so this ends.
        while looked < n.min(self.slots.len()) {
            let i = self.sweep_at;
            let s = self.slots[i];
            if s.key != 0 && self.expired(&s, now) {
                self.remove_at(i);
                removed += 1;
                // Slot i may now hold a shifted entry: look at it again.
                continue;
            }
            self.sweep_at = (i + 1) & self.mask;
            looked += 1;
        }
        removed
    }

    /// Removes every entry of `port`; returns how many.
    pub fn flush_port(&mut self, port: u16) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].key != 0 && self.slots[i].port == port {
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Moves every entry of bridge-local port `from` to port `to` (a member left and
    /// the last member took its index). Not per packet: called on a topology change.
    pub fn renumber_port(&mut self, from: u16, to: u16) {
        for s in self.slots.iter_mut().filter(|s| s.key != 0 && s.port == from) {
            s.port = to;
        }
    }

    /// The live (not expired) entries, sorted by VLAN and MAC.
    pub fn entries(&self, now: u32) -> Vec<MacEntry> {
        let mut v: Vec<MacEntry> = self
            .slots
            .iter()
            .filter(|s| s.key != 0 && !self.expired(s, now))
            .map(|s| MacEntry {
                mac: s.key & 0xffff_ffff_ffff,
                vlan: ((s.key >> 48) & 0x0fff) as u16,
                port: s.port,
                age_ms: now.wrapping_sub(s.seen),
            })
            .collect();
        v.sort_by_key(|e| (e.vlan, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_lookup_move_refresh() {
        let mut t = MacTable::new(8, 1000);
        assert_eq!(t.lookup(0x0200_0000_0001, 1, 0), None);
        assert_eq!(t.learn(0x0200_0000_0001, 1, 3, 0), Learned::New);
        assert_eq!(t.lookup(0x0200_0000_0001, 1, 10), Some(3));
        assert_eq!(t.lookup(0x0200_0000_0001, 2, 10), None, "VLANs are separate");
        assert_eq!(t.learn(0x0200_0000_0001, 1, 3, 500), Learned::Refreshed);
        assert_eq!(t.learn(0x0200_0000_0001, 1, 4, 600), Learned::Moved);
        assert_eq!(t.lookup(0x0200_0000_0001, 1, 1500), Some(4), "refreshed at 600");
        assert_eq!(t.lookup(0x0200_0000_0001, 1, 1600), None, "aged out");
        assert_eq!(t.len(), 1);
        // MAC 0 on VLAN 0 is an ordinary key.
        assert_eq!(t.learn(0, 0, 1, 0), Learned::New);
        assert_eq!(t.lookup(0, 0, 1), Some(1));
    }

    #[test]
    fn full_table_refuses_and_counts_then_reuses_expired() {
        let mut t = MacTable::new(4, 1000);
        for m in 0..4u64 {
            assert_eq!(t.learn(m + 1, 1, 0, 0), Learned::New);
        }
        assert_eq!(t.learn(99, 1, 0, 10), Learned::Full);
        assert_eq!(t.lookup(99, 1, 10), None);
        assert_eq!(t.len(), 4);
        // After aging, sweeping frees room.
        assert_eq!(t.sweep(2000, 1000), 4);
        assert!(t.is_empty());
        assert_eq!(t.learn(99, 1, 0, 2000), Learned::New);
    }

    #[test]
    fn sweep_keeps_probe_runs_intact() {
        // Many keys in a small table collide; remove every other one by aging and
        // check the survivors are all still found.
        let mut t = MacTable::new(512, 100);
        let keys: Vec<u64> = (0..512u64).map(|i| 0x0200_0000_0000 | (i * 7919)).collect();
        // The clock only moves forward: even keys at 0 ms, then odd ones at 50 ms.
        for parity in [0, 1] {
            for (n, &k) in keys.iter().enumerate().filter(|(n, _)| n % 2 == parity) {
                let now = if parity == 0 { 0 } else { 50 };
                assert_eq!(t.learn(k, 7, (n % 5) as u16, now), Learned::New);
            }
        }
        assert_eq!(t.sweep(120, usize::MAX), 256);
        assert_eq!(t.len(), 256);
        for (n, &k) in keys.iter().enumerate() {
            let want = (n % 2 == 1).then_some((n % 5) as u16);
            assert_eq!(t.lookup(k, 7, 120), want, "key {n}");
        }
        assert_eq!(t.entries(120).len(), 256);
        assert_eq!(
            t.flush_port(1),
            keys.iter().enumerate().filter(|(n, _)| n % 2 == 1 && n % 5 == 1).count()
        );
        for (n, &k) in keys.iter().enumerate() {
            let want = (n % 2 == 1 && n % 5 != 1).then_some((n % 5) as u16);
            assert_eq!(t.lookup(k, 7, 120), want, "key {n} after flush");
        }
    }

    #[test]
    fn clock_wraps() {
        let mut t = MacTable::new(4, 1000);
        let before_wrap = u32::MAX - 100;
        t.learn(5, 1, 2, before_wrap);
        assert_eq!(t.lookup(5, 1, 500), Some(2), "601 ms later, across the wrap");
        assert_eq!(t.lookup(5, 1, 1000), None);
    }

    #[test]
    fn entries_report_fields() {
        let mut t = MacTable::new(4, 1000);
        t.learn(0x0200_0000_0002, 20, 1, 100);
        t.learn(0x0200_0000_0001, 10, 0, 0);
        let e = t.entries(300);
        assert_eq!(
            e,
            vec![
                MacEntry { mac: 0x0200_0000_0001, vlan: 10, port: 0, age_ms: 300 },
                MacEntry { mac: 0x0200_0000_0002, vlan: 20, port: 1, age_ms: 200 },
            ]
        );
    }
}
