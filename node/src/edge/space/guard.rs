//! The reserve, the volume's low/ok state with hysteresis, and the write refusal.
//!
//! A volume is *low* once its free bytes drop below the reserve, and stays low until they are
//! back at [`resume_threshold`] (the reserve and a quarter more), so a volume hovering around
//! the reserve does not flip writes on and off with every measurement. While this node's
//! volume is low, or (on the leader) another member reports its volume low, every write is
//! refused with RESOURCE_EXHAUSTED before it is proposed: nothing refused is ever in the log.

use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use tonic::Status;

use super::probe::VolumeSpace;
use crate::edge::metrics::{Metrics, SpaceRefusal};

/// The reserve when none is given and the volume is large: 64 MiB.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 * 1024 * 1024;
/// The automatic reserve of a small volume is this fraction of it (1/10).
const AUTO_RESERVE_DIVISOR: u64 = 10;

/// How much free space a node keeps on its volume (`--min-free-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// [`DEFAULT_RESERVE_BYTES`], or a tenth of the volume when that is less.
    Auto,
    /// Exactly this many bytes (0 turns the guard off).
    Bytes(u64),
}

impl Reserve {
    /// The reserve in bytes on a volume of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(bytes) => bytes,
            Reserve::Auto => DEFAULT_RESERVE_BYTES.min(total / AUTO_RESERVE_DIVISOR),
        }
    }
}

impl FromStr for Reserve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Reserve::Auto);
        }
        s.parse::<u64>()
            .map(Reserve::Bytes)
            .map_err(|_| format!("{s:?} is not a reserve: give a number of bytes (0 turns the guard off) or \"auto\""))
    }
}

impl std::fmt::Display for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reserve::Auto => f.write_str("auto"),
            Reserve::Bytes(bytes) => write!(f, "{bytes}"),
        }
    }
}

/// Free bytes at which a low volume counts as having room again: the reserve and a quarter.
pub fn resume_threshold(reserve: u64) -> u64 {
    reserve.saturating_add(reserve / 4)
}

/// The low/ok state of a volume, with hysteresis.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    low: bool,
}

impl Hysteresis {
    pub fn is_low(self) -> bool {
        self.low
    }

    /// Takes one measurement of `free` bytes against `reserve`; returns the new state when it
    /// changed (true: now low).
    pub fn observe(&mut self, free: u64, reserve: u64) -> Option<bool> {
        let low = if self.low { free < resume_threshold(reserve) } else { free < reserve };
        (low != self.low).then(|| {
            self.low = low;
            low
        })
    }
}

/// Another member whose volume is below its reserve, as the leader last heard from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowMember {
    pub pod: String,
    pub free: u64,
    pub reserve: u64,
}

/// What this node knows of its own volume.
#[derive(Debug, Default)]
struct Own {
    space: Option<VolumeSpace>,
    reserve: u64,
    state: Hysteresis,
    /// The last measurement error, while measuring fails (logged once).
    error: Option<String>,
}

/// The guard one node holds ([`crate::node::Node::space`]).
pub struct SpaceGuard {
    /// `<set>-<ordinal>`, for the messages.
    pod: String,
    reserve: Reserve,
    own: Mutex<Own>,
    low_members: Mutex<Vec<LowMember>>,
    metrics: Arc<Metrics>,
}

impl SpaceGuard {
    pub fn new(pod: String, reserve: Reserve, metrics: Arc<Metrics>) -> Self {
        Self { pod, reserve, own: Mutex::default(), low_members: Mutex::default(), metrics }
    }

    /// Takes a measurement of this node's volume; logs when the volume turns low or recovers.
    pub fn observe(&self, space: VolumeSpace) {
        let mut own = crate::support::sync::lock(&self.own);
        own.space = Some(space);
        own.reserve = self.reserve.bytes(space.total);
        if own.error.take().is_some() {
            tracing::info!("the volume can be measured again");
        }
        let reserve = own.reserve;
        match own.state.observe(space.free, reserve) {
            Some(true) => tracing::error!(
                free = space.free,
                reserve,
                "volume below its reserve: refusing writes until {} bytes are free",
                resume_threshold(reserve)
            ),
            Some(false) => tracing::info!(free = space.free, reserve, "volume has room again: accepting writes"),
            None => {}
        }
        self.metrics.record_volume(space.free, reserve, own.state.is_low());
    }

    /// Notes that the volume could not be measured; the last state stays.
    pub fn observe_error(&self, e: &io::Error) {
        let mut own = crate::support::sync::lock(&self.own);
        if own.error.is_none() {
            tracing::warn!(error = %e, "cannot measure the volume's free space; keeping the last state");
        }
        own.error = Some(e.to_string());
    }

    /// The leader's latest view of the other members' volumes (empty on a follower).
    pub fn set_low_members(&self, members: Vec<LowMember>) {
        let mut current = crate::support::sync::lock(&self.low_members);
        if *current != members {
            let pods: Vec<&str> = members.iter().map(|m| m.pod.as_str()).collect();
            if members.is_empty() {
                tracing::info!("every member's volume has room again");
            } else {
                tracing::warn!(?pods, "members' volumes below their reserve: refusing writes");
            }
            *current = members;
        }
    }

    /// True while this node's own volume is low.
    pub fn is_low(&self) -> bool {
        crate::support::sync::lock(&self.own).state.is_low()
    }

    /// Free bytes of the volume at the last measurement (0 before the first).
    pub fn free_bytes(&self) -> u64 {
        crate::support::sync::lock(&self.own).space.map(|s| s.free).unwrap_or(0)
    }

    /// The reserve in bytes (0 before the first measurement).
    pub fn reserve_bytes(&self) -> u64 {
        crate::support::sync::lock(&self.own).reserve
    }

