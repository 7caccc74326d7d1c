//! Who may connect to the peer-to-peer port, and who may speak consensus on it.
//!
//! This is a permissioned chain: the validators' peer ids are in genesis. So:
//!
//! - A **validator** (its peer id is a genesis validator's) is always admitted, with at most
//!   [`CONNECTIONS_PER_VALIDATOR_MAX`] connections, and its connections are kept alive.
//! - Any other peer is a **full node**: admitted while fewer than [`FULL_NODES_MAX`] full nodes
//!   are connected, at most [`FULL_NODES_PER_ADDRESS_MAX`] from one IP address, one connection
//!   each, and not while it is banned (a full node that forwarded an invalid gossip message is
//!   banned for [`BAN_DURATION`]). Full nodes may sync blocks and gossip transactions, under the
//!   per-peer bounds of `network.rs`; they never reach consensus.
//! - Before the handshake says who a peer is, at most [`PENDING_INBOUND_MAX`] inbound
//!   connections may be in their handshake, [`PENDING_INBOUND_PER_ADDRESS_MAX`] from one address
//!   (the transport times a handshake out after 10 s).
//! - [`ValidatorsOnly`] wraps the consensus protocol: on a connection that is not a validator's
//!   the protocol is not even offered, so a full node's attempt to open a consensus stream fails
//!   in protocol negotiation, before a single byte of a frame is read.
//!
//! Refusals are counted in `tetrad_messages_dropped_total{reason}` under the names of
//! [`Refused::reason`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::FromSwarm;
use libp2p::swarm::handler::{ConnectionEvent, ConnectionHandler};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, NetworkBehaviour, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

use crate::daemon::metrics;

/// Full nodes connected at once.
pub const FULL_NODES_MAX: usize = 32;
/// Full nodes connected at once from one IP address.
pub const FULL_NODES_PER_ADDRESS_MAX: usize = 4;
/// Connections of one validator at once (both sides may dial at the same time).
pub const CONNECTIONS_PER_VALIDATOR_MAX: usize = 2;
/// Inbound connections in their handshake at once, and from one IP address.
pub const PENDING_INBOUND_MAX: usize = 64;
pub const PENDING_INBOUND_PER_ADDRESS_MAX: usize = 8;
/// How long a misbehaving full node is refused.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// Peers remembered as banned (the oldest ban is forgotten first).
pub const BANNED_MAX: usize = 4096;

/// The bounds, so that tests can use small ones.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    pub full_nodes_max: usize,
    pub full_nodes_per_address_max: usize,
    pub connections_per_validator_max: usize,
    pub pending_inbound_max: usize,
    pub pending_inbound_per_address_max: usize,
}

impl Default for AdmissionLimits {
    fn default() -> AdmissionLimits {
        AdmissionLimits {
            full_nodes_max: FULL_NODES_MAX,
            full_nodes_per_address_max: FULL_NODES_PER_ADDRESS_MAX,
            connections_per_validator_max: CONNECTIONS_PER_VALIDATOR_MAX,
            pending_inbound_max: PENDING_INBOUND_MAX,
            pending_inbound_per_address_max: PENDING_INBOUND_PER_ADDRESS_MAX,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} inbound connections are already in their handshake")]
    PendingInbound(usize),
    #[error("{0} inbound connections from this address are already in their handshake")]
    PendingFromAddress(usize),
    #[error("the validator already has {0} connections")]
    ValidatorConnections(usize),
    #[error("{0} full nodes are already connected")]
    FullNodes(usize),
    #[error("{0} full nodes are already connected from this address")]
    FullNodesFromAddress(usize),
    #[error("the full node is already connected")]
    SecondConnection,
    #[error("the peer is banned for misbehaving")]
    Banned,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::PendingInbound(_) => "p2p_refused_pending_inbound",
            Refused::PendingFromAddress(_) => "p2p_refused_pending_from_address",
            Refused::ValidatorConnections(_) => "p2p_refused_validator_connections",
            Refused::FullNodes(_) => "p2p_refused_full_nodes_max",
            Refused::FullNodesFromAddress(_) => "p2p_refused_full_nodes_from_address",
            Refused::SecondConnection => "p2p_refused_second_connection",
            Refused::Banned => "p2p_refused_banned",
        }
    }
}

/// The bookkeeping behind the admission rules (no sockets: unit-testable).
pub struct Admission {
    validators: HashSet<PeerId>,
    limits: AdmissionLimits,
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    established: HashMap<ConnectionId, (PeerId, Option<IpAddr>)>,
    per_peer: HashMap<PeerId, usize>,
    banned: HashMap<PeerId, Instant>,
}

fn count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, delta: isize) {
    let entry = map.entry(key).or_insert(0);
    *entry = entry.saturating_add_signed(delta);
}

