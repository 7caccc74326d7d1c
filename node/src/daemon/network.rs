//! libp2p networking: TCP + noise + yamux with the node's network key.
//!
//! - **Who may speak** (`admission.rs`): the genesis validators' peer ids are always admitted;
//!   any other peer is a full node, admitted under a bound, per address and in all, and never on
//!   the consensus path. Handshakes in progress are bounded; idle full-node connections close.
//! - **Consensus** messages go to one validator or all, over a request-response protocol whose
//!   requests are encoded [`tetrad_consensus::Message`]s (the response is a one-byte ack). The
//!   protocol exists only on validators' connections, so a non-validator's frame is refused in
//!   protocol negotiation, before its length is read. Each inbound message takes a place in its
//!   sender's budget (`intake.rs`); each outbound one a place in the receiver's outbound budget.
//! - **Block sync** is a request-response protocol: a range of heights in, committed blocks
//!   with their commit certificates out, read from RocksDB on a blocking thread (never on this
//!   task), at most one request per peer at a time and a few for full nodes in all.
//! - **Transactions** travel on one gossipsub topic per chain, in small batches; each batch is
//!   validated (decode, size, every signature) before gossipsub forwards it, and forwarded only
//!   if this node's mempool admitted some of it (junk that admission refuses costs each node
//!   it is sent to, and goes no further). Each publish carries a number the publisher chooses
//!   anew ([`GossipMessage`]), so a re-gossip of the same transactions is a new message while
//!   copies of one publish are still suppressed as duplicates; what the receiver already holds
//!   is dropped by hash before any signature is checked, and not forwarded. Gossipsub's peer scoring is on: a peer that forwards
//!   an invalid batch is graylisted, and a full node that does is also banned for a while.
//!
//! Every frame limit comes from genesis ([`FrameLimits`]). Protocol names and the identify
//! protocol version carry the genesis hash, so a peer of another chain shares no protocol with
//! us; when identify shows a different genesis the peer is disconnected and the refusal logged.
//! Validators are dialled and re-dialled with backoff. Every queue is bounded, and what is
//! dropped is counted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, ping};
use tetrad_consensus::{Digest, Height, ValidatorIndex};
use tetrad_ledger::Store;
use tetrad_ledger::tx::Tx;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::daemon::admission::{Admission, AdmissionBehaviour, AdmissionLimits, ValidatorsOnly};
use crate::daemon::intake::{InboundBudgets, PEER_QUEUE_MESSAGES_MAX, Ticket, peer_queue_bytes_max};
use crate::daemon::metrics;
use crate::daemon::tcp;
pub use crate::daemon::wire::{
    FrameLimits, GOSSIP_TXS_MAX, GossipMessage, SYNC_BLOCKS_MAX, SyncBlock, SyncRequest,
};
use crate::daemon::wire::{SYNC_REQUEST_BYTES_MAX, read_frame, read_framed};

