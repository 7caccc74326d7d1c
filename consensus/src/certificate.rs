//! Signed statements and quorum certificates.
//!
//! A [`Signed`] statement is one validator's signature over a borsh-encoded statement in the
//! statement's own domain. A [`Certificate`] is a statement with the signatures of a quorum of
//! *distinct* validators: a commit certificate (2f+1 commits for one view, height and digest) is
//! what makes a block final; a checkpoint certificate (2f+1 checkpoints for one height, header
//! hash and state root) is the finalized header a light client trusts.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError, Domain, SecretKey, Signature};
use crate::messages::{Checkpoint, Commit};
use crate::types::{Height, ValidatorIndex};
use crate::validators::ValidatorSet;

/// A statement that validators sign: its domain tag and the height whose validator set signs it.
pub trait Statement: BorshSerialize {
    const DOMAIN: Domain;

    /// The height whose validator set (epoch) holds the signer's key.
    fn key_height(&self) -> Height;

    /// The 32 bytes a validator signs for this statement on the chain of `set`.
    fn signing_digest(&self, set: &ValidatorSet) -> [u8; 32] {
        crypto::signing_digest_of(Self::DOMAIN, set.genesis_hash(), self)
    }
}

/// Why a signed statement or a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signer {signer} is not one of the {n} validators")]
    NotAMember { signer: ValidatorIndex, n: usize },
    #[error("signer {signer} appears more than once")]
    DuplicateSigner { signer: ValidatorIndex },
    #[error("{found} distinct signatures, a quorum needs {needed}")]
    TooFewSignatures { found: usize, needed: usize },
    #[error("{found} signatures, more than the {n} validators")]
    TooManySignatures { found: usize, n: usize },
    #[error("signature of validator {signer} does not verify")]
    BadSignature { signer: ValidatorIndex },
}

/// One validator's signature over a statement.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signer: ValidatorIndex,
    pub signature: Signature,
}

impl<T: Statement> Signed<T> {
    pub fn sign(body: T, signer: ValidatorIndex, key: &SecretKey, set: &ValidatorSet) -> Signed<T> {
        let signature = key.sign_digest(&body.signing_digest(set));
        Signed { body, signer, signature }
    }

    /// Checks that the signer is a member of `set` (the set of the statement's height) and that
    /// the signature is its key's over exactly this statement on this chain.
    pub fn verify(&self, set: &ValidatorSet) -> Result<(), SignatureError> {
        let Some(key) = set.verifying_key(self.signer) else {
            return Err(SignatureError::NotAMember { signer: self.signer, n: set.n() });
        };
        crypto::verify_with(key, &self.body.signing_digest(set), &self.signature)
            .map_err(|_| SignatureError::BadSignature { signer: self.signer })
    }
}

/// A statement with the signatures of a quorum of distinct validators.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Certificate<T> {
    pub statement: T,
    /// Sorted by signer; each signer at most once.
    pub signatures: Vec<(ValidatorIndex, Signature)>,
}

/// 2f+1 commits for one (view, height, digest): the proof that a block is final.
pub type CommitCertificate = Certificate<Commit>;
/// 2f+1 checkpoints for one (height, header hash, state root): a finalized header.
pub type CheckpointCertificate = Certificate<Checkpoint>;

