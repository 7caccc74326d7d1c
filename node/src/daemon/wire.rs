//! What peers send each other besides gossip: length-prefixed frames (consensus messages, block
//! sync requests and responses), and the limits on them, derived from genesis.
//!
//! A frame is a 4-byte little-endian length and that many bytes. The length is checked against
//! the limit before anything else is read, and the body is read in chunks into a buffer that
//! grows with what actually arrived: a length prefix alone never makes this node allocate.
//!
//! This file depends on nothing of the node (only borsh, futures and the consensus types), so
//! the fuzz targets in `fuzz/` compile it as it is.

use std::io;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::{AsyncRead, AsyncReadExt};
use tetrad_consensus::certificate::{Certificate, Signed};
use tetrad_consensus::view_messages::{NewView, PreparedCertificate, ViewChange};
use tetrad_consensus::wire::{MESSAGE_BYTES_MAX, Message};
use tetrad_consensus::{
    Batch, Checkpoint, Commit, CommitCertificate, Digest, Height, PrePrepare, Signature, ValidatorIndex, View,
};
use tetrad_ledger::Tx;

/// Bytes read into a frame's buffer at a time.
pub const FRAME_CHUNK_BYTES: usize = 64 << 10;
/// Slack on top of every derived limit (encoding details the estimate does not see).
pub const FRAME_SLACK_BYTES: usize = 4096;
/// Most blocks in one sync response.
pub const SYNC_BLOCKS_MAX: u64 = 64;
// A replica reads an answer holding every height it asked for as "the peer may have more":
// a server must not cut an answer shorter than a replica asks.
const _: () = assert!(SYNC_BLOCKS_MAX >= tetrad_consensus::FETCH_HEIGHTS_MAX);
/// Largest largest-blocks-worth in one sync response: this many of the largest blocks.
pub const SYNC_RESPONSE_BLOCKS_OF_MAX_SIZE: usize = 4;
/// Largest encoded sync request (two heights; generous).
pub const SYNC_REQUEST_BYTES_MAX: usize = 64;
/// The most borsh 1.x preallocates from one length prefix (a `Vec<u8>`: `len.min(1 MiB)` in
/// `de/mod.rs`; other vectors 4 KiB, `de/hint.rs`). Frames that can hold a byte vector are never
/// smaller, so that a forged length prefix never allocates more than a frame may hold.
pub const BORSH_PREALLOCATION_BYTES_MAX: usize = 1 << 20;

/// A range of committed blocks, asked of a peer.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncRequest {
    pub from: Height,
    pub to: Height,
}

/// A committed block as block sync sends it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncBlock {
    pub batch: Batch,
    pub certificate: CommitCertificate,
}

/// Every size limit of the peer-to-peer protocols, from genesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest consensus message: the larger of a pre-prepare with the largest batch and a
    /// new-view with a full window of prepared certificates from every validator (never more
    /// than the consensus crate decodes).
    pub consensus_bytes_max: usize,
    /// Largest encoded committed block (largest batch and a certificate of every validator).
    pub block_bytes_max: usize,
    /// Largest sync response: a few of the largest blocks.
    pub sync_response_bytes_max: usize,
    /// Largest gossip message of transactions.
    pub gossip_bytes_max: usize,
}

fn encoded_len<T: BorshSerialize>(value: &T) -> usize {
    borsh::object_length(value).unwrap_or(0)
}

fn signature() -> Signature {
    Signature([0; 64])
}

fn signed<T>(body: T) -> Signed<T> {
    Signed { body, signer: ValidatorIndex(0), signature: signature() }
}

fn signatures(validators: usize) -> Vec<(ValidatorIndex, Signature)> {
    (0..validators).map(|index| (ValidatorIndex(index as u16), signature())).collect()
}

