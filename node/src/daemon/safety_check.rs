//! Before a validator signs anything: are its safety records (`safety/`) whole?
//!
//! The safety records are what stops a restarted validator from signing two different things
//! for one (view, height). A missing, emptied or older `safety/` (deleted, or restored from an
//! old backup) silently removes that protection. The chain's database tells part of what the
//! validator signed: every block's commit certificate names its signers. Because a replica
//! makes its record durable before it sends the commit, a certificate in `data/` that names this
//! validator at (height h, view v) is always covered by honest records: by the `Prepared`
//! record of (h, v), or by a stable checkpoint at or above h (which replaced the records below
//! it in the same write), or by a view above v (the replica never votes in an older view). A
//! certificate that the records do not cover proves the records are older than `data/`.
//!
//! - First start: no records and `data/` still at genesis. The store is created.
//! - Missing (no database) or empty (no records and no owner note) beside a `data/` past
//!   genesis: the validator ran before and its records are gone. Refused.
//! - Behind: a certificate in `data/` names this validator and the records do not cover it.
//!   Refused.
//! - Another owner (another chain or validator index): refused, always.
//!
//! `--accept-double-sign-risk` starts anyway; the driver then keeps the validator silent (it
//! signs nothing) until its low watermark is past every height it might have signed (see
//! `driver.rs`, "safety margin"). The certificates only hold the first quorum of commits, so a
//! clean scan is a lower bound, not a proof: the README says to restore only the newest
//! `safety/`, and never an older one without the flag.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use borsh::{BorshDeserialize, BorshSerialize};
use tetrad_consensus::safety::{Restored, restore};
use tetrad_consensus::{Digest, Height, ValidatorIndex, View};
use tetrad_ledger::{SafetyStore, Store};

use crate::config::Home;

/// The flag that starts a validator whose safety records are missing or older than its chain.
pub const ACCEPT_RISK_FLAG: &str = "--accept-double-sign-risk";

/// The note that says whose records a safety store holds.
const OWNER_NOTE: &str = "owner";

#[derive(Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct Owner {
    genesis_hash: Digest,
    validator: ValidatorIndex,
}

/// What the safety records remember having signed.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// Heights at or below the last stable checkpoint are final: nothing is signed there again.
    stable: Height,
    /// The replica never votes in a view below this one.
    view: View,
    /// (height, view) of every prepared certificate kept (each written before its commit).
    prepared: BTreeSet<(Height, View)>,
    /// The highest height any record mentions.
    highest: Height,
}

impl Coverage {
    pub fn of(restored: &Restored) -> Coverage {
        let stable = restored.stable.as_ref().map(|cp| cp.statement.height).unwrap_or(Height::GENESIS);
        let view_change = restored.view_change.as_ref().map(|vc| vc.body.new_view).unwrap_or_default();
        let prepared: BTreeSet<(Height, View)> =
            restored.prepared.iter().map(|certificate| (certificate.height(), certificate.view())).collect();
        let accepted = restored.accepted.iter().map(|(pre_prepare, _)| pre_prepare.body.height);
        let highest = prepared.iter().map(|(height, _)| *height).chain(accepted).fold(stable, Height::max);
        Coverage { stable, view: restored.view.max(view_change), prepared, highest }
    }

    /// Whether the records account for a commit this validator signed at (height, view).
    pub fn covers(&self, height: Height, view: View) -> bool {
        height <= self.stable || view < self.view || self.prepared.contains(&(height, view))
    }
}

/// What the scan of `data/` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The highest (height, view) whose certificate names this validator.
    pub highest_signed: Option<(Height, View)>,
    /// The highest (height, view) it signed that the records do not cover.
    pub uncovered: Option<(Height, View)>,
}

/// Reads the certificates of `data/` from the head down to the records' stable checkpoint and
/// stops at the first signature of `me` that the records do not cover.
pub fn scan(store: &Store, me: ValidatorIndex, coverage: &Coverage) -> Result<Scan> {
    let mut found = Scan::default();
    let mut height = store.head().height;
    while height > coverage.stable {
        let certificate = store
            .certificate(height)
            .with_context(|| format!("reading the commit certificate of block {height}"))?
            .with_context(|| format!("block {height} has no commit certificate"))?;
        if certificate.signers().any(|signer| signer == me) {
            let view = certificate.statement.view;
            found.highest_signed.get_or_insert((height, view));
            if !coverage.covers(height, view) {
                found.uncovered = Some((height, view));
                break;
            }
        }
        height = Height(height.0 - 1);
    }
    Ok(found)
}

/// The safety records of a validator, checked against `data/`.
pub struct Checked {
    pub safety: SafetyStore,
    pub restored: Restored,
    /// With the flag: the highest height this node knows it might have signed (the margin
    /// starts from it). `None`: the records are whole, sign as usual.
    pub margin_from: Option<Height>,
}

