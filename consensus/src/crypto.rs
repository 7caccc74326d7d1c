//! Keys, signatures and domain separation.
//!
//! Every signature in Tetrad is an ed25519 signature over
//! `blake3(tag || genesis_hash || borsh(body))` where `tag` names the kind of message. A signature
//! made for one chain (genesis hash) or one kind of message is therefore never valid for another.
//! Verification is strict (`verify_strict`) and weak (small-order) public keys are refused, so
//! every honest node reaches the same verdict on every signature, whether it checks one at a time
//! or in a batch.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::types::{Digest, HexError, decode_hex_array, hex_serde};

/// The kinds of signed statement. Each has its own tag, so signatures never cross kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Transaction,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    KeyRotation,
    ProofOfPossession,
}

impl Domain {
    /// Fixed-width tags: a tag is never a prefix of another.
    pub fn tag(self) -> &'static [u8; 16] {
        match self {
            Domain::Transaction => b"tetrad/tx/v1\0\0\0\0",
            Domain::PrePrepare => b"tetrad/ppre/v1\0\0",
            Domain::Prepare => b"tetrad/prep/v1\0\0",
            Domain::Commit => b"tetrad/cmit/v1\0\0",
            Domain::Checkpoint => b"tetrad/chkp/v1\0\0",
            Domain::ViewChange => b"tetrad/vchg/v1\0\0",
            Domain::NewView => b"tetrad/nvew/v1\0\0",
            Domain::KeyRotation => b"tetrad/krot/v1\0\0",
            Domain::ProofOfPossession => b"tetrad/kpop/v1\0\0",
        }
    }
}

/// The 32 bytes that are actually signed: `blake3(tag || genesis_hash || body_bytes)`.
pub fn signing_digest(domain: Domain, genesis_hash: &Digest, body_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.tag());
    hasher.update(genesis_hash.as_bytes());
    hasher.update(body_bytes);
    *hasher.finalize().as_bytes()
}

/// Borsh-encodes `body` and returns its signing digest.
pub fn signing_digest_of<T: BorshSerialize + ?Sized>(
    domain: Domain,
    genesis_hash: &Digest,
    body: &T,
) -> [u8; 32] {
    // Encoding into a Vec cannot fail for our types (no IO, no maps with failing keys).
    let bytes = borsh::to_vec(body).unwrap_or_default();
    signing_digest(domain, genesis_hash, &bytes)
}

/// Why a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not a valid ed25519 public key")]
    InvalidPublicKey,
    #[error("weak (small-order) ed25519 public key")]
    WeakPublicKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("a batch of {count} signatures does not verify")]
    BadBatch { count: usize },
}

type KeyCache = std::collections::HashMap<[u8; 32], Result<VerifyingKey, CryptoError>>;

/// Decompressed keys remembered (about 200 bytes each).
const VERIFYING_KEY_CACHE_MAX: usize = 1 << 17;

/// An ed25519 public key: an account address, a consensus key. Lowercase hex in JSON.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<PublicKey, HexError> {
        decode_hex_array::<32>(text).map(PublicKey)
    }

    /// Decompresses the key for verification, refusing invalid and weak keys.
    ///
    /// Decompression costs about a third of a signature verification, and the same senders sign
    /// again and again, so results are remembered in a bounded process-wide cache.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CryptoError> {
        static CACHE: std::sync::OnceLock<std::sync::Mutex<KeyCache>> = std::sync::OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&self.0) {
            return found.clone();
        }
        let result = self.decompress();
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFYING_KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(self.0, result.clone());
        result
    }

    fn decompress(&self) -> Result<VerifyingKey, CryptoError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(CryptoError::WeakPublicKey);
        }
        Ok(key)
    }

    /// Verifies `signature` over the signing digest of `body_bytes` in `domain` on this chain.
    pub fn verify(
        &self,
        domain: Domain,
        genesis_hash: &Digest,
        body_bytes: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let key = self.verifying_key()?;
        verify_with(&key, &signing_digest(domain, genesis_hash, body_bytes), signature)
    }
}

