//! The decision cache.
//!
//! Readers see an immutable [`Snapshot`] (loaded once per request through arc-swap): single
//! addresses in a bucketed hash table per family, ranges in a sorted array with parent links
//! behind a one-bit-per-16-bit-block filter (most addresses are in no range).
//! The writer ([`Store`]) applies a batch by copying only the buckets it touches and sharing
//! the rest, then publishes a new snapshot; readers never wait.
//!
//! A single-address slot is 12 bytes for IPv4 (address, expiry, kind) and 24 for IPv6. A kind
//! is a (type, origin) pair, so that usage metrics can say which origin dropped a request. The
//! rare address with several decisions of different kinds is tracked writer-side in `multi`;
//! the slot holds the winner (ban > captcha > throttle, then the longest).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

pub use super::wire::V6Key;
use super::wire::{Batch, Change, Target, MAX_TYPES, OTHER_ORIGIN};
use crate::restrict::{DecisionKind, Verdict};

/// Distinct (type, origin) pairs a process keeps apart; later ones count under origin
/// `other`. The last [`MAX_TYPES`] + 1 are kept for those.
pub const MAX_KINDS: usize = 1024;

/// A slot's value: when the decision expires (seconds since the store's epoch) and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Meta {
    expires: u32,
    kind: u16,
}

#[inline]
fn meta(expires: u32, kind: u16) -> Meta {
    Meta { expires, kind }
}
#[inline]
fn meta_expires(m: Meta) -> u32 {
    m.expires
}
#[inline]
fn meta_type(m: Meta) -> u16 {
    m.kind
}

/// A single-address key.
pub trait SlotKey: Copy + Eq + Default + Send + Sync + 'static {
    fn hash(self) -> u64;
}