/// Executed-block notices waiting for the driver, at most.
pub const INBOUND_QUEUE: usize = 16_384;
// How long admitted transactions wait to fill a gossip message (at most GOSSIP_TXS_MAX).
const GOSSIP_FLUSH: Duration = Duration::from_millis(5);
/// Room for gossipsub's own framing around a message.
const GOSSIP_ENVELOPE_BYTES: usize = 1024;
/// A gossip message's own bytes besides its transactions: the vector's length and the publish
/// number.
const GOSSIP_HEADER_BYTES: usize = 4 + 8;
const REDIAL_MIN: Duration = Duration::from_millis(250);
/// A validator out of reach is dialled at least this often, so that a healed partition whose
/// connections the kernel gave up on is whole again within about this long (a dial to an
/// unreachable address costs a SYN; see also CONNECTION_TIMEOUT).
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// A dial, with its handshakes, fails after this long (libp2p's default is 10 s). A dial still
/// waiting when a partition heals waits for its SYN's next retransmission (1, 2, 4 s apart) or
/// this timeout, whichever comes first, before a new dial goes out.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(4);
/// Gossip messages whose transactions are being checked at once, in all and per peer.
const GOSSIP_CHECKS_MAX: usize = 64;
const GOSSIP_CHECKS_PER_PEER_MAX: usize = 8;
/// Block-sync requests being served at once: one per peer, and this many for full nodes in all
/// (validators catching up have a place each of their own).
const SYNC_SERVING_PER_PEER_MAX: usize = 1;
const SYNC_SERVING_FULL_NODES_MAX: usize = 2;
/// Consensus messages sent to one peer and not yet acknowledged, at most.
pub const PEER_OUTBOUND_MESSAGES_MAX: usize = 4096;
/// A connection with no open stream (a full node's) closes after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent streams on one connection of the consensus protocol (each message is one).
const CONSENSUS_STREAMS_PER_CONNECTION_MAX: usize = 1024;
const CONSENSUS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Gossipsub score: what one invalid message costs (squared per message; graylisted below
/// [`GOSSIP_GRAYLIST_THRESHOLD`]), and how fast it is forgiven (per second).
const GOSSIP_INVALID_WEIGHT: f64 = -100.0;
const GOSSIP_INVALID_DECAY: f64 = 0.9;
const GOSSIP_GRAYLIST_THRESHOLD: f64 = -40.0;

/// What the rest of the node asks the network to do.
#[derive(Debug)]
pub enum Command {
    /// Send an encoded consensus message to one validator, or to all others.
    Send { to: Option<ValidatorIndex>, bytes: Bytes },
    /// Ask a validator for committed blocks `[from, to]`.
    Fetch { peer: ValidatorIndex, from: Height, to: Height },
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// A consensus message; `ticket` holds its place in the sender's budget until dropped
    /// (`None` for a message the driver kept back itself).
    Consensus {
        from: ValidatorIndex,
        bytes: Bytes,
        ticket: Option<Ticket>,
    },
    Blocks {
        from: ValidatorIndex,
        blocks: Vec<SyncBlock>,
    },
    /// A peer answered a sync request with no block: it has nothing after ours.
    UpToDate {
        from: ValidatorIndex,
    },
    /// A sync request failed (no connection, refused, timed out).
    FetchFailed {
        from: ValidatorIndex,
    },
}

/// Checks and admits the transactions of a gossip message, and says what to do with it.
pub type GossipValidator = Arc<dyn Fn(Vec<Tx>) -> GossipVerdict + Send + Sync>;

/// What a gossip message turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipVerdict {
    /// Every signature verifies and the mempool admitted some of it: forward it.
    Admitted,
    /// Every signature verifies but nothing in it was admitted (all known already, stale, or
    /// refused by admission): not forwarded, not held against the peer.
    NothingNew,
    /// Does not decode, or a signature does not verify: rejected (the peer's score drops).
    Invalid,
}

