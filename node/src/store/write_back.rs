//! The live state-machine tree together with the applied writes that have not reached it yet.
//!
//! Applying a run of entries does not write sled at once: the run's writes join the *active*
//! layer, an in-memory map. Once it holds [`FLUSH_RECORDS`] records it is *frozen* and a
//! background thread writes it into the tree as one sled batch (`applied` included), so sled
//! always holds a prefix of the applied entries: a crash loses only what the Raft log still
//! has, and a restart re-applies it. Records written again before they reach sled (a client's
//! dedup session, the key count, `applied`) are coalesced, and those are most of the records a
//! put writes.
//!
//! Reads look at the layers newest first: the active layer, the frozen one, then the tree. A
//! layer holds `None` for a record removed since the layer below was written.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::Arc;

use super::{decode, io_err};

/// Records the active layer holds before it is frozen and handed to the background flush.
pub const FLUSH_RECORDS: usize = 4096;
/// Records the active layer may hold while the previous frozen layer is still being written;
/// past this the apply path writes to sled itself (back-pressure on a slow disk).
pub const MAX_UNFLUSHED_RECORDS: usize = 16 * FLUSH_RECORDS;

/// Writes not yet in the tree; `None` is a removal.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key and its value in a layer, or `None` for a removal.
pub type LayerRecord = (Vec<u8>, Option<Vec<u8>>);
/// One record of a layer as it is read.
pub type LayerItem = io::Result<LayerRecord>;
/// A source of a merged range, in key order.
pub type Layer<'a> = Box<dyn Iterator<Item = LayerItem> + 'a>;

/// The live tree of one state-machine generation and its unwritten layers.
pub struct Live {
    pub generation: u64,
    pub tree: sled::Tree,
    active: Writes,
    frozen: Option<Arc<Writes>>,
}

impl Live {
    pub fn new(generation: u64, tree: sled::Tree) -> Self {
        Self { generation, tree, active: Writes::new(), frozen: None }
    }

    /// Reads and decodes one record, newest layer first.
    pub fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        self.read_with(what, key, |bytes| decode(what, bytes))
    }

    /// Reads one record, newest layer first, and turns its bytes into a value with `decode`.
    pub fn read_with<T>(
        &self,
        what: &str,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        let layered = self.active.get(key).or_else(|| self.frozen.as_ref().and_then(|f| f.get(key)));
        match layered {
            Some(Some(v)) => Ok(Some(decode(v)?)),
            Some(None) => Ok(None),
            None => match self.tree.get(key).map_err(|e| io_err(what, e))? {
                Some(v) => Ok(Some(decode(&v)?)),
                None => Ok(None),
            },
        }
    }

    /// The layers of `(lower, upper)`, newest first; `Merged` makes one range of them.
    pub fn layers(&self, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> Vec<Layer<'_>> {
        let mut layers = vec![writes_layer(&self.active, lower, upper)];
        if let Some(frozen) = &self.frozen {
            layers.push(writes_layer(frozen, lower, upper));
        }
        if !is_empty_range(lower, upper) {
            let tree = self
                .tree
                .range::<Vec<u8>, _>((lower.clone(), upper.clone()))
                .map(|item| item.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))).map_err(|e| io_err("range", e)));
            layers.push(Box::new(tree));
        }
        layers
    }

    /// Adds the writes of an applied run to the active layer. Returns true when the active layer
    /// is big enough to be written and no earlier layer is still on its way (`freeze` next).
    pub fn absorb(&mut self, writes: Writes) -> bool {
        self.active.extend(writes);
        self.active.len() >= FLUSH_RECORDS && self.frozen.is_none()
    }

    /// True when the active layer has grown past what may wait for the background flush.
    pub fn over_limit(&self) -> bool {
        self.active.len() >= MAX_UNFLUSHED_RECORDS
    }

    /// Freezes the active layer (if it holds anything and no frozen layer is pending).
    pub fn freeze(&mut self) {
        if self.frozen.is_none() && !self.active.is_empty() {
            self.frozen = Some(Arc::new(std::mem::take(&mut self.active)));
        }
    }

    /// The frozen layer waiting to be written, if any.
    pub fn frozen(&self) -> Option<Arc<Writes>> {
        self.frozen.clone()
    }

    /// Forgets `written` once it is in the tree (if it is still the frozen layer).
    pub fn written(&mut self, written: &Arc<Writes>) {
        if self.frozen.as_ref().is_some_and(|f| Arc::ptr_eq(f, written)) {
            self.frozen = None;
        }
    }

    /// Records applied but not yet in sled.
    #[cfg(test)]
    pub fn unwritten_records(&self) -> usize {
        self.active.len() + self.frozen.as_ref().map_or(0, |f| f.len())
    }
}