impl SlotKey for u32 {
    #[inline]
    fn hash(self) -> u64 {
        (self as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl SlotKey for V6Key {
    #[inline]
    fn hash(self) -> u64 {
        let [a, b, c, d] = self.0;
        let x = ((a as u64) << 32 | b as u64) ^ ((c as u64) << 32 | d as u64).rotate_left(29);
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Slot<K> {
    key: K,
    meta: Meta,
}

/// A hash table of buckets shared between snapshots.
struct Table<K> {
    buckets: Box<[Arc<[Slot<K>]>]>,
    shift: u32,
    len: usize,
}

impl<K: SlotKey> Table<K> {
    fn with_capacity(n: usize) -> Self {
        // About 8-16 slots a bucket: a scan touches two cache lines, and a delta has few
        // bucket handles to copy.
        let bits = (n / 8).max(64).next_power_of_two().trailing_zeros();
        let empty: Arc<[Slot<K>]> = Arc::from(Vec::new());
        Self {
            buckets: vec![empty; 1 << bits].into_boxed_slice(),
            shift: 64 - bits,
            len: 0,
        }
    }

    #[inline]
    fn index(&self, key: K) -> usize {
        (key.hash() >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: K) -> Option<Meta> {
        self.buckets[self.index(key)]
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.meta)
    }

    /// Builds the table from `slots` (distinct keys), walked twice: a counting sort by bucket,
    /// then one allocation per bucket. No per-bucket vectors growing (and freed) on the way,
    /// which dominated a 1M-decision sync, and no copy of the input beside the sorted one.
    fn build<I: Iterator<Item = Slot<K>> + Clone>(len: usize, slots: I) -> Self {
        let mut t = Self::with_capacity(len);
        let mut starts = vec![0u32; t.buckets.len() + 1];
        for s in slots.clone() {
            starts[t.index(s.key) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut sorted = vec![
            Slot {
                key: K::default(),
                meta: meta(0, 0)
            };
            len
        ];
        for s in slots {
            let i = t.index(s.key);
            sorted[next[i] as usize] = s;
            next[i] += 1;
        }
        for (i, b) in t.buckets.iter_mut().enumerate() {
            let (from, to) = (starts[i] as usize, starts[i + 1] as usize);
            if from < to {
                *b = Arc::from(&sorted[from..to]);
            }
        }
        t.len = len;
        t
    }

    fn from_slots(slots: Vec<Slot<K>>) -> Self {
        Self::build(slots.len(), slots.iter().copied())
    }

    /// The slots still alive at `now`.
    fn live(&self, now: u32) -> Vec<Slot<K>> {
        self.buckets
            .iter()
            .flat_map(|b| b.iter().copied())
            .filter(|sl| meta_expires(sl.meta) > now)
            .collect()
    }
}

/// Working copies of the buckets a batch touches.
struct Edit<'t, K> {
    table: &'t Table<K>,
    touched: HashMap<usize, Vec<Slot<K>>>,
}

impl<'t, K: SlotKey> Edit<'t, K> {
    fn new(table: &'t Table<K>) -> Self {
        Self {
            table,
            touched: HashMap::new(),
        }
    }

    fn bucket(&mut self, key: K) -> &mut Vec<Slot<K>> {
        let i = self.table.index(key);
        let table = self.table;
        self.touched
            .entry(i)
            .or_insert_with(|| table.buckets[i].to_vec())
    }

    fn get(&mut self, key: K) -> Option<Meta> {
        self.bucket(key)
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.meta)
    }

    fn set(&mut self, key: K, meta: Option<Meta>) {
        let b = self.bucket(key);
        let pos = b.iter().position(|s| s.key == key);
        match (pos, meta) {
            (Some(p), Some(m)) => b[p].meta = m,
            (Some(p), None) => {
                b.swap_remove(p);
            }
            (None, Some(m)) => b.push(Slot { key, meta: m }),
            (None, None) => {}
        }
    }

    /// The edited table, or the same one shared when nothing was touched.
    fn finish(self, old: &Arc<Table<K>>) -> Arc<Table<K>> {
        if self.touched.is_empty() {
            return old.clone();
        }
        let mut buckets = self.table.buckets.clone();
        let mut len = self.table.len;
        for (i, list) in self.touched {
            len = len + list.len() - buckets[i].len();
            buckets[i] = Arc::from(list);
        }
        Arc::new(Table {
            buckets,
            shift: self.table.shift,
            len,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct RangeEntry<K> {
    start: K,
    end: K,
    meta: Meta,
    /// Index of the nearest enclosing range, or `u32::MAX`.
    parent: u32,
}

/// Ranges of one family, sorted by start (wider first on ties), each linked to its nearest
/// enclosing range. CIDR ranges nest or are disjoint, so the most specific range covering an
/// address is on the parent chain of the last range starting at or before it.
struct RangeTable<K> {
    /// The entries' starts alone, so the bisection stays in a few cache lines.
    starts: Box<[K]>,
    entries: Box<[RangeEntry<K>]>,
    /// One bit per 16-bit block ([`RangeKey::block`]): set when some range reaches into the
    /// block. Most addresses are in no range; this 8 KiB filter answers them without the
    /// bisection.
    blocks: Box<[u64]>,
}

/// A range bound, and the 16 bits of it that the coarse filter indexes. Ranges are CIDR
/// networks: one wider than the bits above the block spans every block (its start's block is
/// 0, its end's 0xFFFF), so the blocks from start's to end's are exactly those it reaches.
trait RangeKey: Copy + Ord {
    fn block(self) -> usize;
}

impl RangeKey for u32 {
    #[inline]
    fn block(self) -> usize {
        (self >> 16) as usize
    }
}

impl RangeKey for u128 {
    /// The second 16-bit group: the first is nearly constant (2000::/3) in real ranges.
    #[inline]
    fn block(self) -> usize {
        ((self >> 96) & 0xFFFF) as usize
    }
}

const BLOCKS: usize = 1 << 16;

/// Sets bits `from..=to` of `bits`, a word at a time.
fn set_bits(bits: &mut [u64], from: usize, to: usize) {
    let (first, last) = (from / 64, to / 64);
    for (w, word) in bits.iter_mut().enumerate().take(last + 1).skip(first) {
        let lo = if w == first { from % 64 } else { 0 };
        let hi = if w == last { to % 64 } else { 63 };
        *word |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
    }
}

impl<K: RangeKey> RangeTable<K> {
    fn build(mut ranges: Vec<(K, K, Meta)>) -> Self {
        ranges.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut entries: Vec<RangeEntry<K>> = Vec::with_capacity(ranges.len());
        let mut open: Vec<u32> = Vec::new();
        for (start, end, meta) in ranges {
            while let Some(&top) = open.last() {
                if entries[top as usize].end < start {
                    open.pop();
                } else {
                    break;
                }
            }
            let parent = open.last().copied().unwrap_or(u32::MAX);
            entries.push(RangeEntry {
                start,
                end,
                meta,
                parent,
            });
            open.push((entries.len() - 1) as u32);
        }
        let mut blocks = vec![0u64; BLOCKS / 64];
        for e in &entries {
            set_bits(&mut blocks, e.start.block(), e.end.block());
        }
        Self {
            starts: entries.iter().map(|e| e.start).collect(),
            entries: entries.into_boxed_slice(),
            blocks: blocks.into_boxed_slice(),
        }
    }

    #[inline]
    fn get(&self, x: K, now: u32) -> Option<Meta> {
        let b = x.block();
        if self.blocks[b / 64] & (1 << (b % 64)) == 0 {
            return None;
        }
        let mut i = self.starts.partition_point(|s| *s <= x);
        while i > 0 {
            let e = &self.entries[i - 1];
            if x <= e.end && meta_expires(e.meta) > now {
                return Some(e.meta);
            }
            i = e.parent.wrapping_add(1) as usize;
        }
        None
    }
}

/// What every request reads: immutable, swapped whole.
pub struct Snapshot {
    v4: Arc<Table<u32>>,
    v6: Arc<Table<V6Key>>,
    r4: Arc<RangeTable<u32>>,
    r6: Arc<RangeTable<u128>>,
    /// `AS` and `Country` decisions, few: sorted for a bisection.
    scoped: Arc<Scoped>,
    /// By kind: the verdict, and the (type, origin) names metrics report.
    verdicts: Arc<[Verdict]>,
    kinds: Arc<[(Box<str>, Box<str>)]>,
}

/// Decisions on an autonomous system or a country, by key, with their slot value.
#[derive(Default)]
struct Scoped {
    asns: Box<[(u32, Meta)]>,
    countries: Box<[([u8; 2], Meta)]>,
}

impl Scoped {
    fn get<K: Ord>(list: &[(K, Meta)], key: &K, now: u32) -> Option<Meta> {
        let i = list.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(list[i].1).filter(|m| meta_expires(*m) > now)
    }
}

/// What the AS and country decisions need to know about an address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Network {
    pub asn: Option<u32>,
    pub country: Option<[u8; 2]>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self {
            v4: Arc::new(Table::with_capacity(0)),
            v6: Arc::new(Table::with_capacity(0)),
            r4: Arc::new(RangeTable::build(Vec::new())),
            r6: Arc::new(RangeTable::build(Vec::new())),
            scoped: Arc::default(),
            verdicts: Arc::from([]),
            kinds: Arc::from([]),
        }
    }

    /// An empty snapshot that keeps `old`'s kinds, so that counters by kind keep their
    /// meaning across a bouncer restart.
    pub fn empty_keeping_kinds(old: &Snapshot) -> Self {
        Self {
            verdicts: old.verdicts.clone(),
            kinds: old.kinds.clone(),
            ..Self::empty()
        }
    }

    #[inline]
    fn found(&self, m: Meta) -> (Verdict, DecisionKind) {
        // A kind is always in the table; were it not, deny as a ban (fail closed).
        let v = self.verdicts.get(m.kind as usize).copied();
        (v.unwrap_or(Verdict::CrowdsecBan), DecisionKind(m.kind))
    }

    /// The (type, origin) a kind stands for.
    pub fn kind_names(&self, kind: DecisionKind) -> Option<(&str, &str)> {
        let (t, o) = self.kinds.get(kind.0 as usize)?;
        Some((t, o))
    }

    /// Live decisions by kind (an address or network held with several kinds counts once,
    /// under the kind that decides).
    pub fn count_by_kind(&self, now: u32) -> Vec<u64> {
        let mut n = vec![0u64; self.kinds.len()];
        let mut add = |m: Meta| {
            if m.expires > now {
                if let Some(c) = n.get_mut(m.kind as usize) {
                    *c += 1;
                }
            }
        };
        self.v4
            .buckets
            .iter()
            .flat_map(|b| b.iter())
            .for_each(|s| add(s.meta));
        self.v6
            .buckets
            .iter()
            .flat_map(|b| b.iter())
            .for_each(|s| add(s.meta));
        self.r4.entries.iter().for_each(|e| add(e.meta));
        self.r6.entries.iter().for_each(|e| add(e.meta));
        self.scoped.asns.iter().for_each(|(_, m)| add(*m));
        self.scoped.countries.iter().for_each(|(_, m)| add(*m));
        n
    }

    /// Whether any AS or country decision is held: only then is the address's network asked.
    #[inline]
    pub fn has_scoped(&self) -> bool {
        !self.scoped.asns.is_empty() || !self.scoped.countries.is_empty()
    }

    /// The decision on the address's autonomous system, else on its country. Asked only
    /// after [`Snapshot::lookup`] found nothing: an address or a range is more specific.
    pub fn lookup_network(&self, net: Network, now: u32) -> Option<(Verdict, DecisionKind)> {
        let asn = net
            .asn
            .and_then(|a| Scoped::get(&self.scoped.asns, &a, now));
        let m = asn.or_else(|| {
            net.country
                .and_then(|c| Scoped::get(&self.scoped.countries, &c, now))
        })?;
        Some(self.found(m))
    }

    /// AS and country decisions held.
    pub fn scoped_len(&self) -> (usize, usize) {
        (self.scoped.asns.len(), self.scoped.countries.len())
    }

    /// The decision covering `addr` (canonical) at `now` (seconds since the store's epoch).
    /// Single addresses are the most specific; then the narrowest live range.
    #[inline]
    pub fn lookup(&self, addr: IpAddr, now: u32) -> Option<(Verdict, DecisionKind)> {
        let m = match addr {
            IpAddr::V4(a) => {
                let k = u32::from(a);
                match self.v4.get(k) {
                    Some(m) if meta_expires(m) > now => Some(m),
                    _ => self.r4.get(k, now),
                }
            }
            IpAddr::V6(a) => {
                let k = u128::from(a);
                match self.v6.get(V6Key::from(k)) {
                    Some(m) if meta_expires(m) > now => Some(m),
                    _ => self.r6.get(k, now),
                }
            }
        }?;
        Some(self.found(m))
    }

    #[cfg(test)]
    pub fn verdict_at(&self, addr: IpAddr, now: u32) -> Option<Verdict> {
        self.lookup(addr, now).map(|(v, _)| v)
    }

    /// Decisions held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.v4.len
            + self.v6.len
            + self.r4.entries.len()
            + self.r6.entries.len()
            + self.scoped.asns.len()
            + self.scoped.countries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Severity order when one target has decisions of several types.
fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::CrowdsecBan => 3,
        Verdict::CrowdsecCaptcha => 2,
        Verdict::CrowdsecThrottle => 1,
        _ => 0,
    }
}

/// The slot value for a target with several decisions: the severest type, then the longest.
fn winner(list: &[(u16, u32)], verdicts: &[Verdict]) -> Option<Meta> {
    list.iter()
        .max_by_key(|(k, e)| {
            (
                rank(
                    verdicts
                        .get(*k as usize)
                        .copied()
                        .unwrap_or(Verdict::CrowdsecBan),
                ),
                *e,
            )
        })
        .map(|(k, e)| meta(*e, *k))
}

fn verdict_for(type_name: &str) -> Verdict {
    match type_name.to_ascii_lowercase().as_str() {
        "captcha" => Verdict::CrowdsecCaptcha,
        "throttle" => Verdict::CrowdsecThrottle,
        // `ban` and any custom type deny as a ban.
        _ => Verdict::CrowdsecBan,
    }
}

/// The writer: owns the authoritative extras and builds snapshots.
pub struct Store {
    snapshot: Arc<Snapshot>,
    /// Global kind table, append-only: a slot's kind indexes it.
    kinds: Vec<(String, String)>,
    kind_ids: HashMap<(String, String), u16>,
    /// By kind, kept in step with `kinds`.
    verdicts: Arc<[Verdict]>,
    /// Single targets with decisions of more than one kind: every (kind, expiry).
    multi: HashMap<Target, Vec<(u16, u32)>>,
    /// All range decisions by network: every (kind, expiry).
    ranges: HashMap<IpNet, Vec<(u16, u32)>>,
    /// All AS and country decisions: every (kind, expiry).
    scoped: HashMap<Target, Vec<(u16, u32)>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::continuing(&Snapshot::empty())
    }

    /// A new store that numbers kinds as `previous` did.
    pub fn continuing(previous: &Snapshot) -> Self {
        let kinds: Vec<(String, String)> = previous
            .kinds
            .iter()
            .map(|(t, o)| (t.to_string(), o.to_string()))
            .collect();
        let kind_ids = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u16))
            .collect();
        Self {
            snapshot: Arc::new(Snapshot::empty_keeping_kinds(previous)),
            kinds,
            kind_ids,
            verdicts: previous.verdicts.clone(),
            multi: HashMap::new(),
            ranges: HashMap::new(),
            scoped: HashMap::new(),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// The kind of a (type, origin) pair, numbered on first sight.
    fn global_kind(&mut self, type_name: &str, origin: &str) -> u16 {
        let key = (type_name.to_owned(), origin.to_owned());
        if let Some(&k) = self.kind_ids.get(&key) {
            return k;
        }
        let spare = MAX_KINDS - (MAX_TYPES + 1);
        if self.kinds.len() >= spare && origin != OTHER_ORIGIN {
            return self.global_kind(type_name, OTHER_ORIGIN);
        }
        if self.kinds.len() >= MAX_KINDS {
            // Only reachable with more than MAX_TYPES + 1 types under `other`: share the last.
            return (MAX_KINDS - 1) as u16;
        }
        let k = self.kinds.len() as u16;
        self.kinds.push(key.clone());
        self.kind_ids.insert(key, k);
        self.verdicts = self.kinds.iter().map(|(t, _)| verdict_for(t)).collect();
        k
    }

    /// The global kind of a change, through the batch's (type, origin) table.
    fn kind_of(&mut self, kinds: &mut BatchKinds, batch: &Batch, c: &Change) -> u16 {
        let i = c.type_index as usize * kinds.origins + c.origin as usize;
        match kinds.table.get(i) {
            Some(&k) if k != u16::MAX => k,
            _ => {
                let t = batch
                    .types
                    .get(c.type_index as usize)
                    .map_or("ban", |t| t.as_str());
                let o = batch
                    .origins
                    .get(c.origin as usize)
                    .map_or("", |o| o.as_str());
                let k = self.global_kind(t, o);
                if let Some(slot) = kinds.table.get_mut(i) {
                    *slot = k;
                }
                k
            }
        }
    }

    fn winner(&self, list: &[(u16, u32)]) -> Option<Meta> {
        winner(list, &self.verdicts)
    }

    fn kind_names(&self) -> Arc<[(Box<str>, Box<str>)]> {
        if self.snapshot.kinds.len() == self.kinds.len() {
            return self.snapshot.kinds.clone();
        }
        self.kinds
            .iter()
            .map(|(t, o)| (t.as_str().into(), o.as_str().into()))
            .collect()
    }

    /// Replaces everything with a startup (full) answer. The answer's changes are sorted in
    /// place, so that each address's decisions are side by side, and read into the tables'
    /// slots; they are gone before the tables are built. The memory a million decisions take
    /// while they load stays near the answer's own.
    pub fn replace_all(&mut self, mut batch: Batch, now: u32) -> Arc<Snapshot> {
        self.multi.clear();
        self.ranges.clear();
        self.scoped.clear();
        let mut kinds = BatchKinds::new(&batch);
        let mut new = std::mem::take(&mut batch.new);
        new.sort_unstable_by_key(|c| c.target);
        let mut v4: Vec<Slot<u32>> = Vec::new();
        let mut v6: Vec<Slot<V6Key>> = Vec::new();
        let mut list: Vec<(u16, u32)> = Vec::new();
        for group in new.chunk_by(|a, b| a.target == b.target) {
            list.clear();
            for c in group.iter().filter(|c| c.remaining_secs > 0) {
                let t = self.kind_of(&mut kinds, &batch, c);
                upsert(&mut list, t, now.saturating_add(c.remaining_secs));
            }
            if list.is_empty() {
                continue;
            }
            let target = group[0].target;
            match target {
                Target::V4(_) | Target::V6(_) => {
                    let Some(meta) = winner(&list, &self.verdicts) else {
                        continue;
                    };
                    if list.len() > 1 {
                        self.multi.insert(target, list.clone());
                    }
                    match target {
                        Target::V4(key) => v4.push(Slot { key, meta }),
                        Target::V6(key) => v6.push(Slot { key, meta }),
                        _ => {}
                    }
                }
                Target::Range(n) => {
                    self.ranges.insert(n, list.clone());
                }
                Target::Country(_) | Target::As(_) => {
                    self.scoped.insert(target, list.clone());
                }
            }
        }
        drop(new);
        drop(batch);
        // Hand the answer's memory back before the tables take theirs, so that their many
        // small allocations are not spread over it (and keep it from the system).
        crate::memory::release_freed();
        let v4 = Arc::new(Table::from_slots(v4));
        let v6 = Arc::new(Table::from_slots(v6));
        let (r4, r6) = self.range_tables();
        self.snapshot = Arc::new(Snapshot {
            v4,
            v6,
            r4,
            r6,
            scoped: self.scoped_table(),
            verdicts: self.verdicts.clone(),
            kinds: self.kind_names(),
        });
        self.snapshot.clone()
    }

    /// Applies a delta: `deleted` before `new`, one batch, one new snapshot.
    pub fn apply(&mut self, batch: Batch, now: u32) -> Arc<Snapshot> {
        let mut kinds = BatchKinds::new(&batch);
        let old = self.snapshot.clone();
        let mut e4 = Edit::new(&old.v4);
        let mut e6 = Edit::new(&old.v6);
        let mut ranges_changed = false;
        let mut scoped_changed = false;
        for (c, deleted) in batch
            .deleted
            .iter()
            .map(|c| (c, true))
            .chain(batch.new.iter().map(|c| (c, false)))
        {
            let t = self.kind_of(&mut kinds, &batch, c);
            let exp = now.saturating_add(c.remaining_secs);
            let op = if deleted || c.remaining_secs == 0 {
                Op::Delete(t)
            } else {
                Op::Add(t, exp)
            };
            match c.target {
                Target::V4(k) => self.edit_single(&mut e4, c.target, k, op),
                Target::V6(k) => self.edit_single(&mut e6, c.target, k, op),
                Target::Range(n) => {
                    ranges_changed = true;
                    let list = self.ranges.entry(n).or_default();
                    match op {
                        Op::Add(t, e) => upsert(list, t, e),
                        Op::Delete(t) => list.retain(|(lt, _)| *lt != t),
                    }
                    if list.is_empty() {
                        self.ranges.remove(&n);
                    }
                }
                Target::Country(_) | Target::As(_) => {
                    scoped_changed = true;
                    let list = self.scoped.entry(c.target).or_default();
                    match op {
                        Op::Add(t, e) => upsert(list, t, e),
                        Op::Delete(t) => list.retain(|(lt, _)| *lt != t),
                    }
                    if list.is_empty() {
                        self.scoped.remove(&c.target);
                    }
                }
            }
        }
        let v4 = e4.finish(&old.v4);
        let v6 = e6.finish(&old.v6);
        let (r4, r6) = if ranges_changed {
            self.range_tables()
        } else {
            (old.r4.clone(), old.r6.clone())
        };
        let scoped = if scoped_changed {
            self.scoped_table()
        } else {
            old.scoped.clone()
        };
        let mut snap = Snapshot {
            v4,
            v6,
            r4,
            r6,
            scoped,
            verdicts: self.verdicts.clone(),
            kinds: self.kind_names(),
        };
        // Grow the tables when buckets get long.
        if snap.v4.len > snap.v4.buckets.len() * 32 || snap.v6.len > snap.v6.buckets.len() * 32 {
            snap = self.rebuilt(&snap, now);
        }
        self.snapshot = Arc::new(snap);
        self.snapshot.clone()
    }

    /// Drops expired decisions (lookups already ignore them; this frees their memory).
    pub fn purge_expired(&mut self, now: u32) -> Arc<Snapshot> {
        let old = self.snapshot.clone();
        self.multi.retain(|_, list| {
            list.retain(|(_, e)| *e > now);
            list.len() > 1
        });
        let live = |list: &mut Vec<(u16, u32)>| {
            list.retain(|(_, e)| *e > now);
            !list.is_empty()
        };
        self.ranges.retain(|_, list| live(list));
        self.scoped.retain(|_, list| live(list));
        let (r4, r6) = self.range_tables();
        let mut snap = self.rebuilt(&old, now);
        snap.r4 = r4;
        snap.r6 = r6;
        snap.scoped = self.scoped_table();
        self.snapshot = Arc::new(snap);
        self.snapshot.clone()
    }

    fn rebuilt(&self, s: &Snapshot, now: u32) -> Snapshot {
        Snapshot {
            v4: Arc::new(Table::from_slots(s.v4.live(now))),
            v6: Arc::new(Table::from_slots(s.v6.live(now))),
            r4: s.r4.clone(),
            r6: s.r6.clone(),
            scoped: s.scoped.clone(),
            verdicts: self.verdicts.clone(),
            kinds: self.kind_names(),
        }
    }

    fn scoped_table(&self) -> Arc<Scoped> {
        let mut asns = Vec::new();
        let mut countries = Vec::new();
        for (target, list) in &self.scoped {
            let Some(m) = self.winner(list) else { continue };
            match target {
                Target::As(n) => asns.push((*n, m)),
                Target::Country(c) => countries.push((*c, m)),
                _ => {}
            }
        }
        asns.sort_unstable();
        countries.sort_unstable();
        Arc::new(Scoped {
            asns: asns.into(),
            countries: countries.into(),
        })
    }

    fn edit_single<K: SlotKey>(&mut self, edit: &mut Edit<'_, K>, target: Target, key: K, op: Op) {
        if let Some(list) = self.multi.get_mut(&target) {
            match op {
                Op::Add(t, e) => upsert(list, t, e),
                Op::Delete(t) => list.retain(|(lt, _)| *lt != t),
            }
            let list = list.clone();
            if list.len() <= 1 {
                self.multi.remove(&target);
            }
            edit.set(key, self.winner(&list));
            return;
        }
        let current = edit.get(key);
        match (op, current) {
            (Op::Delete(t), Some(m)) if meta_type(m) == t => edit.set(key, None),
            (Op::Delete(_), _) => {}
            (Op::Add(t, e), None) => edit.set(key, Some(meta(e, t))),
            (Op::Add(t, e), Some(m)) if meta_type(m) == t => {
                edit.set(key, Some(meta(e.max(meta_expires(m)), t)))
            }
            (Op::Add(t, e), Some(m)) => {
                let list = vec![(meta_type(m), meta_expires(m)), (t, e)];
                edit.set(key, self.winner(&list));
                self.multi.insert(target, list);
            }
        }
    }

    fn range_tables(&self) -> (Arc<RangeTable<u32>>, Arc<RangeTable<u128>>) {
        let mut r4 = Vec::new();
        let mut r6 = Vec::new();
        for (net, list) in &self.ranges {
            let Some(m) = self.winner(list) else { continue };
            match net {
                IpNet::V4(n) => r4.push((u32::from(n.network()), u32::from(n.broadcast()), m)),
                IpNet::V6(n) => r6.push((u128::from(n.network()), u128::from(n.broadcast()), m)),
            }
        }
        (
            Arc::new(RangeTable::build(r4)),
            Arc::new(RangeTable::build(r6)),
        )
    }
}

/// Per batch: its (type, origin) pairs to global kinds, filled on first use.
struct BatchKinds {
    origins: usize,
    table: Vec<u16>,
}

impl BatchKinds {
    fn new(batch: &Batch) -> Self {
        let origins = batch.origins.len().max(1);
        Self {
            origins,
            table: vec![u16::MAX; batch.types.len().max(1) * origins],
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add(u16, u32),
    Delete(u16),
}

fn upsert(list: &mut Vec<(u16, u32)>, t: u16, e: u32) {
    match list.iter_mut().find(|(lt, _)| *lt == t) {
        Some(slot) => slot.1 = slot.1.max(e),
        None => list.push((t, e)),
    }
}