/// A publish number no earlier run of this node used (nanoseconds since the epoch).
fn first_publish_number() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// A borsh codec with a 4-byte length prefix and per-direction size limits.
#[derive(Clone)]
pub struct BorshCodec<Req, Resp> {
    request_max: usize,
    response_max: usize,
    _types: std::marker::PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> BorshCodec<Req, Resp> {
    pub fn new(request_max: usize, response_max: usize) -> Self {
        BorshCodec { request_max, response_max, _types: std::marker::PhantomData }
    }
}

/// Writes one length-prefixed frame and closes the stream.
async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let length = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&length.to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl<Req, Resp> request_response::Codec for BorshCodec<Req, Resp>
where
    Req: borsh::BorshSerialize + borsh::BorshDeserialize + Send + Sync + 'static,
    Resp: borsh::BorshSerialize + borsh::BorshDeserialize + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Req> {
        read_framed(io, self.request_max).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Resp> {
        read_framed(io, self.response_max).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Req,
    ) -> io::Result<()> {
        write_frame(io, &borsh::to_vec(&request)?).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Resp,
    ) -> io::Result<()> {
        write_frame(io, &borsh::to_vec(&response)?).await
    }
}

/// Consensus messages are already encoded: framed as they are, and shared (not copied) between
/// the peers a message goes to.
#[derive(Clone)]
pub struct RawCodec {
    max: usize,
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Bytes;
    type Response = u8;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Bytes> {
        read_frame(io, self.max).await.map(Bytes::from)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<u8> {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        Ok(ack[0])
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Bytes,
    ) -> io::Result<()> {
        write_frame(io, &request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        ack: u8,
    ) -> io::Result<()> {
        io.write_all(&[ack]).await?;
        io.close().await
    }
}

type SyncCodec = BorshCodec<SyncRequest, Vec<SyncBlock>>;

/// Admission first: it refuses a connection before the others set up state for it.
#[derive(NetworkBehaviour)]
struct Behaviour {
    admission: AdmissionBehaviour,
    consensus: ValidatorsOnly<request_response::Behaviour<RawCodec>>,
    sync: request_response::Behaviour<SyncCodec>,
    gossip: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Everything the network task needs.
pub struct NetworkConfig {
    pub keypair: Keypair,
    pub listen: Multiaddr,
    pub chain_id: String,
    pub genesis_hash: Digest,
    /// Peer id and dial address of every validator, by index.
    pub validators: Vec<(PeerId, Multiaddr)>,
    pub me: Option<ValidatorIndex>,
    /// Frame limits from genesis.
    pub limits: FrameLimits,
    pub admission: AdmissionLimits,
}

/// Handles for the rest of the node.
pub struct Network {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    /// Admitted transactions to gossip.
    pub gossip: mpsc::Sender<Tx>,
    /// Number of connected peers.
    pub peers: Arc<Mutex<usize>>,
    /// The network task; it ends only if the node's side of its channels closes.
    pub task: JoinHandle<()>,
}

fn protocol(genesis_hash: &Digest, name: &str) -> StreamProtocol {
    let short = &genesis_hash.to_hex()[..16];
    // Only ASCII hex and fixed names: always a valid protocol string.
    StreamProtocol::try_from_owned(format!("/tetrad/{short}/{name}/1"))
        .unwrap_or(StreamProtocol::new("/tetrad/invalid/1"))
}

/// Gossipsub's peer scoring: only invalid messages count (a quiet chain delivers few messages,
/// so delivery-rate penalties would punish honest peers; validators may share an address).
fn gossip_scoring(
    topic: &gossipsub::IdentTopic,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: GOSSIP_INVALID_WEIGHT,
        invalid_message_deliveries_decay: GOSSIP_INVALID_DECAY,
        ..gossipsub::TopicScoreParams::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: [(topic.hash(), topic_params)].into_iter().collect(),
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -20.0,
        graylist_threshold: GOSSIP_GRAYLIST_THRESHOLD,
        ..gossipsub::PeerScoreThresholds::default()
    };
    (params, thresholds)
}

/// Binds the listen address and starts the network task.
pub async fn start(
    config: NetworkConfig,
    store: Arc<Store>,
    validator: GossipValidator,
) -> anyhow::Result<Network> {
    let genesis_hash = config.genesis_hash;
    let limits = config.limits;
    let validator_ids: Vec<PeerId> = config.validators.iter().map(|(peer, _)| *peer).collect();
    let consensus = request_response::Behaviour::with_codec(
        RawCodec { max: limits.consensus_bytes_max },
        [(protocol(&genesis_hash, "consensus"), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(CONSENSUS_REQUEST_TIMEOUT)
            .with_max_concurrent_streams(CONSENSUS_STREAMS_PER_CONNECTION_MAX),
    );
    let sync = request_response::Behaviour::with_codec(
        SyncCodec::new(SYNC_REQUEST_BYTES_MAX, limits.sync_response_bytes_max),
        [(protocol(&genesis_hash, "sync"), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(SYNC_REQUEST_TIMEOUT),
    );
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(limits.gossip_bytes_max + GOSSIP_ENVELOPE_BYTES)
        // The hash of the bytes, which include the publisher's publish number (GossipMessage).
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
        })
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|error| anyhow::anyhow!("gossipsub config: {error}"))?;
    let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|error| anyhow::anyhow!("gossipsub: {error}"))?;
    let topic = gossipsub::IdentTopic::new(format!(
        "/tetrad/{}/{}/txs",
        config.chain_id,
        &genesis_hash.to_hex()[..16]
    ));
    gossip.subscribe(&topic)?;
    let (score_params, score_thresholds) = gossip_scoring(&topic);
    gossip
        .with_peer_score(score_params, score_thresholds)
        .map_err(|error| anyhow::anyhow!("gossipsub peer scoring: {error}"))?;
    let identify = identify::Behaviour::new(
        identify::Config::new(format!("tetrad/{genesis_hash}"), config.keypair.public())
            .with_agent_version(format!("tetrad/{}", env!("CARGO_PKG_VERSION"))),
    );
    let behaviour = Behaviour {
        admission: AdmissionBehaviour { admission: Admission::new(validator_ids.clone(), config.admission) },
        consensus: ValidatorsOnly::new(consensus, validator_ids),
        sync,
        gossip,
        identify,
        ping: ping::Behaviour::default(),
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_other_transport(|keypair| {
            use libp2p::Transport as _;
            let noise = libp2p::noise::Config::new(keypair)?;
            // What `with_tcp` builds, with each connection's socket given a capped
            // retransmission timeout (tcp.rs): a healed partition speaks again within a second.
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
                    .map(|stream: libp2p::tcp::tokio::TcpStream, _| {
                        tcp::cap_retransmission_timeout(&stream.0);
                        stream
                    })
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(libp2p::yamux::Config::default()),
            )
        })?
        .with_behaviour(|_| behaviour)?
        .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .with_connection_timeout(CONNECTION_TIMEOUT)
        .build();
    swarm
        .listen_on(config.listen.clone())
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
    // Wait for the listener to bind (or fail), so "address in use" is an error at startup.
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "p2p listening");
                break;
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                anyhow::bail!("cannot listen on {}: {error}", config.listen);
            }
            _ => {}
        }
    }
    let validators = config.validators.len();
    let inbound = InboundBudgets::new(
        validators,
        PEER_QUEUE_MESSAGES_MAX,
        peer_queue_bytes_max(limits.consensus_bytes_max),
    );
    // Consensus messages cannot fill it: each validator's are bounded by its budget.
    let events_capacity = validators.saturating_mul(PEER_QUEUE_MESSAGES_MAX).saturating_add(1024);
    let (command_tx, command_rx) = mpsc::channel(events_capacity);
    let (event_tx, event_rx) = mpsc::channel(events_capacity);
    let (gossip_tx, gossip_rx) = mpsc::channel(GOSSIP_TXS_MAX * 64);
    let peers = Arc::new(Mutex::new(0usize));
    let task = Task::new(swarm, config, store, validator, topic, event_tx, peers.clone(), inbound);
    let task = tokio::spawn(task.run(command_rx, gossip_rx));
    Ok(Network { commands: command_tx, events: event_rx, gossip: gossip_tx, peers, task })
}