/// A sled batch of `writes`.
pub fn to_batch(writes: &Writes) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k.as_slice(), v.as_slice()),
            None => batch.remove(k.as_slice()),
        }
    }
    batch
}

/// True when no key can lie in `(lower, upper)` (`BTreeMap::range` panics on such bounds).
pub fn is_empty_range(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u))
        | (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    }
}

/// The records of `writes` in `(lower, upper)`, as a layer.
pub fn writes_layer<'a>(writes: &'a Writes, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> Layer<'a> {
    if is_empty_range(lower, upper) {
        return Box::new(std::iter::empty());
    }
    Box::new(writes.range::<Vec<u8>, _>((lower.clone(), upper.clone())).map(|(k, v)| Ok((k.clone(), v.clone()))))
}

/// Several layers of one key range merged into one, in key order: for a key present in more
/// than one layer the first (newest) wins, and keys whose winning record is a removal are
/// skipped.
pub struct Merged<'a> {
    layers: Vec<Layer<'a>>,
    heads: Vec<Option<LayerRecord>>,
    started: bool,
}

impl<'a> Merged<'a> {
    pub fn new(layers: Vec<Layer<'a>>) -> Self {
        let heads = layers.iter().map(|_| None).collect();
        Self { layers, heads, started: false }
    }

    fn advance(&mut self, layer: usize) -> io::Result<()> {
        self.heads[layer] = self.layers[layer].next().transpose()?;
        Ok(())
    }

    fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.started {
            for layer in 0..self.layers.len() {
                self.advance(layer)?;
            }
            self.started = true;
        }
        loop {
            // `min_by` keeps the first of equal keys: the newest layer.
            let newest_smallest = (0..self.heads.len())
                .filter_map(|i| self.heads[i].as_ref().map(|(k, _)| (i, k)))
                .min_by(|(_, a), (_, b)| a.cmp(b))
                .map(|(i, _)| i);
            let Some(top) = newest_smallest else { return Ok(None) };
            let Some((key, value)) = self.heads[top].take() else { return Ok(None) };
            for layer in 0..self.heads.len() {
                if layer != top && self.heads[layer].as_ref().is_some_and(|(k, _)| *k == key) {
                    self.advance(layer)?;
                }
            }
            self.advance(top)?;
            if let Some(value) = value {
                return Ok(Some((key, value)));
            }
        }
    }
}

