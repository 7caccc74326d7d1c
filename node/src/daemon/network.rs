//! libp2p networking: TCP + noise + yamux with the node's network key.
//!
//! - **Consensus** messages go to one validator or all, over a request-response protocol whose
//!   requests are encoded [`tetrad_consensus::Message`]s (the response is a one-byte ack).
//! - **Block sync** is a request-response protocol: a range of heights in, committed blocks
//!   with their commit certificates out, served straight from RocksDB.
//! - **Transactions** travel on one gossipsub topic per chain, in small batches; each batch is
//!   validated (decode, size, every signature) before gossipsub forwards it.
//!
//! Protocol names and the identify protocol version carry the genesis hash, so a peer of
//! another chain shares no protocol with us; when identify shows a different genesis the peer
//! is disconnected and the refusal logged. Peers come from genesis and are dialled and
//! re-dialled with backoff. Every inbound size is limited; every queue is bounded, and what is
//! dropped is counted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use borsh::{BorshDeserialize, BorshSerialize};
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, ping};
use tetrad_consensus::wire::MESSAGE_BYTES_MAX;
use tetrad_consensus::{Batch, CommitCertificate, Digest, Height, ValidatorIndex};
use tetrad_ledger::Store;
use tetrad_ledger::tx::{TX_BYTES_MAX, Tx};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::daemon::metrics;

/// Most blocks in one sync response, and most bytes.
pub const SYNC_BLOCKS_MAX: u64 = 64;
const SYNC_RESPONSE_BYTES_MAX: usize = 48 << 20;
/// Most transactions in one gossip message, and how long admitted ones wait to fill one.
pub const GOSSIP_TXS_MAX: usize = 1024;
const GOSSIP_FLUSH: Duration = Duration::from_millis(5);
const GOSSIP_BYTES_MAX: usize = GOSSIP_TXS_MAX * (TX_BYTES_MAX + 8);
const REDIAL_MIN: Duration = Duration::from_millis(250);
const REDIAL_MAX: Duration = Duration::from_secs(10);
/// Gossip messages whose transactions are being checked at once, at most.
const GOSSIP_CHECKS_MAX: usize = 1024;
/// Inbound consensus messages waiting for the driver.
pub const INBOUND_QUEUE: usize = 16_384;

/// A range of committed blocks, asked of a peer.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct SyncRequest {
    pub from: Height,
    pub to: Height,
}

#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct SyncBlock {
    pub batch: Batch,
    pub certificate: CommitCertificate,
}

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
    Consensus {
        from: ValidatorIndex,
        bytes: Bytes,
    },
    Blocks {
        from: ValidatorIndex,
        blocks: Vec<SyncBlock>,
    },
    /// A sync request failed or returned nothing.
    FetchFailed,
}

/// Checks and admits the transactions of a gossip message; true if the message is acceptable
/// to forward (decodes and every signature verifies), false to reject it.
pub type GossipValidator = Arc<dyn Fn(Vec<Tx>) -> bool + Send + Sync>;

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

/// Reads one length-prefixed frame of at most `max` bytes.
async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds {max}"),
        ));
    }
    let mut bytes = vec![0u8; length];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Writes one length-prefixed frame and closes the stream.
async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