/// A block-sync answer read from the store, on its way back to the network task.
struct Served {
    peer: PeerId,
    channel: ResponseChannel<Vec<SyncBlock>>,
    blocks: Vec<SyncBlock>,
}

/// A gossip message's verdict, on its way back to the network task.
struct Validated {
    id: gossipsub::MessageId,
    source: PeerId,
    verdict: GossipVerdict,
}

struct Task {
    swarm: Swarm<Behaviour>,
    genesis_hash: Digest,
    me: Option<ValidatorIndex>,
    validators: Vec<(PeerId, Multiaddr)>,
    index_of: HashMap<PeerId, ValidatorIndex>,
    limits: FrameLimits,
    store: Arc<Store>,
    validator: GossipValidator,
    topic: gossipsub::IdentTopic,
    events: mpsc::Sender<Event>,
    peers: Arc<Mutex<usize>>,
    inbound: Arc<InboundBudgets>,
    /// Validators to dial: next attempt and current backoff.
    redial: BTreeMap<PeerId, (Instant, Duration)>,
    fetches: HashMap<OutboundRequestId, ValidatorIndex>,
    /// Consensus messages sent and not yet acknowledged: to whom, how many bytes.
    outbound: HashMap<OutboundRequestId, (ValidatorIndex, usize)>,
    /// Per validator: messages and bytes sent and not yet acknowledged.
    outbound_load: Vec<(usize, usize)>,
    outbound_bytes_max: usize,
    gossip_buffer: Vec<Tx>,
    gossip_buffer_bytes: usize,
    /// The number of the last gossip publish (see [`GossipMessage`]).
    gossip_published: u64,
    /// Gossip messages being checked, in all and per peer.
    gossip_checks: HashMap<PeerId, usize>,
    gossip_checks_total: usize,
    validations: mpsc::Sender<Validated>,
    validation_results: Option<mpsc::Receiver<Validated>>,
    /// Block-sync requests being served, per peer, and for full nodes in all.
    serving: HashMap<PeerId, usize>,
    serving_full_nodes: usize,
    served: mpsc::Sender<Served>,
    served_results: Option<mpsc::Receiver<Served>>,
}