impl Iterator for Merged<'_> {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().temporary(true).path(dir.path()).open().expect("sled");
        (dir, db.open_tree("t").expect("tree"))
    }

    fn enc(s: &str) -> Vec<u8> {
        postcard::to_allocvec(s).expect("encode")
    }

    /// Writes of string values (postcard-encoded, as the state machine stores them).
    fn writes(records: &[(&str, Option<&str>)]) -> Writes {
        records.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.map(enc))).collect()
    }

    fn fill(tree: &sled::Tree, keys: &[&str]) {
        for k in keys {
            tree.insert(k, enc(&format!("tree-{k}"))).expect("insert");
        }
    }

    fn read(live: &Live, key: &str) -> Option<String> {
        live.read::<String>("test", key.as_bytes()).expect("read")
    }

    fn scan(live: &Live, lower: Bound<&str>, upper: Bound<&str>) -> Vec<(String, String)> {
        let own = |b: Bound<&str>| b.map(|s| s.as_bytes().to_vec());
        Merged::new(live.layers(&own(lower), &own(upper)))
            .map(|r| {
                let (k, v) = r.expect("record");
                (String::from_utf8(k).expect("utf8"), postcard::from_bytes::<String>(&v).expect("decode"))
            })
            .collect()
    }

    #[test]
    fn reads_see_the_newest_layer_first_and_removals_hide_older_records() {
        let (_d, tree) = tree();
        fill(&tree, &["a", "b", "c"]);
        let mut live = Live::new(0, tree);
        live.absorb(writes(&[("b", Some("frozen-b")), ("c", None)]));
        live.freeze();
        live.absorb(writes(&[("b", Some("active-b")), ("d", Some("active-d"))]));
        assert_eq!(read(&live, "a").as_deref(), Some("tree-a"));
        assert_eq!(read(&live, "b").as_deref(), Some("active-b"));
        assert_eq!(read(&live, "c"), None, "removed in the frozen layer");
        assert_eq!(read(&live, "d").as_deref(), Some("active-d"));
    }

    #[test]
    fn a_merged_range_takes_each_key_once_from_its_newest_layer() {
        let (_d, tree) = tree();
        fill(&tree, &["a", "c", "e", "g"]);
        let mut live = Live::new(0, tree);
        live.absorb(writes(&[("c", Some("frozen-c")), ("d", Some("frozen-d")), ("e", None)]));
        live.freeze();
        live.absorb(writes(&[("d", None), ("f", Some("active-f")), ("c", Some("active-c"))]));
        let all = scan(&live, Bound::Unbounded, Bound::Unbounded);
        let expected = [("a", "tree-a"), ("c", "active-c"), ("f", "active-f"), ("g", "tree-g")];
        assert_eq!(all, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        let part = scan(&live, Bound::Excluded("a"), Bound::Excluded("g"));
        assert_eq!(part.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["c", "f"]);
        assert!(scan(&live, Bound::Included("f"), Bound::Excluded("b")).is_empty(), "start after end");
        assert!(scan(&live, Bound::Excluded("c"), Bound::Excluded("c")).is_empty());
    }

    #[test]
    fn a_written_layer_is_forgotten_and_the_tree_answers_the_same() {
        let (_d, tree) = tree();
        let mut live = Live::new(0, tree.clone());
        assert!(!live.absorb(writes(&[("k", Some("v1"))])), "one record is not worth a batch");
        live.freeze();
        let frozen = live.frozen().expect("frozen");
        live.absorb(writes(&[("k", Some("v2"))]));
        tree.apply_batch(to_batch(&frozen)).expect("batch");
        live.written(&frozen);
        assert!(live.frozen().is_none());
        assert_eq!(live.unwritten_records(), 1);
        assert_eq!(read(&live, "k").as_deref(), Some("v2"));
        live.freeze();
        let frozen = live.frozen().expect("frozen");
        tree.apply_batch(to_batch(&frozen)).expect("batch");
        live.written(&frozen);
        assert_eq!(live.unwritten_records(), 0);
        assert_eq!(read(&live, "k").as_deref(), Some("v2"));
    }

    #[test]
    fn a_full_active_layer_asks_to_be_frozen_only_when_nothing_is_on_its_way() {
        let (_d, tree) = tree();
        let mut live = Live::new(0, tree);
        let many = |from: usize| -> Writes {
            (from..from + FLUSH_RECORDS).map(|i| (i.to_be_bytes().to_vec(), Some(vec![1]))).collect()
        };
        assert!(live.absorb(many(0)));
        live.freeze();
        assert!(!live.absorb(many(FLUSH_RECORDS)), "the frozen layer is still being written");
        assert!(!live.over_limit());
    }
}