impl FrameLimits {
    /// The limits for `validators` validators, a watermark window of `window` heights and
    /// batches of at most `batch_bytes_max` bytes. Sizes are measured on encoded messages of
    /// the largest shape, so they follow the message types.
    pub fn from_genesis(validators: usize, window: u64, batch_bytes_max: usize) -> FrameLimits {
        let validators = validators.max(1);
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        let pre_prepare = signed(PrePrepare { view: View(0), height: Height(0), digest: Digest::ZERO });
        let empty_batch = Batch::empty(View(0), ValidatorIndex(0));
        let proposal = encoded_len(&Message::PrePrepare {
            pre_prepare: pre_prepare.clone(),
            batch: std::sync::Arc::new(empty_batch.clone()),
        })
        .saturating_add(batch_bytes_max);
        let checkpoint = Certificate {
            statement: Checkpoint { height: Height(0), header_hash: Digest::ZERO, state_root: Digest::ZERO },
            signatures: signatures(validators),
        };
        let prepared = encoded_len(&PreparedCertificate {
            pre_prepare: pre_prepare.clone(),
            prepares: signatures(validators),
        });
        let view_change = encoded_len(&signed(ViewChange {
            new_view: View(0),
            checkpoint: Some(checkpoint),
            prepared: Vec::new(),
        }))
        .saturating_add(window.saturating_mul(prepared));
        let new_view = encoded_len(&Message::NewView(signed(NewView {
            view: View(0),
            view_changes: Vec::new(),
            pre_prepares: Vec::new(),
        })))
        .saturating_add(validators.saturating_mul(view_change))
        .saturating_add(window.saturating_mul(encoded_len(&pre_prepare)));
        let consensus_bytes_max = proposal
            .max(new_view)
            .saturating_add(FRAME_SLACK_BYTES)
            .clamp(BORSH_PREALLOCATION_BYTES_MAX, MESSAGE_BYTES_MAX);
        let commit = Commit { view: View(0), height: Height(0), digest: Digest::ZERO };
        let block_bytes_max = encoded_len(&SyncBlock {
            batch: empty_batch,
            certificate: Certificate { statement: commit, signatures: signatures(validators) },
        })
        .saturating_add(batch_bytes_max);
        FrameLimits {
            consensus_bytes_max,
            block_bytes_max,
            sync_response_bytes_max: block_bytes_max
                .saturating_mul(SYNC_RESPONSE_BLOCKS_OF_MAX_SIZE)
                .saturating_add(FRAME_SLACK_BYTES),
            gossip_bytes_max: batch_bytes_max.saturating_add(FRAME_SLACK_BYTES),
        }
    }
}

/// Reads one length-prefixed frame of at most `max` bytes. The length is refused before the
/// body is read, and the buffer grows only with bytes that arrived.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds {max}"),
        ));
    }
    let mut bytes = Vec::with_capacity(length.min(FRAME_CHUNK_BYTES));
    while bytes.len() < length {
        let start = bytes.len();
        let chunk = (length - start).min(FRAME_CHUNK_BYTES);
        if bytes.capacity() < start + chunk {
            // Double what arrived, never past the announced length.
            let target = (start * 2).max(start + chunk).min(length);
            bytes.reserve_exact(target - start);
        }
        bytes.resize(start + chunk, 0);
        io.read_exact(&mut bytes[start..]).await?;
    }
    Ok(bytes)
}

