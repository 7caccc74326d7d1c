//! Signed transactions and their static checks.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tetrad_consensus::crypto::{self, Domain};
use tetrad_consensus::{Digest, PublicKey, SecretKey, Signature};

/// An account address: the account's ed25519 public key.
pub type Address = PublicKey;

/// Largest encoded transaction accepted anywhere (admission, pre-prepare checks, decoding).
pub const TX_BYTES_MAX: usize = 1024;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxKind {
    /// Moves `amount` from the sender to `to`.
    Transfer { to: Address, amount: u64 },
    /// Replaces validator `validator`'s consensus key with `new_key`. Sent (and signed) by the
    /// validator's current consensus key; `proof_of_possession` is `new_key`'s signature over
    /// (genesis hash, validator index, old key, new key). It takes effect at the activation
    /// boundary after the block that commits it.
    RotateValidatorKey {
        validator: tetrad_consensus::ValidatorIndex,
        new_key: PublicKey,
        proof_of_possession: Signature,
    },
}

impl TxKind {
    /// What the transaction moves out of the sender's balance.
    pub fn amount(&self) -> u64 {
        match self {
            TxKind::Transfer { amount, .. } => *amount,
            TxKind::RotateValidatorKey { .. } => 0,
        }
    }
}

/// The part of a transaction that its sender signs.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxBody {
    /// The chain this transaction is for: the first four bytes of the genesis hash. It lets a
    /// node tell a transaction meant for another chain from one with a bad signature; the
    /// signature itself binds the full genesis hash.
    pub chain: u32,
    pub from: Address,
    /// Must equal the sender's account nonce when the transaction executes (the lecture's
    /// per-client timestamp rule): a replay or an out-of-order transaction never executes.
    pub nonce: u64,
    pub kind: TxKind,
}

/// A signed transaction. In JSON its body fields and the signature sit side by side:
/// `{"chain", "from", "nonce", "kind": {"type": "transfer", "to", "amount"}, "signature"}`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(from = "TxJson", into = "TxJson")]
pub struct Tx {
    pub body: TxBody,
    pub signature: Signature,
}

/// The JSON shape of [`Tx`]. (`#[serde(flatten)]` would lose the field path in errors, so a
/// bad `amount` would not be named.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxJson {
    chain: u32,
    from: Address,
    nonce: u64,
    kind: TxKind,
    signature: Signature,
}

impl From<TxJson> for Tx {
    fn from(json: TxJson) -> Tx {
        Tx {
            body: TxBody { chain: json.chain, from: json.from, nonce: json.nonce, kind: json.kind },
            signature: json.signature,
        }
    }
}

impl From<Tx> for TxJson {
    fn from(tx: Tx) -> TxJson {
        TxJson {
            chain: tx.body.chain,
            from: tx.body.from,
            nonce: tx.body.nonce,
            kind: tx.body.kind,
            signature: tx.signature,
        }
    }
}

/// Why a transaction failed its static checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is {size} bytes, the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("transaction does not decode: {0}")]
    Malformed(String),
    #[error("transaction is for chain {found:08x}, this chain is {expected:08x}")]
    WrongChain { expected: u32, found: u32 },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("sender address is not a valid ed25519 public key: {0}")]
    BadSender(crypto::CryptoError),
    #[error("signature does not verify for sender {from} on this chain")]
    BadSignature { from: Address },
}

impl Tx {
    pub fn sign(body: TxBody, key: &SecretKey, genesis_hash: &Digest) -> Tx {
        let signature = key.sign_digest(&body.signing_digest(genesis_hash));
        Tx { body, signature }
    }

    /// The transaction hash: blake3 over a tag and the full encoding, signature included.
    pub fn hash(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tetrad/txid/v1\0\0");
        // blake3::Hasher is an io::Write: encode straight into it, no buffer. Writing to a
        // hasher cannot fail.
        let _ = borsh::to_writer(&mut hasher, self);
        Digest(*hasher.finalize().as_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    /// Decodes one transaction, refusing oversized input and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Tx, TxError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxError::TooLarge { size: bytes.len(), max: TX_BYTES_MAX });
        }
        borsh::from_slice(bytes).map_err(|error| TxError::Malformed(error.to_string()))
    }

    pub fn check_chain(&self, genesis_hash: &Digest) -> Result<(), TxError> {
        let expected = chain_tag(genesis_hash);
        if self.body.chain != expected {
            return Err(TxError::WrongChain { expected, found: self.body.chain });
        }
        Ok(())
    }

    /// Checks everything that does not depend on state, except the signature (which callers
    /// verify in batches with [`verify_signatures`]).
    pub fn check_shape(&self) -> Result<(), TxError> {
        let size = self.encode().len();
        if size > TX_BYTES_MAX {
            return Err(TxError::TooLarge { size, max: TX_BYTES_MAX });
        }
        match &self.body.kind {
            TxKind::Transfer { amount, .. } if *amount == 0 => Err(TxError::ZeroAmount),
            TxKind::Transfer { .. } | TxKind::RotateValidatorKey { .. } => Ok(()),
        }
    }