impl<T: Statement + Clone + PartialEq> Certificate<T> {
    /// Builds a certificate from signed votes for `statement`, keeping one vote per signer.
    /// Votes for other statements are ignored; the caller checks the result with `verify`.
    pub fn from_votes<'a>(statement: T, votes: impl IntoIterator<Item = &'a Signed<T>>) -> Certificate<T>
    where
        T: 'a,
    {
        let mut signatures: Vec<(ValidatorIndex, Signature)> = votes
            .into_iter()
            .filter(|vote| vote.body == statement)
            .map(|vote| (vote.signer, vote.signature))
            .collect();
        signatures.sort_by_key(|(signer, _)| *signer);
        signatures.dedup_by_key(|(signer, _)| *signer);
        Certificate { statement, signatures }
    }

    /// Demands at least a quorum of distinct members of `set` with valid signatures over exactly
    /// this statement on `set`'s chain.
    pub fn verify(&self, set: &ValidatorSet) -> Result<(), SignatureError> {
        if self.signatures.len() > set.n() {
            return Err(SignatureError::TooManySignatures { found: self.signatures.len(), n: set.n() });
        }
        let mut seen = vec![false; set.n()];
        for (signer, _) in &self.signatures {
            if !set.contains(*signer) {
                return Err(SignatureError::NotAMember { signer: *signer, n: set.n() });
            }
            if std::mem::replace(&mut seen[signer.as_usize()], true) {
                return Err(SignatureError::DuplicateSigner { signer: *signer });
            }
        }
        if self.signatures.len() < set.quorum() {
            return Err(SignatureError::TooFewSignatures {
                found: self.signatures.len(),
                needed: set.quorum(),
            });
        }
        let digest = self.statement.signing_digest(set);
        let mut items = Vec::with_capacity(self.signatures.len());
        for (signer, signature) in &self.signatures {
            let Some(key) = set.verifying_key(*signer) else {
                return Err(SignatureError::NotAMember { signer: *signer, n: set.n() });
            };
            items.push((digest, *key, *signature));
        }
        if crypto::verify_batch(&items).is_ok() {
            return Ok(());
        }
        // Find the culprit so the error names it.
        for ((signer, _), (digest, key, signature)) in self.signatures.iter().zip(&items) {
            if let Err(CryptoError::BadSignature) = crypto::verify_with(key, digest, signature) {
                return Err(SignatureError::BadSignature { signer: *signer });
            }
        }
        // Batch verification failed but each signature verifies alone: refuse all the same.
        Err(SignatureError::BadSignature { signer: self.signatures[0].0 })
    }

    pub fn signers(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        self.signatures.iter().map(|(signer, _)| *signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PublicKey;
    use crate::types::{Digest, View};

    struct Fixture {
        keys: Vec<SecretKey>,
        set: ValidatorSet,
    }

    fn fixture(n: u8, chain: &[u8]) -> Fixture {
        let keys: Vec<SecretKey> = (1..=n).map(|byte| SecretKey::from_seed([byte; 32])).collect();
        let publics: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let set = ValidatorSet::new(Digest::of(chain), publics).expect("valid set");
        Fixture { keys, set }
    }

    fn commit() -> Commit {
        Commit { view: View(3), height: Height(7), digest: Digest::of(b"batch") }
    }

    fn votes(fixture: &Fixture, signers: &[u16], statement: &Commit) -> Vec<Signed<Commit>> {
        signers
            .iter()
            .map(|&signer| {
                let key = &fixture.keys[usize::from(signer)];
                Signed::sign(statement.clone(), ValidatorIndex(signer), key, &fixture.set)
            })
            .collect()
    }

    #[test]
    fn quorum_of_distinct_members_verifies() {
        let fixture = fixture(4, b"chain");
        let certificate = Certificate::from_votes(commit(), &votes(&fixture, &[2, 0, 3], &commit()));
        assert_eq!(certificate.verify(&fixture.set), Ok(()));
        assert_eq!(
            certificate.signers().collect::<Vec<_>>(),
            vec![ValidatorIndex(0), ValidatorIndex(2), ValidatorIndex(3)]
        );
    }

    #[test]
    fn two_f_signatures_are_refused() {
        let fixture = fixture(4, b"chain");
        let certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1], &commit()));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::TooFewSignatures { found: 2, needed: 3 })
        );
        let fixture = fixture_7();
        let certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1, 2, 3], &commit()));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::TooFewSignatures { found: 4, needed: 5 })
        );
    }

    fn fixture_7() -> Fixture {
        fixture(7, b"chain")
    }

    #[test]
    fn duplicated_signer_is_refused() {
        let fixture = fixture(4, b"chain");
        let mut certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1], &commit()));
        let again = certificate.signatures[1];
        certificate.signatures.push(again);
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::DuplicateSigner { signer: ValidatorIndex(1) })
        );
    }

    #[test]
    fn non_member_is_refused() {
        let fixture = fixture(4, b"chain");
        let outsider = fixture_7();
        let mut certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1], &commit()));
        // Validator 5 exists only in the 7-validator set.
        let foreign = votes(&outsider, &[5], &commit());
        certificate.signatures.push((foreign[0].signer, foreign[0].signature));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::NotAMember { signer: ValidatorIndex(5), n: 4 })
        );
        // An outsider's key under a member's index does not verify either.
        let mut certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1], &commit()));
        let forged = Signed::sign(commit(), ValidatorIndex(2), &SecretKey::from_seed([99; 32]), &fixture.set);
        certificate.signatures.push((forged.signer, forged.signature));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::BadSignature { signer: ValidatorIndex(2) })
        );
    }

    #[test]
    fn signature_for_another_chain_or_kind_is_refused() {
        let other_chain = fixture(4, b"other chain");
        let fixture = fixture(4, b"chain");
        // Same keys, other genesis hash.
        let certificate = Certificate::from_votes(commit(), &votes(&other_chain, &[0, 1, 2], &commit()));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::BadSignature { signer: ValidatorIndex(0) })
        );
        // Same bytes signed as a prepare: the domain tag differs.
        let statement = commit();
        let mut signatures = Vec::new();
        for signer in 0..3u16 {
            let prepare = crate::messages::Prepare {
                view: statement.view,
                height: statement.height,
                digest: statement.digest,
            };
            let vote = Signed::sign(
                prepare,
                ValidatorIndex(signer),
                &fixture.keys[usize::from(signer)],
                &fixture.set,
            );
            signatures.push((vote.signer, vote.signature));
        }
        let certificate = Certificate { statement, signatures };
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::BadSignature { signer: ValidatorIndex(0) })
        );
    }

    #[test]
    fn signature_over_another_statement_is_refused() {
        let fixture = fixture(4, b"chain");
        let mut other = commit();
        other.digest = Digest::of(b"another batch");
        let mut certificate = Certificate::from_votes(commit(), &votes(&fixture, &[0, 1], &commit()));
        let stray = &votes(&fixture, &[3], &other)[0];
        certificate.signatures.push((stray.signer, stray.signature));
        assert_eq!(
            certificate.verify(&fixture.set),
            Err(SignatureError::BadSignature { signer: ValidatorIndex(3) })
        );
    }
}
