//! The node's libp2p identity, derived from its network key file.

use anyhow::{Context, Result};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use tetrad_genesis::KeyFile;

/// The libp2p key pair of an ed25519 key (the network key).
pub fn network_keypair(key: &KeyFile) -> Result<Keypair> {
    let mut seed = key.secret.seed();
    Keypair::ed25519_from_bytes(&mut seed).context("network key is not a valid ed25519 secret key")
}

/// The peer id of an ed25519 network key.
pub fn peer_id(key: &KeyFile) -> Result<PeerId> {
    Ok(network_keypair(key)?.public().to_peer_id())
}