    /// All static checks: shape, chain and signature.
    pub fn check(&self, genesis_hash: &Digest) -> Result<(), TxError> {
        self.check_shape()?;
        self.check_chain(genesis_hash)?;
        let key = self.body.from.verifying_key().map_err(TxError::BadSender)?;
        crypto::verify_with(&key, &self.body.signing_digest(genesis_hash), &self.signature)
            .map_err(|_| TxError::BadSignature { from: self.body.from })
    }
}

/// The chain tag of a genesis hash (see [`TxBody::chain`]).
pub fn chain_tag(genesis_hash: &Digest) -> u32 {
    let bytes = genesis_hash.as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl TxBody {
    pub fn signing_digest(&self, genesis_hash: &Digest) -> [u8; 32] {
        crypto::signing_digest_of(Domain::Transaction, genesis_hash, self)
    }
}

/// Runs every static check on `txs`, verifying signatures in one batch. Returns one result per
/// transaction, in order. When the batch fails, each signature is checked alone so that only
/// the bad ones are refused.
pub fn check_all(txs: &[Tx], genesis_hash: &Digest) -> Vec<Result<(), TxError>> {
    let mut results: Vec<Result<(), TxError>> = Vec::with_capacity(txs.len());
    let mut items = Vec::with_capacity(txs.len());
    let mut positions = Vec::with_capacity(txs.len());
    for (position, tx) in txs.iter().enumerate() {
        let checked =
            tx.check_shape().and_then(|()| tx.body.from.verifying_key().map_err(TxError::BadSender));
        match checked {
            Ok(key) => {
                items.push((tx.body.signing_digest(genesis_hash), key, tx.signature));
                positions.push(position);
                results.push(Ok(()));
            }
            Err(error) => results.push(Err(error)),
        }
    }
    if crypto::verify_batch(&items).is_err() {
        for ((digest, key, signature), position) in items.iter().zip(&positions) {
            if crypto::verify_with(key, digest, signature).is_err() {
                results[*position] = Err(TxError::BadSignature { from: txs[*position].body.from });
            }
        }
    }
    results
}

/// Encodes the transactions of a batch payload.
pub fn encode_payload(txs: &[Tx]) -> Vec<u8> {
    borsh::to_vec(txs).unwrap_or_default()
}

/// Decodes a batch payload. An empty payload is an empty batch.
pub fn decode_payload(payload: &[u8]) -> Result<Vec<Tx>, TxError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    borsh::from_slice(payload).map_err(|error| TxError::Malformed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(key: &SecretKey, nonce: u64, amount: u64, chain: &Digest) -> Tx {
        let body = TxBody {
            chain: chain_tag(chain),
            from: key.public_key(),
            nonce,
            kind: TxKind::Transfer { to: SecretKey::from_seed([7; 32]).public_key(), amount },
        };
        Tx::sign(body, key, chain)
    }

    #[test]
    fn static_checks() {
        let chain = Digest::of(b"chain");
        let key = SecretKey::from_seed([1; 32]);
        let tx = transfer(&key, 0, 5, &chain);
        assert_eq!(tx.check(&chain), Ok(()));
        let other = Digest::of(b"other");
        assert_eq!(
            tx.check(&other),
            Err(TxError::WrongChain { expected: chain_tag(&other), found: chain_tag(&chain) })
        );
        let mut relabelled = tx.clone();
        relabelled.body.chain = chain_tag(&other);
        assert_eq!(relabelled.check(&other), Err(TxError::BadSignature { from: key.public_key() }));
        assert_eq!(transfer(&key, 0, 0, &chain).check(&chain), Err(TxError::ZeroAmount));
        let mut tampered = tx.clone();
        tampered.body.nonce = 1;
        assert_eq!(tampered.check(&chain), Err(TxError::BadSignature { from: key.public_key() }));
    }

    #[test]
    fn decode_refuses_garbage_trailing_bytes_and_oversize() {
        let chain = Digest::of(b"chain");
        let tx = transfer(&SecretKey::from_seed([1; 32]), 3, 5, &chain);
        let bytes = tx.encode();
        assert_eq!(Tx::decode(&bytes), Ok(tx));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(Tx::decode(&trailing), Err(TxError::Malformed(_))));
        assert!(matches!(Tx::decode(&bytes[..10]), Err(TxError::Malformed(_))));
        assert!(matches!(Tx::decode(&vec![0; TX_BYTES_MAX + 1]), Err(TxError::TooLarge { .. })));
    }

    #[test]
    fn batch_check_names_only_the_bad_ones() {
        let chain = Digest::of(b"chain");
        let mut txs: Vec<Tx> =
            (1..=6u8).map(|seed| transfer(&SecretKey::from_seed([seed; 32]), 0, 1, &chain)).collect();
        txs[2].signature = txs[3].signature;
        txs[4] = transfer(&SecretKey::from_seed([9; 32]), 0, 0, &chain);
        let results = check_all(&txs, &chain);
        assert_eq!(results[0], Ok(()));
        assert!(matches!(results[2], Err(TxError::BadSignature { .. })));
        assert_eq!(results[3], Ok(()));
        assert_eq!(results[4], Err(TxError::ZeroAmount));
    }
}