async fn read_framed<T: AsyncRead + Unpin + Send, V: BorshDeserialize>(
    io: &mut T,
    max: usize,
) -> io::Result<V> {
    let bytes = read_frame(io, max).await?;
    borsh::from_slice(&bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

async fn write_framed<T: AsyncWrite + Unpin + Send, V: BorshSerialize>(
    io: &mut T,
    value: &V,
) -> io::Result<()> {
    write_frame(io, &borsh::to_vec(value)?).await
}

impl<Req, Resp> request_response::Codec for BorshCodec<Req, Resp>
where
    Req: BorshSerialize + BorshDeserialize + Send + Sync + 'static,
    Resp: BorshSerialize + BorshDeserialize + Send + Sync + 'static,
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
        write_framed(io, &request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Resp,
    ) -> io::Result<()> {
        write_framed(io, &response).await
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

type ConsensusCodec = RawCodec;
type SyncCodec = BorshCodec<SyncRequest, Vec<SyncBlock>>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    consensus: request_response::Behaviour<ConsensusCodec>,
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
}

/// Handles for the rest of the node.
pub struct Network {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    /// Admitted transactions to gossip.
    pub gossip: mpsc::Sender<Tx>,
    /// Number of connected peers.
    pub peers: Arc<Mutex<usize>>,
}

fn protocol(genesis_hash: &Digest, name: &str) -> StreamProtocol {
    let short = &genesis_hash.to_hex()[..16];
    // Only ASCII hex and fixed names: always a valid protocol string.
    StreamProtocol::try_from_owned(format!("/tetrad/{short}/{name}/1"))
        .unwrap_or(StreamProtocol::new("/tetrad/invalid/1"))
}

/// Binds the listen address and starts the network task.
pub async fn start(
    config: NetworkConfig,
    store: Arc<Store>,
    validator: GossipValidator,
) -> anyhow::Result<Network> {
    let genesis_hash = config.genesis_hash;
    let consensus = request_response::Behaviour::with_codec(
        RawCodec { max: MESSAGE_BYTES_MAX },
        [(protocol(&genesis_hash, "consensus"), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(1024),
    );
    let sync = request_response::Behaviour::with_codec(
        SyncCodec::new(64, SYNC_RESPONSE_BYTES_MAX),
        [(protocol(&genesis_hash, "sync"), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
    );
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(GOSSIP_BYTES_MAX + 1024)
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
    let identify = identify::Behaviour::new(
        identify::Config::new(format!("tetrad/{genesis_hash}"), config.keypair.public())
            .with_agent_version(format!("tetrad/{}", env!("CARGO_PKG_VERSION"))),
    );
    let behaviour = Behaviour { consensus, sync, gossip, identify, ping: ping::Behaviour::default() };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_behaviour(|_| behaviour)?
        .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(Duration::from_secs(3600)))
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
    let (command_tx, command_rx) = mpsc::channel(INBOUND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(INBOUND_QUEUE);
    let (gossip_tx, gossip_rx) = mpsc::channel(GOSSIP_TXS_MAX * 64);
    let peers = Arc::new(Mutex::new(0usize));
    let task = Task::new(swarm, config, store, validator, topic, event_tx, peers.clone());
    tokio::spawn(task.run(command_rx, gossip_rx));
    Ok(Network { commands: command_tx, events: event_rx, gossip: gossip_tx, peers })
}

struct Task {
    swarm: Swarm<Behaviour>,
    genesis_hash: Digest,
    me: Option<ValidatorIndex>,
    validators: Vec<(PeerId, Multiaddr)>,
    index_of: HashMap<PeerId, ValidatorIndex>,
    store: Arc<Store>,
    validator: GossipValidator,
    topic: gossipsub::IdentTopic,
    events: mpsc::Sender<Event>,
    peers: Arc<Mutex<usize>>,
    /// Validators to dial: next attempt and current backoff.
    redial: BTreeMap<PeerId, (Instant, Duration)>,
    fetches: HashMap<OutboundRequestId, ValidatorIndex>,
    gossip_buffer: Vec<Tx>,
    validations: mpsc::Sender<(gossipsub::MessageId, PeerId, bool)>,
    gossip_checks: Arc<tokio::sync::Semaphore>,
    validation_results: Option<mpsc::Receiver<(gossipsub::MessageId, PeerId, bool)>>,
}

impl Task {
    fn new(
        swarm: Swarm<Behaviour>,
        config: NetworkConfig,
        store: Arc<Store>,
        validator: GossipValidator,
        topic: gossipsub::IdentTopic,
        events: mpsc::Sender<Event>,
        peers: Arc<Mutex<usize>>,
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
        let (validations, validation_results) = mpsc::channel(1024);
        Task {
            swarm,
            genesis_hash: config.genesis_hash,
            me: config.me,
            validators: config.validators,
            index_of,
            store,
            validator,
            topic,
            events,
            peers,
            redial,
            fetches: HashMap::new(),
            gossip_buffer: Vec::new(),
            validations,
            gossip_checks: Arc::new(tokio::sync::Semaphore::new(GOSSIP_CHECKS_MAX)),
            validation_results: Some(validation_results),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut gossip: mpsc::Receiver<Tx>) {
        for (peer, address) in self.validators.clone() {
            self.swarm.add_peer_address(peer, address);
        }
        let mut validation_results = self.validation_results.take().unwrap_or_else(|| mpsc::channel(1).1);
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
                        self.gossip_buffer.push(tx);
                        if self.gossip_buffer.len() >= GOSSIP_TXS_MAX {
                            self.flush_gossip();
                        }
                    }
                }
                Some((id, source, accept)) = validation_results.recv() => {
                    let acceptance = if accept { gossipsub::MessageAcceptance::Accept } else { gossipsub::MessageAcceptance::Reject };
                    self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &source, acceptance);
                }
                _ = gossip_flush.tick() => self.flush_gossip(),
                _ = redial_tick.tick() => self.redial(),
            }
        }
        debug!("network task stopped");
    }

    fn flush_gossip(&mut self) {
        if self.gossip_buffer.is_empty() {
            return;
        }
        let txs = std::mem::take(&mut self.gossip_buffer);
        let bytes = borsh::to_vec(&txs).unwrap_or_default();
        if let Err(error) = self.swarm.behaviour_mut().gossip.publish(self.topic.clone(), bytes) {
            // No peers yet, or a duplicate: the transactions are in our mempool regardless.
            debug!(%error, txs = txs.len(), "gossip publish");
            metrics::dropped("gossip_publish_failed", txs.len() as u64);
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
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send { to, bytes } => {
                let targets: Vec<PeerId> = match to {
                    Some(index) => {
                        self.validators.get(index.as_usize()).map(|(peer, _)| *peer).into_iter().collect()
                    }
                    None => self
                        .validators
                        .iter()
                        .enumerate()
                        .filter(|(index, _)| Some(ValidatorIndex(*index as u16)) != self.me)
                        .map(|(_, (peer, _))| *peer)
                        .collect(),
                };
                for peer in targets {
                    tracing::trace!(%peer, len = bytes.len(), id = %&blake3::hash(&bytes).to_hex()[..12], "consensus out");
                    if self.swarm.is_connected(&peer) {
                        self.swarm.behaviour_mut().consensus.send_request(&peer, bytes.clone());
                    } else {
                        // Retransmission and state transfer cover what a disconnected peer misses.
                        metrics::dropped("peer_not_connected", 1);
                    }
                }
            }
            Command::Fetch { peer, from, to } => {
                let Some((peer_id, _)) = self.validators.get(peer.as_usize()).cloned() else { return };
                if !self.swarm.is_connected(&peer_id) {
                    let _ = self.events.try_send(Event::FetchFailed);
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer_id, SyncRequest { from, to });
                self.fetches.insert(id, peer);
            }
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
                debug!(peer = %peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                }
                self.update_peers();
            }
            _ => {}
        }
    }

    fn on_consensus(&mut self, event: request_response::Event<Bytes, u8>) {
        if let request_response::Event::Message {
            peer,
            message: request_response::Message::Request { request, channel, .. },
            ..
        } = event
        {
            tracing::trace!(%peer, len = request.len(), id = %&blake3::hash(&request).to_hex()[..12], "consensus in");
            let _ = self.swarm.behaviour_mut().consensus.send_response(channel, 1);
            let Some(&from) = self.index_of.get(&peer) else {
                metrics::dropped("consensus_from_non_validator", 1);
                return;
            };
            if self.events.try_send(Event::Consensus { from, bytes: request }).is_err() {
                metrics::dropped("inbound_queue_full", 1);
            }
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, Vec<SyncBlock>>) {
        match event {
            request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            } => {
                let blocks = serve_blocks(&self.store, &request);
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, blocks);
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, response },
                ..
            } => {
                if let Some(from) = self.fetches.remove(&request_id) {
                    let event = if response.is_empty() {
                        Event::FetchFailed
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
                    let _ = self.events.try_send(Event::FetchFailed);
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, data: Vec<u8>) {
        let validator = self.validator.clone();
        let results = self.validations.clone();
        // Signature checks are CPU work: off the network task, a bounded number at once. A
        // message that finds no room is ignored (neither forwarded nor held against the peer).
        let Ok(permit) = self.gossip_checks.clone().try_acquire_owned() else {
            metrics::dropped("gossip_validation_queue_full", 1);
            self.swarm.behaviour_mut().gossip.report_message_validation_result(
                &id,
                &source,
                gossipsub::MessageAcceptance::Ignore,
            );
            return;
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let accept = match borsh::from_slice::<Vec<Tx>>(&data) {
                Ok(txs) if txs.len() <= GOSSIP_TXS_MAX => validator(txs),
                _ => false,
            };
            if !accept {
                metrics::dropped("invalid_gossip", 1);
            }
            let _ = results.blocking_send((id, source, accept));
        });
    }
}

/// Reads committed blocks `[from, to]` (at most [`SYNC_BLOCKS_MAX`]) from the store.
fn serve_blocks(store: &Store, request: &SyncRequest) -> Vec<SyncBlock> {
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    let last = request.to.0.min(request.from.0.saturating_add(SYNC_BLOCKS_MAX - 1));
    for height in request.from.0.max(1)..=last {
        match store.block(Height(height)) {
            Ok(Some(block)) => {
                bytes += block.batch.payload.len() + 1024;
                if bytes > SYNC_RESPONSE_BYTES_MAX && !blocks.is_empty() {
                    break;
                }
                blocks.push(SyncBlock { batch: block.batch, certificate: block.certificate });
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