impl Task {
    #[allow(clippy::too_many_arguments, reason = "assembled once, from start()")]
    fn new(
        swarm: Swarm<Behaviour>,
        config: NetworkConfig,
        store: Arc<Store>,
        validator: GossipValidator,
        topic: gossipsub::IdentTopic,
        events: mpsc::Sender<Event>,
        peers: Arc<Mutex<usize>>,
        inbound: Arc<InboundBudgets>,
    ) -> Task {
        let index_of = config
            .validators
            .iter()
            .enumerate()
            .map(|(index, (peer, _))| (*peer, ValidatorIndex(index as u16)))
            .collect();
        let own_peer = *swarm.local_peer_id();
        let now = Instant::now();
        let redial = config
            .validators
            .iter()
            .filter(|(peer, _)| *peer != own_peer)
            .map(|(peer, _)| (*peer, (now, REDIAL_MIN)))
            .collect();
        let (validations, validation_results) = mpsc::channel(GOSSIP_CHECKS_MAX);
        let (served, served_results) = mpsc::channel(config.validators.len() + SYNC_SERVING_FULL_NODES_MAX);
        Task {
            swarm,
            genesis_hash: config.genesis_hash,
            me: config.me,
            outbound_load: vec![(0, 0); config.validators.len()],
            outbound_bytes_max: peer_queue_bytes_max(config.limits.consensus_bytes_max),
            validators: config.validators,
            index_of,
            limits: config.limits,
            store,
            validator,
            topic,
            events,
            peers,
            inbound,
            redial,
            fetches: HashMap::new(),
            outbound: HashMap::new(),
            gossip_buffer: Vec::new(),
            gossip_buffer_bytes: 0,
            gossip_published: first_publish_number(),
            gossip_checks: HashMap::new(),
            gossip_checks_total: 0,
            validations,
            validation_results: Some(validation_results),
            serving: HashMap::new(),
            serving_full_nodes: 0,
            served,
            served_results: Some(served_results),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut gossip: mpsc::Receiver<Tx>) {
        for (peer, address) in self.validators.clone() {
            self.swarm.add_peer_address(peer, address);
        }
        let mut validation_results = self.validation_results.take().unwrap_or_else(|| mpsc::channel(1).1);
        let mut served_results = self.served_results.take().unwrap_or_else(|| mpsc::channel(1).1);
        let mut redial_tick = tokio::time::interval(REDIAL_MIN);
        let mut gossip_flush = tokio::time::interval(GOSSIP_FLUSH);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                tx = gossip.recv() => {
                    if let Some(tx) = tx {
                        self.buffer_gossip(tx);
                    }
                }
                Some(validated) = validation_results.recv() => self.on_validated(validated),
                Some(served) = served_results.recv() => self.on_served(served),
                _ = gossip_flush.tick() => self.flush_gossip(),
                _ = redial_tick.tick() => self.redial(),
            }
        }
        debug!("network task stopped");
    }

    fn buffer_gossip(&mut self, tx: Tx) {
        let size = borsh::object_length(&tx).unwrap_or(0);
        // A gossip message stays within the gossip limit.
        if self.gossip_buffer_bytes + size + GOSSIP_HEADER_BYTES > self.limits.gossip_bytes_max {
            self.flush_gossip();
        }
        self.gossip_buffer.push(tx);
        self.gossip_buffer_bytes += size;
        if self.gossip_buffer.len() >= GOSSIP_TXS_MAX {
            self.flush_gossip();
        }
    }

    fn flush_gossip(&mut self) {
        if self.gossip_buffer.is_empty() {
            return;
        }
        let txs = std::mem::take(&mut self.gossip_buffer);
        let count = txs.len();
        self.gossip_buffer_bytes = 0;
        self.gossip_published = self.gossip_published.wrapping_add(1);
        let message = GossipMessage { txs, publish: self.gossip_published };
        let bytes = borsh::to_vec(&message).unwrap_or_default();
        if let Err(error) = self.swarm.behaviour_mut().gossip.publish(self.topic.clone(), bytes) {
            // No peers yet: the transactions are in our mempool regardless (and are gossiped
            // again while they wait).
            debug!(%error, txs = count, "gossip publish");
            metrics::dropped("gossip_publish_failed", count as u64);
        }
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(peer, (at, _))| *at <= now && !self.swarm.is_connected(peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let Some(entry) = self.redial.get_mut(&peer) else { continue };
            let backoff = entry.1;
            *entry = (now + backoff, (backoff * 2).min(REDIAL_MAX));
            if let Some(index) = self.index_of.get(&peer)
                && let Some((_, address)) = self.validators.get(index.as_usize())
            {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![address.clone()])
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    debug!(%peer, %error, "dial");
                }
            }
        }
    }

    fn update_peers(&mut self) {
        let connected = self.swarm.connected_peers().count();
        *self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = connected;
        metrics::gauge("tetrad_peers", connected as f64);
        let full_nodes = self.swarm.behaviour().admission.admission.full_nodes();
        metrics::gauge("tetrad_full_node_peers", full_nodes as f64);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send { to, bytes } => match to {
                Some(index) => self.send_consensus(index, &bytes),
                None => {
                    for index in 0..self.validators.len() {
                        let index = ValidatorIndex(index as u16);
                        if Some(index) != self.me {
                            self.send_consensus(index, &bytes);
                        }
                    }
                }
            },
            Command::Fetch { peer, from, to } => {
                let Some((peer_id, _)) = self.validators.get(peer.as_usize()).cloned() else { return };
                if !self.swarm.is_connected(&peer_id) {
                    let _ = self.events.try_send(Event::FetchFailed { from: peer });
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer_id, SyncRequest { from, to });
                self.fetches.insert(id, peer);
            }
        }
    }

    /// Sends a consensus message to one validator, within that validator's outbound budget.
    fn send_consensus(&mut self, index: ValidatorIndex, bytes: &Bytes) {
        let Some((peer, _)) = self.validators.get(index.as_usize()) else { return };
        let peer = *peer;
        if !self.swarm.is_connected(&peer) {
            // Retransmission and state transfer cover what a disconnected peer misses.
            metrics::dropped("peer_not_connected", 1);
            return;
        }
        let Some(load) = self.outbound_load.get_mut(index.as_usize()) else { return };
        if load.0 >= PEER_OUTBOUND_MESSAGES_MAX || load.1 + bytes.len() > self.outbound_bytes_max {
            // This peer does not take what it is sent; others are not held up by it.
            metrics::dropped("peer_outbound_full", 1);
            return;
        }
        load.0 += 1;
        load.1 += bytes.len();
        tracing::trace!(%peer, len = bytes.len(), id = %&blake3::hash(bytes).to_hex()[..12], "consensus out");
        let id = self.swarm.behaviour_mut().consensus.inner.send_request(&peer, bytes.clone());
        self.outbound.insert(id, (index, bytes.len()));
    }

    fn outbound_done(&mut self, id: &OutboundRequestId) {
        if let Some((index, size)) = self.outbound.remove(id)
            && let Some(load) = self.outbound_load.get_mut(index.as_usize())
        {
            load.0 = load.0.saturating_sub(1);
            load.1 = load.1.saturating_sub(size);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Consensus(event)) => self.on_consensus(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.on_gossip(propagation_source, message_id, message.data);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let expected = format!("tetrad/{}", self.genesis_hash);
                if info.protocol_version != expected {
                    warn!(
                        peer = %peer_id,
                        theirs = %info.protocol_version,
                        ours = %expected,
                        "refusing peer: its genesis hash differs from ours"
                    );
                    metrics::dropped("wrong_genesis_peer", 1);
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(entry) = self.redial.get_mut(&peer_id) {
                    *entry = (Instant::now() + REDIAL_MIN, REDIAL_MIN);
                }
                self.update_peers();
                debug!(peer = %peer_id, validator = self.index_of.contains_key(&peer_id), "connected");
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                }
                self.update_peers();
            }
            SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                debug!(%error, address = %send_back_addr, "inbound connection refused or failed");
            }
            _ => {}
        }
    }

    fn on_consensus(&mut self, event: request_response::Event<Bytes, u8>) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            } => {
                tracing::trace!(%peer, len = request.len(), id = %&blake3::hash(&request).to_hex()[..12], "consensus in");
                let _ = self.swarm.behaviour_mut().consensus.inner.send_response(channel, 1);
                // Only validators' connections carry the protocol; checked again all the same.
                let Some(&from) = self.index_of.get(&peer) else {
                    metrics::dropped("consensus_from_non_validator", 1);
                    return;
                };
                let Some(ticket) = self.inbound.admit(from, request.len()) else {
                    metrics::dropped("peer_inbound_budget", 1);
                    return;
                };
                let event = Event::Consensus { from, bytes: request, ticket: Some(ticket) };
                if self.events.try_send(event).is_err() {
                    metrics::dropped("inbound_queue_full", 1);
                }
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.outbound_done(&request_id),
            request_response::Event::OutboundFailure { request_id, .. } => self.outbound_done(&request_id),
            _ => {}
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, Vec<SyncBlock>>) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            } => self.serve_sync(peer, request, channel),
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            } => {
                if let Some(from) = self.fetches.remove(&request_id) {
                    let event = if response.is_empty() {
                        Event::UpToDate { from }
                    } else {
                        Event::Blocks { from, blocks: response }
                    };
                    if self.events.try_send(event).is_err() {
                        metrics::dropped("inbound_queue_full", 1);
                    }
                }
            }
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if let Some(from) = self.fetches.remove(&request_id) {
                    debug!(%error, peer = %from, "block sync request failed");
                    let _ = self.events.try_send(Event::FetchFailed { from });
                }
            }
            _ => {}
        }
    }

    /// Serves a block-sync request on a blocking thread, if the peer has no other request being
    /// served and (for a full node) full nodes have a place; otherwise refuses it by closing the
    /// stream (the peer asks another).
    fn serve_sync(&mut self, peer: PeerId, request: SyncRequest, channel: ResponseChannel<Vec<SyncBlock>>) {
        let full_node = !self.index_of.contains_key(&peer);
        let busy = self.serving.get(&peer).copied().unwrap_or(0) >= SYNC_SERVING_PER_PEER_MAX
            || (full_node && self.serving_full_nodes >= SYNC_SERVING_FULL_NODES_MAX);
        if busy {
            metrics::dropped("sync_request_busy", 1);
            drop(channel);
            return;
        }
        *self.serving.entry(peer).or_insert(0) += 1;
        if full_node {
            self.serving_full_nodes += 1;
        }
        let store = self.store.clone();
        let served = self.served.clone();
        let bytes_max = self.limits.sync_response_bytes_max;
        tokio::task::spawn_blocking(move || {
            let blocks = serve_blocks(&store, &request, bytes_max);
            // tetrad-byzantine only (feature `byzantine`): `lying-sync` answers with lies.
            #[cfg(feature = "byzantine")]
            let blocks = crate::daemon::byzantine::lie_about_blocks(blocks);
            let _ = served.blocking_send(Served { peer, channel, blocks });
        });
    }

    fn on_served(&mut self, Served { peer, channel, blocks }: Served) {
        if let Some(count) = self.serving.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.serving.remove(&peer);
            }
        }
        if !self.index_of.contains_key(&peer) {
            self.serving_full_nodes = self.serving_full_nodes.saturating_sub(1);
        }
        let _ = self.swarm.behaviour_mut().sync.send_response(channel, blocks);
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        // Signature checks are CPU work: off the network task, a bounded number at once and per
        // peer. A message that finds no room is ignored (neither forwarded nor held against the
        // peer).
        let from_peer = self.gossip_checks.get(&source).copied().unwrap_or(0);
        if self.gossip_checks_total >= GOSSIP_CHECKS_MAX || from_peer >= GOSSIP_CHECKS_PER_PEER_MAX {
            metrics::dropped("gossip_validation_queue_full", 1);
            self.swarm.behaviour_mut().gossip.report_message_validation_result(
                &id,
                &source,
                gossipsub::MessageAcceptance::Ignore,
            );
            return;
        }
        *self.gossip_checks.entry(source).or_insert(0) += 1;
        self.gossip_checks_total += 1;
        let validator = self.validator.clone();
        let results = self.validations.clone();
        tokio::task::spawn_blocking(move || {
            let verdict = match GossipMessage::decode_txs(&data) {
                Some(txs) => validator(txs),
                None => GossipVerdict::Invalid,
            };
            let _ = results.blocking_send(Validated { id, source, verdict });
        });
    }

    /// A gossip message's verdict. Rejecting it lowers the forwarding peer's gossipsub score
    /// (graylisted after one invalid message, forgiven over time); a full node that forwarded
    /// it is also banned for a while.
    fn on_validated(&mut self, Validated { id, source, verdict }: Validated) {
        if let Some(count) = self.gossip_checks.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.gossip_checks.remove(&source);
            }
        }
        self.gossip_checks_total = self.gossip_checks_total.saturating_sub(1);
        let accept = verdict != GossipVerdict::Invalid;
        let acceptance = match verdict {
            GossipVerdict::Admitted => gossipsub::MessageAcceptance::Accept,
            GossipVerdict::NothingNew => {
                metrics::dropped("gossip_nothing_admitted", 1);
                gossipsub::MessageAcceptance::Ignore
            }
            GossipVerdict::Invalid => {
                metrics::dropped("invalid_gossip", 1);
                gossipsub::MessageAcceptance::Reject
            }
        };
        let behaviour = self.swarm.behaviour_mut();
        behaviour.gossip.report_message_validation_result(&id, &source, acceptance);
        if !accept && behaviour.admission.admission.ban(source, Instant::now()) {
            warn!(peer = %source, "banning a full node that forwarded an invalid gossip message");
            metrics::dropped("p2p_peer_banned", 1);
            let _ = self.swarm.disconnect_peer_id(source);
        }
    }
}