    /// Why writes are refused now, if they are.
    pub fn refusal(&self) -> Option<(SpaceRefusal, String)> {
        {
            let own = crate::support::sync::lock(&self.own);
            if own.state.is_low() {
                let free = own.space.map(|s| s.free).unwrap_or(0);
                return Some((
                    SpaceRefusal::OwnVolume,
                    format!(
                        "volume of {} has {free} bytes free, below the reserve of {} (writes resume at {} bytes \
                         free); free space or grow the volume",
                        self.pod,
                        own.reserve,
                        resume_threshold(own.reserve)
                    ),
                ));
            }
        }
        let members = crate::support::sync::lock(&self.low_members);
        let first = members.first()?;
        let others = match members.len() {
            1 => String::new(),
            n => format!(" (and {} more members)", n - 1),
        };
        Some((
            SpaceRefusal::MemberVolume,
            format!(
                "volume of {} has {} bytes free, below its reserve of {}{others}: the cluster refuses writes until \
                 every member has room; free space or grow the volume",
                first.pod, first.free, first.reserve
            ),
        ))
    }

    /// Lets a write through, or refuses it with RESOURCE_EXHAUSTED (marked "not applied":
    /// it was never proposed) and counts the refusal.
    pub fn check_write(&self) -> Result<(), Status> {
        match self.refusal() {
            None => Ok(()),
            Some((reason, message)) => {
                self.metrics.record_space_refusal(reason);
                Err(petkv_client::outcome::not_applied(Status::resource_exhausted(message)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn guard(reserve: Reserve) -> SpaceGuard {
        SpaceGuard::new("petkv-1".into(), reserve, Arc::new(Metrics::new()))
    }

    fn space(free: u64) -> VolumeSpace {
        VolumeSpace { free, total: 1024 * MIB }
    }

    #[test]
    fn a_volume_turns_low_below_the_reserve_and_recovers_only_past_the_resume_threshold() {
        let mut h = Hysteresis::default();
        let reserve = 8 * MIB;
        assert_eq!(h.observe(9 * MIB, reserve), None, "above the reserve: ok, unchanged");
        assert_eq!(h.observe(reserve, reserve), None, "exactly the reserve is still enough");
        assert_eq!(h.observe(reserve - 1, reserve), Some(true));
        assert_eq!(h.observe(reserve + 1, reserve), None, "back above the reserve is not enough");
        assert_eq!(h.observe(resume_threshold(reserve) - 1, reserve), None);
        assert!(h.is_low());
        assert_eq!(h.observe(resume_threshold(reserve), reserve), Some(false));
        assert_eq!(h.observe(resume_threshold(reserve) - 1, reserve), None, "ok again until below the reserve");
        assert!(!h.is_low());
    }

    #[test]
    fn a_zero_reserve_never_refuses() {
        let mut h = Hysteresis::default();
        assert_eq!(h.observe(0, 0), None);
        let g = guard(Reserve::Bytes(0));
        g.observe(space(0));
        assert!(g.check_write().is_ok());
    }

    #[test]
    fn the_automatic_reserve_is_64_mib_or_a_tenth_of_a_small_volume() {
        assert_eq!(Reserve::Auto.bytes(10 * 1024 * MIB), DEFAULT_RESERVE_BYTES);
        assert_eq!(Reserve::Auto.bytes(100 * MIB), 10 * MIB);
        assert_eq!(Reserve::Bytes(5).bytes(100 * MIB), 5);
        assert_eq!("auto".parse::<Reserve>(), Ok(Reserve::Auto));
        assert_eq!("1048576".parse::<Reserve>(), Ok(Reserve::Bytes(MIB)));
        let err = "64MB".parse::<Reserve>().expect_err("not a number");
        assert!(err.contains("number of bytes"), "{err}");
    }

    #[test]
    fn writes_are_refused_while_the_own_volume_is_low_with_a_message_that_says_why() {
        let g = guard(Reserve::Bytes(8 * MIB));
        assert!(g.check_write().is_ok(), "nothing measured yet: no reason to refuse");
        g.observe(space(7 * MIB));
        let status = g.check_write().expect_err("low");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(petkv_client::outcome::is_not_applied(&status), "a refused write was never proposed");
        let expected = format!("volume of petkv-1 has {} bytes free, below the reserve of {}", 7 * MIB, 8 * MIB);
        assert!(status.message().contains(&expected), "{}", status.message());
        assert!(status.message().contains("free space or grow the volume"));
        g.observe(space(9 * MIB));
        assert!(g.check_write().is_err(), "hysteresis: 9 MiB is below the resume threshold of 10 MiB");
        g.observe(space(10 * MIB));
        assert!(g.check_write().is_ok());
        assert_eq!((g.free_bytes(), g.reserve_bytes()), (10 * MIB, 8 * MIB));
    }

    #[test]
    fn a_low_member_makes_the_leader_refuse_until_it_has_room() {
        let g = guard(Reserve::Bytes(MIB));
        g.observe(space(100 * MIB));
        let low = |pod: &str| LowMember { pod: pod.into(), free: 10, reserve: MIB };
        g.set_low_members(vec![low("petkv-2"), low("petkv-0")]);
        let status = g.check_write().expect_err("a member is low");
        assert!(status.message().contains("volume of petkv-2 has 10 bytes free"), "{}", status.message());
        assert!(status.message().contains("and 1 more members"), "{}", status.message());
        g.set_low_members(Vec::new());
        assert!(g.check_write().is_ok());
        let text = g.metrics.encode().expect("encode");
        assert!(text.contains(r#"petkv_space_refused_writes_total{reason="member_volume"} 1"#), "{text}");
    }
}