/// Decodes a whole borsh value from a frame's bytes (no trailing bytes).
pub fn decode<V: BorshDeserialize>(bytes: &[u8]) -> io::Result<V> {
    borsh::from_slice(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Reads a frame of at most `max` bytes and decodes it.
pub async fn read_framed<T: AsyncRead + Unpin + Send, V: BorshDeserialize>(
    io: &mut T,
    max: usize,
) -> io::Result<V> {
    decode(&read_frame(io, max).await?)
}

/// Most transactions in one gossip message.
pub const GOSSIP_TXS_MAX: usize = 1024;

/// A gossip message: transactions, and a number the publisher chooses anew for every publish
/// (its clock at start in nanoseconds, plus one per publish). Gossipsub's message id is the hash
/// of these bytes, so copies of one publish forwarded along the mesh share an id (and are
/// suppressed as duplicates), while a re-gossip of the same transactions is a new message.
/// Before, the message was the transactions alone, and gossipsub refused to publish a re-gossip
/// whose bytes equalled an earlier publish's: a lone waiting transaction was never sent again.
///
/// This gives a Byzantine peer nothing it did not have: it could always vary the bytes (order,
/// subsets). A receiver drops what its mempool already holds by hash before any signature check,
/// does not forward a message that admitted nothing, and checks at most a few messages per peer
/// at once.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct GossipMessage {
    pub txs: Vec<Tx>,
    pub publish: u64,
}

impl GossipMessage {
    /// The transactions of a gossip message, or `None` if it does not decode or holds more than
    /// [`GOSSIP_TXS_MAX`].
    pub fn decode_txs(bytes: &[u8]) -> Option<Vec<Tx>> {
        borsh::from_slice::<GossipMessage>(bytes)
            .ok()
            .map(|message| message.txs)
            .filter(|txs| txs.len() <= GOSSIP_TXS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_genesis_and_fit_the_largest_messages() {
        let small = FrameLimits::from_genesis(4, 64, 1 << 20);
        assert!(small.consensus_bytes_max > 1 << 20);
        assert!(small.consensus_bytes_max < (1 << 20) + 2 * FRAME_SLACK_BYTES + 1024);
        let large = FrameLimits::from_genesis(4, 64, 16 << 20);
        assert!(large.consensus_bytes_max > 16 << 20);
        // A new-view of many validators with full windows dominates, within what decode takes.
        let wide = FrameLimits::from_genesis(40, 1000, 1 << 20);
        assert_eq!(wide.consensus_bytes_max, MESSAGE_BYTES_MAX);
        // The largest block fits the block limit exactly.
        let batch =
            Batch { view: View(1), proposer: ValidatorIndex(3), timestamp_ms: 9, payload: vec![1; 1 << 20] };
        let certificate = Certificate {
            statement: Commit { view: View(1), height: Height(7), digest: batch.digest() },
            signatures: signatures(4),
        };
        let block = SyncBlock { batch, certificate };
        assert_eq!(encoded_len(&block), small.block_bytes_max);
        assert!(encoded_len(&vec![block; SYNC_RESPONSE_BLOCKS_OF_MAX_SIZE]) <= small.sync_response_bytes_max);
    }

    #[test]
    fn a_new_view_of_full_windows_fits() {
        let (validators, window) = (4usize, 64u64);
        let limits = FrameLimits::from_genesis(validators, window, 1024 + 8);
        assert_eq!(
            limits.consensus_bytes_max, BORSH_PREALLOCATION_BYTES_MAX,
            "never below borsh's preallocation"
        );
        let pre_prepare =
            |height: u64| signed(PrePrepare { view: View(1), height: Height(height), digest: Digest::ZERO });
        let view_change = signed(ViewChange {
            new_view: View(2),
            checkpoint: Some(Certificate {
                statement: Checkpoint {
                    height: Height(16),
                    header_hash: Digest::ZERO,
                    state_root: Digest::ZERO,
                },
                signatures: signatures(validators),
            }),
            prepared: (17..17 + window)
                .map(|height| PreparedCertificate {
                    pre_prepare: pre_prepare(height),
                    prepares: signatures(validators),
                })
                .collect(),
        });
        let new_view = Message::NewView(signed(NewView {
            view: View(2),
            view_changes: vec![view_change; validators],
            pre_prepares: (17..17 + window).map(pre_prepare).collect(),
        }));
        let size = new_view.encode().len();
        assert!(size <= limits.consensus_bytes_max, "{size} > {}", limits.consensus_bytes_max);
        // The estimate is exact for this shape: a window-wide new-view of 40 validators.
        let wide = FrameLimits::from_genesis(40, window, 1024 + 8);
        let estimate = wide.consensus_bytes_max - FRAME_SLACK_BYTES;
        let forty = Message::NewView(signed(NewView {
            view: View(2),
            view_changes: vec![
                signed(ViewChange {
                    new_view: View(2),
                    checkpoint: Some(Certificate {
                        statement: Checkpoint {
                            height: Height(16),
                            header_hash: Digest::ZERO,
                            state_root: Digest::ZERO
                        },
                        signatures: signatures(40),
                    }),
                    prepared: (17..17 + window)
                        .map(|height| PreparedCertificate {
                            pre_prepare: pre_prepare(height),
                            prepares: signatures(40)
                        })
                        .collect(),
                });
                40
            ],
            pre_prepares: (17..17 + window).map(pre_prepare).collect(),
        }));
        assert_eq!(forty.encode().len(), estimate);
    }

    #[tokio::test]
    async fn a_length_prefix_alone_allocates_nothing_and_oversized_frames_are_refused() {
        // 4 GiB announced, over the limit: refused before reading on.
        let mut huge = futures::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        let error = read_frame(&mut huge, 1 << 20).await.expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // 1 MiB announced, within the limit, 10 bytes sent: an error, not a 1 MiB buffer.
        let mut short = (1u32 << 20).to_le_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        let error = read_frame(&mut futures::io::Cursor::new(short), 1 << 20).await.expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        // A whole frame of several chunks arrives intact.
        let body: Vec<u8> = (0..200_000u32).map(|index| index as u8).collect();
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&body);
        let read = read_frame(&mut futures::io::Cursor::new(framed), 1 << 20).await.expect("frame");
        assert_eq!(read, body);
        assert!(read.capacity() <= body.len(), "the buffer never outgrows the frame");
    }
}