/// The IP address of a multiaddr, if it has one.
pub fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Admission {
    pub fn new(validators: impl IntoIterator<Item = PeerId>, limits: AdmissionLimits) -> Admission {
        Admission {
            validators: validators.into_iter().collect(),
            limits,
            pending: HashMap::new(),
            established: HashMap::new(),
            per_peer: HashMap::new(),
            banned: HashMap::new(),
        }
    }

    pub fn is_validator(&self, peer: &PeerId) -> bool {
        self.validators.contains(peer)
    }

    /// An inbound connection whose handshake starts.
    pub fn pending_inbound(&mut self, id: ConnectionId, ip: Option<IpAddr>) -> Result<(), Refused> {
        if self.pending.len() >= self.limits.pending_inbound_max {
            return Err(Refused::PendingInbound(self.pending.len()));
        }
        if let Some(ip) = ip {
            let from_ip = self.pending.values().filter(|pending| **pending == Some(ip)).count();
            if from_ip >= self.limits.pending_inbound_per_address_max {
                return Err(Refused::PendingFromAddress(from_ip));
            }
        }
        self.pending.insert(id, ip);
        Ok(())
    }

    /// A connection whose handshake completed: the peer is known.
    pub fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Refused> {
        self.pending.remove(&id);
        let connections = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.is_validator(&peer) {
            if connections >= self.limits.connections_per_validator_max {
                return Err(Refused::ValidatorConnections(connections));
            }
        } else {
            if self.banned.get(&peer).is_some_and(|until| *until > now) {
                return Err(Refused::Banned);
            }
            if connections > 0 {
                return Err(Refused::SecondConnection);
            }
            let full_nodes = self.full_nodes();
            if full_nodes >= self.limits.full_nodes_max {
                return Err(Refused::FullNodes(full_nodes));
            }
            if let Some(ip) = ip {
                let from_ip = self
                    .established
                    .values()
                    .filter(|(other, other_ip)| *other_ip == Some(ip) && !self.is_validator(other))
                    .count();
                if from_ip >= self.limits.full_nodes_per_address_max {
                    return Err(Refused::FullNodesFromAddress(from_ip));
                }
            }
        }
        self.established.insert(id, (peer, ip));
        count(&mut self.per_peer, peer, 1);
        Ok(())
    }

    /// A connection that closed, failed its handshake or was refused.
    pub fn closed(&mut self, id: ConnectionId) {
        self.pending.remove(&id);
        if let Some((peer, _)) = self.established.remove(&id) {
            count(&mut self.per_peer, peer, -1);
            if self.per_peer.get(&peer) == Some(&0) {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Refuses `peer` until `now + BAN_DURATION` (validators are never banned: the transport
    /// needs them; their gossip is left to gossipsub's scoring).
    pub fn ban(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.is_validator(&peer) {
            return false;
        }
        if self.banned.len() >= BANNED_MAX {
            self.banned.retain(|_, until| *until > now);
            if self.banned.len() >= BANNED_MAX
                && let Some(oldest) =
                    self.banned.iter().min_by_key(|(_, until)| **until).map(|(peer, _)| *peer)
            {
                self.banned.remove(&oldest);
            }
        }
        self.banned.insert(peer, now + BAN_DURATION);
        true
    }

    /// Full nodes connected now.
    pub fn full_nodes(&self) -> usize {
        self.per_peer.keys().filter(|peer| !self.is_validator(peer)).count()
    }
}

/// The admission rules as a libp2p behaviour (list it first, so that it refuses a connection
/// before any other behaviour sets up state for it).
pub struct AdmissionBehaviour {
    pub admission: Admission,
}

fn refuse(refused: Refused) -> ConnectionDenied {
    metrics::dropped(refused.reason(), 1);
    ConnectionDenied::new(refused)
}

impl NetworkBehaviour for AdmissionBehaviour {
    type ConnectionHandler = KeepAlive;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admission.pending_inbound(id, ip_of(remote)).map_err(refuse)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission.established(id, peer, ip_of(remote), Instant::now()).map_err(refuse)?;
        Ok(KeepAlive(self.admission.is_validator(&peer)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission.established(id, peer, ip_of(address), Instant::now()).map_err(refuse)?;
        Ok(KeepAlive(self.admission.is_validator(&peer)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => self.admission.closed(closed.connection_id),
            FromSwarm::ListenFailure(failure) => self.admission.closed(failure.connection_id),
            FromSwarm::DialFailure(failure) => self.admission.closed(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A handler with no protocol that keeps a validator's connection open when idle (a full
/// node's closes after the swarm's idle timeout).
#[derive(Clone, Copy)]
pub struct KeepAlive(bool);

impl ConnectionHandler for KeepAlive {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.0
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {}
}

/// Wraps a behaviour so that it exists only on validators' connections: elsewhere its
/// protocols are not offered (a dummy handler stands in) and it never hears of the connection.
pub struct ValidatorsOnly<B> {
    pub inner: B,
    validators: HashSet<PeerId>,
    /// Connections the inner behaviour has a handler on.
    connections: HashSet<ConnectionId>,
}

impl<B> ValidatorsOnly<B> {
    pub fn new(inner: B, validators: impl IntoIterator<Item = PeerId>) -> ValidatorsOnly<B> {
        ValidatorsOnly { inner, validators: validators.into_iter().collect(), connections: HashSet::new() }
    }
}

type Either<L, R> = libp2p::swarm::derive_prelude::Either<L, R>;

impl<B: NetworkBehaviour> NetworkBehaviour for ValidatorsOnly<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.validators.contains(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_inbound_connection(id, peer, local, remote)?;
        self.connections.insert(id);
        Ok(Either::Left(handler))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        address: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.validators.contains(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_outbound_connection(id, peer, address, role, port_use)?;
        self.connections.insert(id);
        Ok(Either::Left(handler))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let known = match &event {
            FromSwarm::ConnectionEstablished(established) => {
                self.connections.contains(&established.connection_id)
            }
            FromSwarm::AddressChange(change) => self.connections.contains(&change.connection_id),
            FromSwarm::ConnectionClosed(closed) => self.connections.remove(&closed.connection_id),
            _ => true,
        };
        if known {
            self.inner.on_swarm_event(event);
        }
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {
            Either::Left(event) => self.inner.on_connection_handler_event(peer, id, event),
            Either::Right(never) => match never {},
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx).map(|event| event.map_in(Either::Left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    fn small() -> AdmissionLimits {
        AdmissionLimits {
            full_nodes_max: 3,
            full_nodes_per_address_max: 2,
            connections_per_validator_max: 2,
            pending_inbound_max: 4,
            pending_inbound_per_address_max: 2,
        }
    }

    #[test]
    fn validators_always_get_in_and_full_nodes_only_under_the_bounds() {
        let validator = PeerId::random();
        let mut admission = Admission::new([validator], small());
        let now = Instant::now();
        let mut next = 0usize;
        let mut id = || {
            next += 1;
            ConnectionId::new_unchecked(next)
        };
        // Full nodes: two from one address, then that address is full.
        assert_eq!(admission.established(id(), PeerId::random(), ip(1), now), Ok(()));
        assert_eq!(admission.established(id(), PeerId::random(), ip(1), now), Ok(()));
        assert_eq!(
            admission.established(id(), PeerId::random(), ip(1), now),
            Err(Refused::FullNodesFromAddress(2))
        );
        let third = PeerId::random();
        let third_id = id();
        assert_eq!(admission.established(third_id, third, ip(2), now), Ok(()));
        assert_eq!(admission.established(id(), third, ip(2), now), Err(Refused::SecondConnection));
        assert_eq!(admission.established(id(), PeerId::random(), ip(3), now), Err(Refused::FullNodes(3)));
        // The validator gets in anyway, from any address, twice.
        assert_eq!(admission.established(id(), validator, ip(1), now), Ok(()));
        assert_eq!(admission.established(id(), validator, ip(1), now), Ok(()));
        assert_eq!(admission.established(id(), validator, ip(1), now), Err(Refused::ValidatorConnections(2)));
        // A full node leaving frees its place; a banned one stays out.
        admission.closed(third_id);
        assert!(admission.ban(third, now));
        assert!(!admission.ban(validator, now), "validators are never banned");
        assert_eq!(admission.established(id(), third, ip(2), now), Err(Refused::Banned));
        assert_eq!(admission.established(id(), third, ip(2), now + BAN_DURATION), Ok(()));
    }

    #[test]
    fn handshakes_in_progress_are_bounded_in_all_and_per_address() {
        let mut admission = Admission::new([], small());
        let ids: Vec<ConnectionId> = (1..=6).map(ConnectionId::new_unchecked).collect();
        assert_eq!(admission.pending_inbound(ids[0], ip(1)), Ok(()));
        assert_eq!(admission.pending_inbound(ids[1], ip(1)), Ok(()));
        assert_eq!(admission.pending_inbound(ids[2], ip(1)), Err(Refused::PendingFromAddress(2)));
        assert_eq!(admission.pending_inbound(ids[2], ip(2)), Ok(()));
        assert_eq!(admission.pending_inbound(ids[3], ip(3)), Ok(()));
        assert_eq!(admission.pending_inbound(ids[4], ip(4)), Err(Refused::PendingInbound(4)));
        // A handshake that failed gives its place back.
        admission.closed(ids[0]);
        assert_eq!(admission.pending_inbound(ids[4], ip(1)), Ok(()));
    }
}