/// Reads committed blocks `[from, to]` (at most [`SYNC_BLOCKS_MAX`], at most `bytes_max`
/// encoded bytes) from the store.
fn serve_blocks(store: &Store, request: &SyncRequest, bytes_max: usize) -> Vec<SyncBlock> {
    let mut blocks = Vec::new();
    // The vector's 4-byte length.
    let mut bytes = 4usize;
    let last = request.to.0.min(request.from.0.saturating_add(SYNC_BLOCKS_MAX - 1));
    for height in request.from.0.max(1)..=last {
        match store.block(Height(height)) {
            Ok(Some(block)) => {
                let block = SyncBlock { batch: block.batch, certificate: block.certificate };
                let size = borsh::object_length(&block).unwrap_or(usize::MAX);
                if bytes.saturating_add(size) > bytes_max {
                    break;
                }
                bytes += size;
                blocks.push(block);
            }
            Ok(None) => break,
            Err(error) => {
                warn!(%error, height, "serving block sync");
                break;
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use tetrad_consensus::{Digest, SecretKey};
    use tetrad_ledger::tx::{Tx, TxBody, TxKind, chain_tag};

    use super::{GOSSIP_TXS_MAX, GossipMessage};

    fn tx(nonce: u64) -> Tx {
        let genesis = Digest::of(b"gossip test");
        let key = SecretKey::from_seed([3; 32]);
        let body = TxBody {
            chain: chain_tag(&genesis),
            from: key.public_key(),
            nonce,
            kind: TxKind::Transfer { to: key.public_key(), amount: 1 },
        };
        Tx::sign(body, &key, &genesis)
    }

    #[test]
    fn two_publishes_of_the_same_transactions_are_two_messages() {
        let txs = vec![tx(0)];
        let first = borsh::to_vec(&GossipMessage { txs: txs.clone(), publish: 7 }).expect("encode");
        let again = borsh::to_vec(&GossipMessage { txs: txs.clone(), publish: 8 }).expect("encode");
        // Gossipsub's id is the hash of the bytes: a re-gossip is not a duplicate of the first.
        assert_ne!(blake3::hash(&first), blake3::hash(&again));
        assert_eq!(GossipMessage::decode_txs(&first), Some(txs.clone()));
        assert_eq!(GossipMessage::decode_txs(&again), Some(txs.clone()));
        // The transactions alone (the old format), trailing bytes, too many: refused.
        assert_eq!(GossipMessage::decode_txs(&borsh::to_vec(&txs).expect("encode")), None);
        assert_eq!(GossipMessage::decode_txs(&[first.as_slice(), &[0]].concat()), None);
        let many = GossipMessage { txs: vec![tx(1); GOSSIP_TXS_MAX + 1], publish: 0 };
        assert_eq!(GossipMessage::decode_txs(&borsh::to_vec(&many).expect("encode")), None);
    }
}