/// Verifies a signature over an already computed signing digest.
pub fn verify_with(key: &VerifyingKey, digest: &[u8; 32], signature: &Signature) -> Result<(), CryptoError> {
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(digest, &signature).map_err(|_| CryptoError::BadSignature)
}

/// Verifies many signatures at once. On success every one of them is valid; on failure the
/// caller falls back to [`verify_with`] one by one to find the culprits.
pub fn verify_batch(items: &[([u8; 32], VerifyingKey, Signature)]) -> Result<(), CryptoError> {
    if items.is_empty() {
        return Ok(());
    }
    let messages: Vec<&[u8]> = items.iter().map(|(digest, _, _)| &digest[..]).collect();
    let signatures: Vec<ed25519_dalek::Signature> =
        items.iter().map(|(_, _, signature)| ed25519_dalek::Signature::from_bytes(&signature.0)).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, key, _)| *key).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys)
        .map_err(|_| CryptoError::BadBatch { count: items.len() })
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

hex_serde!(PublicKey);

/// An ed25519 signature. Lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Signature, HexError> {
        decode_hex_array::<64>(text).map(Signature)
    }
}

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", &self.to_hex()[..8])
    }
}

hex_serde!(Signature);

/// An ed25519 secret key. Never printed, never serialized by accident.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs the signing digest of `body_bytes` in `domain` on this chain.
    pub fn sign(&self, domain: Domain, genesis_hash: &Digest, body_bytes: &[u8]) -> Signature {
        self.sign_digest(&signing_digest(domain, genesis_hash, body_bytes))
    }

    /// Signs a signing digest computed with [`signing_digest`].
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        Signature(self.0.sign(digest).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key().to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_seed([byte; 32])
    }

    #[test]
    fn signature_is_bound_to_domain_and_chain() {
        let secret = key(1);
        let chain_a = Digest::of(b"chain a");
        let chain_b = Digest::of(b"chain b");
        let signature = secret.sign(Domain::Prepare, &chain_a, b"body");
        let public = secret.public_key();
        assert_eq!(public.verify(Domain::Prepare, &chain_a, b"body", &signature), Ok(()));
        assert_eq!(
            public.verify(Domain::Commit, &chain_a, b"body", &signature),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify(Domain::Prepare, &chain_b, b"body", &signature),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify(Domain::Prepare, &chain_a, b"bodY", &signature),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            key(2).public_key().verify(Domain::Prepare, &chain_a, b"body", &signature),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn tags_are_distinct() {
        let domains = [
            Domain::Transaction,
            Domain::PrePrepare,
            Domain::Prepare,
            Domain::Commit,
            Domain::Checkpoint,
            Domain::ViewChange,
            Domain::NewView,
            Domain::KeyRotation,
            Domain::ProofOfPossession,
        ];
        for (i, a) in domains.iter().enumerate() {
            for b in &domains[i + 1..] {
                assert_ne!(a.tag(), b.tag(), "{a:?} and {b:?} share a tag");
            }
        }
    }

    #[test]
    fn batch_verification_agrees_with_single() {
        let chain = Digest::of(b"chain");
        let mut items = Vec::new();
        for byte in 1..=8u8 {
            let secret = key(byte);
            let digest = signing_digest(Domain::Transaction, &chain, &[byte]);
            let signature = secret.sign_digest(&digest);
            let verifying = secret.public_key().verifying_key().expect("valid key");
            items.push((digest, verifying, signature));
        }
        assert_eq!(verify_batch(&items), Ok(()));
        items[3].2 = items[4].2;
        assert_eq!(verify_batch(&items), Err(CryptoError::BadBatch { count: 8 }));
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) encodes as 1 followed by zeros.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey(identity).verifying_key().err(), Some(CryptoError::WeakPublicKey));
        // About half of all y coordinates are not on the curve; find one.
        let not_a_point = (2u8..=255)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                bytes
            })
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .expect("some small y is off the curve");
        assert_eq!(PublicKey(not_a_point).verifying_key().err(), Some(CryptoError::InvalidPublicKey));
    }
}
