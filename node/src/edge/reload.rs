//! [`Reloaded`]: something built from files (a port's TLS material, the tokens file), read
//! again when the files change, so a rotated certificate or an edited tokens file is used
//! without a restart. What is read and how it is built is a [`Source`]; this module owns only
//! the noticing and the swapping.
//!
//! How changes are noticed: every `every` (default 2 s) the files are read and their bytes
//! compared with what was last loaded. A periodic content check rather than file-system
//! notifications (inotify, the `notify` crate): a Kubernetes Secret volume is updated by
//! swapping a `..data` symlink in the mount's directory, which a watch on the files themselves
//! does not see, and a content check also notices a file rewritten in place within the same
//! second (same mtime). The files are a few KiB; reading them every couple of seconds costs
//! nothing measurable.
//!
//! A change that does not build (a half-written file, a certificate whose key has not been
//! written yet, a bad line) keeps the old value and is logged as an error once per distinct
//! content; the next change is tried again. Readers take the value in use at the moment they
//! ask ([`Reloaded::current`]).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

/// Default time between two checks of the files.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Files and what is built from them.
pub trait Source: std::fmt::Debug + Send + Sync + 'static {
    /// The raw bytes of the files: what two checks compare.
    type Contents: PartialEq + Send + 'static;
    /// What is built from them.
    type Value: Send + Sync + 'static;
    type Error: std::fmt::Display;
    /// What the files are, in log lines ("TLS files", "tokens file").
    const KIND: &'static str;
    /// What a successful reload changes, in log lines.
    const TAKES_EFFECT: &'static str;

    /// Reads every file.
    fn read(&self) -> Result<Self::Contents, Self::Error>;
    /// Builds the value from the files' contents.
    fn build(&self, contents: &Self::Contents) -> Result<Self::Value, Self::Error>;
}

/// The value built from a [`Source`]'s files, rebuilt when they change.
pub struct Reloaded<S: Source> {
    /// What the value is for, in log lines ("client port", "peer port", "auth").
    what: &'static str,
    source: S,
    current: ArcSwap<S::Value>,
    /// The bytes last tried (built or refused), so a refused content is reported once.
    last_seen: Mutex<S::Contents>,
}

impl<S: Source> std::fmt::Debug for Reloaded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloaded").field("what", &self.what).field("source", &self.source).finish_non_exhaustive()
    }
}

impl<S: Source> Reloaded<S> {
    /// Reads the files and builds the value; fails if they do not (a node does not start with
    /// broken files).
    pub fn load(what: &'static str, source: S) -> Result<Arc<Self>, S::Error> {
        let contents = source.read()?;
        let value = source.build(&contents)?;
        Ok(Arc::new(Self { what, source, current: ArcSwap::from_pointee(value), last_seen: Mutex::new(contents) }))
    }

    /// Checks the files every `every` from now on, for as long as this value is in use (the
    /// task ends when the last `Arc` is dropped). Needs a Tokio runtime.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.check();
            }
        });
    }

    /// The value in use now.
    pub fn current(&self) -> Arc<S::Value> {
        self.current.load_full()
    }

    /// The value in use now, without touching its reference count (for a quick look).
    pub fn peek(&self) -> arc_swap::Guard<Arc<S::Value>> {
        self.current.load()
    }

    /// Where the value comes from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Reads the files once and swaps in the new value if they changed and build. Returns
    /// whether a new value is in use.
    pub fn check(&self) -> bool {
        let contents = match self.source.read() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(what = self.what, error = %e, "cannot read the {}; keeping the loaded one", S::KIND);
                return false;
            }
        };
        let mut last = crate::support::sync::lock(&self.last_seen);
        if *last == contents {
            return false;
        }
        let built = self.source.build(&contents);
        *last = contents;
        match built {
            Ok(value) => {
                self.current.store(Arc::new(value));
                tracing::info!(what = self.what, source = ?self.source, "{} changed: {}", S::KIND, S::TAKES_EFFECT);
                true
            }
            Err(e) => {
                tracing::error!(what = self.what, error = %e, "{} changed but do not load; keeping the loaded one", S::KIND);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file holding a number.
    #[derive(Debug)]
    struct Number(PathBuf);

    impl Source for Number {
        type Contents = Vec<u8>;
        type Value = u32;
        type Error = String;
        const KIND: &'static str = "number file";
        const TAKES_EFFECT: &'static str = "new number in use";

        fn read(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }

        fn build(&self, contents: &Vec<u8>) -> Result<u32, String> {
            String::from_utf8_lossy(contents).trim().parse().map_err(|e| format!("{e}"))
        }
    }

    #[test]
    fn a_change_is_picked_up_and_a_bad_one_keeps_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        assert!(Reloaded::load("test", Number(dir.path().join("missing"))).is_err());
        let r = Reloaded::load("test", Number(path.clone())).unwrap();
        assert_eq!(*r.current(), 1);
        assert!(!r.check(), "nothing changed");
        std::fs::write(&path, "2").unwrap();
        assert!(r.check());
        assert_eq!(*r.peek().as_ref(), 2);
        std::fs::write(&path, "two").unwrap();
        assert!(!r.check());
        assert_eq!(*r.current(), 2, "a bad file keeps the old value");
        std::fs::remove_file(&path).unwrap();
        assert!(!r.check());
        assert_eq!(*r.current(), 2, "a missing file keeps the old value");
        std::fs::write(&path, "3").unwrap();
        assert!(r.check());
        assert_eq!(*r.current(), 3);
    }
}
