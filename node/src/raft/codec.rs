//! Encoding of openraft's messages on the peer transport: postcard over openraft's serde
//! types, wrapped in a `RaftMessage` that names the encoding version.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pb::raft::{RaftMessage, TransportVersion};

/// The encoding this build speaks.
pub const VERSION: TransportVersion = TransportVersion::Openraft010A37Revisions;

/// Errors decoding a peer message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{}", version_mismatch(*.0))]
    Version(i32),
    #[error("cannot decode {what}: {source}")]
    Decode { what: &'static str, source: postcard::Error },
    #[error("cannot encode {what}: {source}")]
    Encode { what: &'static str, source: postcard::Error },
}

/// Says which side is newer: the newer binary must not be read by the older one.
fn version_mismatch(theirs: i32) -> String {
    let ours = VERSION as i32;
    if theirs > ours {
        format!("the peer speaks transport version {theirs}, newer than this node's {ours}: upgrade this node")
    } else {
        format!("the peer speaks transport version {theirs}, older than this node's {ours}: upgrade the peer")
    }
}

impl From<CodecError> for tonic::Status {
    fn from(e: CodecError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Who a `RaftMessage` is from and for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    /// The addressee's node id (0 on replies).
    pub target: u64,
    /// The newest start epoch of the addressee the sender has seen (0: none).
    pub target_epoch: u64,
    /// The sender's cluster id (empty on replies).
    pub cluster_id: &'a str,
    /// The sender's node id and start epoch.
    pub sender: u64,
    pub sender_epoch: u64,
}

/// Wraps a request or a reply into a `RaftMessage`.
pub fn pack<T: Serialize>(what: &'static str, envelope: Envelope<'_>, value: &T) -> Result<RaftMessage, CodecError> {
    let data = postcard::to_allocvec(value).map_err(|source| CodecError::Encode { what, source })?;
    Ok(RaftMessage {
        version: VERSION as i32,
        data: data.into(),
        target: envelope.target,
        cluster_id: envelope.cluster_id.to_string(),
        sender: envelope.sender,
        sender_epoch: envelope.sender_epoch,
        target_epoch: envelope.target_epoch,
    })
}

/// Unwraps a value from a `RaftMessage`, checking the version.
pub fn unpack<T: DeserializeOwned>(what: &'static str, msg: &RaftMessage) -> Result<T, CodecError> {
    check_version(msg.version)?;
    decode(what, &msg.data)
}

/// Checks a transport version number.
pub fn check_version(version: i32) -> Result<(), CodecError> {
    if version == VERSION as i32 {
        Ok(())
    } else {
        Err(CodecError::Version(version))
    }
}

/// Decodes raw postcard bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|source| CodecError::Decode { what, source })
}

/// Encodes raw postcard bytes.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_allocvec(value).map_err(|source| CodecError::Encode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_another_transport_version_is_refused_naming_the_newer_side() {
        assert!(check_version(VERSION as i32).is_ok());
        let newer = check_version(VERSION as i32 + 1).expect_err("newer").to_string();
        assert!(newer.contains("upgrade this node"), "{newer}");
        let older = check_version(0).expect_err("older").to_string();
        assert!(older.contains("upgrade the peer"), "{older}");
    }
}