/// Opens (or, on a first start, creates) the safety records of validator `me` and checks them
/// against `store`. Refuses, with what to do, when they are missing, empty or behind and
/// `accept_risk` is false.
pub fn open_checked(
    home: &Home,
    store: &Store,
    genesis_hash: Digest,
    me: ValidatorIndex,
    params: &tetrad_genesis::ConsensusParams,
    accept_risk: bool,
) -> Result<Checked> {
    let path = home.safety();
    let head = store.head().height;
    let owner = Owner { genesis_hash, validator: me };
    let existed = SafetyStore::exists(&path);
    if !existed && head > Height::GENESIS && !accept_risk {
        let coverage = Coverage::default();
        let found = scan(store, me, &coverage)?;
        let what = if path.exists() { "is empty (no database in it)" } else { "is missing" };
        bail!("{}", refusal(&path, what, head, &found, params));
    }
    let safety = SafetyStore::open(&path)
        .with_context(|| format!("opening the safety records in {}", path.display()))?;
    let records = safety.records()?;
    let restored = restore(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        .map_err(|error| anyhow::anyhow!("{}: the safety records are unreadable: {error}", path.display()))?;
    match safety.note(OWNER_NOTE)? {
        Some(bytes) => {
            let found = Owner::try_from_slice(&bytes).ok();
            if found.as_ref() != Some(&owner) {
                bail!(
                    "{} holds the safety records of {}, not of validator {me} of this chain (genesis \
                     {genesis_hash}); move it away and put this validator's own safety/ in its place",
                    path.display(),
                    found
                        .map(|found| format!(
                            "validator {} of genesis {}",
                            found.validator, found.genesis_hash
                        ))
                        .unwrap_or_else(|| "an unknown owner".into()),
                );
            }
        }
        None if records.is_empty() && head > Height::GENESIS && !accept_risk => {
            let found = scan(store, me, &Coverage::default())?;
            bail!("{}", refusal(&path, "is empty (no records)", head, &found, params));
        }
        // A first start, or records of a version that did not write the note yet.
        None => safety.set_note(OWNER_NOTE, &borsh::to_vec(&owner)?)?,
    }
    let coverage = Coverage::of(&restored);
    let found = scan(store, me, &coverage)?;
    if let Some((height, view)) = found.uncovered
        && !accept_risk
    {
        bail!(
            "{} is older than {}: block {height} (view {view}) holds a commit certificate that this \
             validator signed, but its safety records do not cover it (their last stable checkpoint \
             is {}, their view {}). safety/ was restored from an older backup or copied from \
             elsewhere, and this validator could sign conflicting messages. Put back the newest \
             safety/ (never an older one), or, if it is lost, start with {ACCEPT_RISK_FLAG}: the node \
             then stays silent until the network is {} heights past anything it may have signed.",
            path.display(),
            home.data().display(),
            coverage.stable,
            coverage.view,
            params.watermark_window + params.checkpoint_interval,
        );
    }
    let margin_from = accept_risk.then(|| {
        let signed = found.highest_signed.map(|(height, _)| height).unwrap_or_default();
        head.max(signed).max(coverage.highest)
    });
    Ok(Checked { safety, restored, margin_from })
}

fn refusal(
    path: &Path,
    what: &str,
    head: Height,
    found: &Scan,
    params: &tetrad_genesis::ConsensusParams,
) -> String {
    let signed = match found.highest_signed {
        Some((height, view)) => format!(
            "; its commit certificates show this validator signing up to block {height} (view {view})"
        ),
        None => String::new(),
    };
    format!(
        "{} {what}, but the chain database beside it holds {head} blocks{signed}. This validator \
         ran before and its record of what it signed is gone: it could sign conflicting messages \
         (double-sign). Put back the newest safety/ from where it was moved or backed up (never an \
         older copy), or, if it is lost, start with {ACCEPT_RISK_FLAG}: the node then stays silent \
         until the network is {} heights past anything it may have signed. Deleting data/ does not \
         help: only safety/ knows what was signed.",
        path.display(),
        params.watermark_window + params.checkpoint_interval,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(stable: u64, view: u64, prepared: &[(u64, u64)]) -> Coverage {
        Coverage {
            stable: Height(stable),
            view: View(view),
            prepared: prepared.iter().map(|&(h, v)| (Height(h), View(v))).collect(),
            highest: Height(stable),
        }
    }

    #[test]
    fn covered_by_the_stable_checkpoint_a_prepared_record_or_a_later_view() {
        let records = coverage(8, 2, &[(9, 2), (10, 3)]);
        assert!(records.covers(Height(8), View(5)), "final heights are covered");
        assert!(records.covers(Height(12), View(1)), "an older view is never voted in again");
        assert!(records.covers(Height(9), View(2)));
        assert!(records.covers(Height(10), View(3)));
        assert!(!records.covers(Height(9), View(3)), "another view of a prepared height");
        assert!(!records.covers(Height(11), View(2)), "a height the records never saw");
        assert!(!Coverage::default().covers(Height(1), View(0)));
        assert!(Coverage::default().covers(Height(0), View(0)));
    }
}
