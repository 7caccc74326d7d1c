//! The peer-to-peer port under attack, against real `tetrad` validators: an in-test libp2p
//! peer plays a stranger (a random peer id) and a Byzantine validator (validator 1's own
//! network key, listening at validator 1's address while the real validator 1 stays down).
//!
//! - a stranger's consensus frame is refused in protocol negotiation (it used to be read in
//!   full, up to 32 MiB, and acknowledged before the sender was checked);
//! - full nodes from one address are admitted up to a bound;
//! - a frame over the genesis-derived limit is refused after its length prefix;
//! - a repeated `FetchBatch` is answered once per interval, not once per request;
//! - stale commits with bad signatures are dropped as stale before any signature is checked;
//! - a flood of fresh-looking votes with bad signatures from the Byzantine validator does not
//!   stop the honest three from committing;
//! - a full node that publishes an invalid gossip message is disconnected and not let back in
//!   (gossip had no penalty at all).

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{Cluster, tail};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub};
use serde_json::Value;
use tetrad_consensus::wire::Message;
use tetrad_consensus::{Commit, Digest, Height, Prepare, Signature, Signed, ValidatorIndex, View};

/// What the test peer sends: a whole frame, or only a length prefix (then it waits).
#[derive(Debug, Clone)]
enum Frame {
    Whole(Vec<u8>),
    PrefixOnly(u32),
}

/// The consensus protocol's framing, as a peer sees it.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = u8;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        let mut length = [0u8; 4];
        io.read_exact(&mut length).await?;
        let length = u32::from_le_bytes(length) as usize;
        if length > 64 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
        }
        let mut bytes = vec![0u8; length];
        io.read_exact(&mut bytes).await?;
        Ok(Frame::Whole(bytes))
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
        frame: Frame,
    ) -> io::Result<()> {
        match frame {
            Frame::Whole(bytes) => {
                io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
                io.write_all(&bytes).await?;
                io.close().await
            }
            Frame::PrefixOnly(length) => {
                io.write_all(&length.to_le_bytes()).await?;
                io.flush().await
            }
        }
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

type Peer = Swarm<request_response::Behaviour<RawCodec>>;

fn consensus_protocol(cluster: &Cluster) -> StreamProtocol {
    let short = &cluster.genesis_hash.to_hex()[..16];
    StreamProtocol::try_from_owned(format!("/tetrad/{short}/consensus/1")).expect("protocol name")
}

fn genesis(cluster: &Cluster) -> Value {
    let text = std::fs::read_to_string(cluster.dir.join("net/genesis.json")).expect("genesis");
    serde_json::from_str(&text).expect("genesis JSON")
}

fn validator_address(cluster: &Cluster, index: usize) -> (PeerId, Multiaddr) {
    let genesis = genesis(cluster);
    let validator = &genesis["validators"][index];
    (
        validator["peer_id"].as_str().expect("peer id").parse().expect("peer id"),
        validator["p2p_address"].as_str().expect("address").parse().expect("multiaddr"),
    )
}

/// A test peer with `keypair` (a stranger's, or a validator's).
fn peer(cluster: &Cluster, keypair: libp2p::identity::Keypair) -> Peer {
    let protocol = consensus_protocol(cluster);
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(move |_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(protocol, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(20))
                    .with_max_concurrent_streams(4096),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn stranger(cluster: &Cluster) -> Peer {
    peer(cluster, libp2p::identity::Keypair::generate_ed25519())
}

/// Validator `index`'s network key, as the node derives it.
fn validator_keypair(cluster: &Cluster, index: usize) -> libp2p::identity::Keypair {
    let key =
        tetrad_genesis::KeyFile::read(&cluster.home(index).join("network_key.json")).expect("network key");
    let mut seed = key.secret.seed();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).expect("ed25519 key")
}

/// Drives `peer` until `done` says so (or `timeout` passes; then `None`).
async fn drive<T>(
    peer: &mut Peer,
    timeout: Duration,
    mut done: impl FnMut(&mut Peer, SwarmEvent<request_response::Event<Frame, u8>>) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, peer.select_next_some()).await.ok()?;
        if let Some(result) = done(peer, event) {
            return Some(result);
        }
    }
}

async fn connect(peer: &mut Peer, to: PeerId, address: &Multiaddr) -> bool {
    peer.dial(libp2p::swarm::dial_opts::DialOpts::peer_id(to).addresses(vec![address.clone()]).build())
        .expect("dial");
    drive(peer, Duration::from_secs(10), |_, event| match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == to => Some(true),
        SwarmEvent::OutgoingConnectionError { .. } => Some(false),
        _ => None,
    })
    .await
    .unwrap_or(false)
}

/// Whether `peer` is still connected to `to` after `wait` (a refused connection closes right
/// after its handshake).
async fn still_connected(peer: &mut Peer, to: PeerId, wait: Duration) -> bool {
    let _ = drive(peer, wait, |_, _| None::<()>).await;
    peer.is_connected(&to)
}

/// How a request ended: acknowledged, or failed (and how), and after how long.
async fn request(
    peer: &mut Peer,
    to: PeerId,
    frame: Frame,
    timeout: Duration,
) -> (Result<u8, String>, Duration) {
    let started = Instant::now();
    let id = peer.behaviour_mut().send_request(&to, frame);
    let outcome = drive(peer, timeout, |_, event| match event {
        SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Response { request_id, response },
            ..
        }) if request_id == id => Some(Ok(response)),
        SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, error, .. })
            if request_id == id =>
        {
            Some(Err(match error {
                OutboundFailure::UnsupportedProtocols => "unsupported protocols".to_owned(),
                other => other.to_string(),
            }))
        }
        _ => None,
    })
    .await
    .unwrap_or_else(|| Err("no answer".to_owned()));
    (outcome, started.elapsed())
}

/// A full node that speaks gossipsub only (anonymous messages, as the validators expect).
fn gossip_stranger() -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .build()
                .expect("gossipsub config");
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config).expect("gossipsub")
        })
        .expect("behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives a gossip swarm until `done` says so (or `timeout` passes; then `None`).
async fn drive_gossip<T>(
    peer: &mut Swarm<gossipsub::Behaviour>,
    timeout: Duration,
    mut done: impl FnMut(SwarmEvent<gossipsub::Event>) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, peer.select_next_some()).await.ok()?;
        if let Some(result) = done(event) {
            return Some(result);
        }
    }
}

/// A full node publishes one gossip message that does not decode: node 0 must disconnect it
/// and refuse it afterwards. Returns what went wrong, if anything.
async fn invalid_gossip_from_a_full_node(cluster: &Cluster) -> Result<(), String> {
    let (node0, address0) = validator_address(cluster, 0);
    let genesis = genesis(cluster);
    let topic = gossipsub::IdentTopic::new(format!(
        "/tetrad/{}/{}/txs",
        genesis["chain_id"].as_str().expect("chain id"),
        &cluster.genesis_hash.to_hex()[..16]
    ));
    let mut spammer = gossip_stranger();
    spammer.behaviour_mut().subscribe(&topic).expect("subscribe");
    spammer
        .dial(libp2p::swarm::dial_opts::DialOpts::peer_id(node0).addresses(vec![address0.clone()]).build())
        .expect("dial");
    // Node 0's subscription to the topic arrives once the connection is up.
    let subscribed = drive_gossip(&mut spammer, Duration::from_secs(15), |event| match event {
        SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) if peer_id == node0 => Some(true),
        SwarmEvent::OutgoingConnectionError { .. } => Some(false),
        _ => None,
    })
    .await;
    if subscribed != Some(true) {
        return Err(format!("the full node never saw node 0 on the gossip topic: {subscribed:?}"));
    }
    spammer
        .behaviour_mut()
        .publish(topic.clone(), vec![0xff; 64])
        .map_err(|error| format!("publish: {error}"))?;
    let closed = drive_gossip(&mut spammer, Duration::from_secs(10), |event| match event {
        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } if peer_id == node0 => Some(()),
        _ => None,
    })
    .await;
    if closed.is_none() {
        return Err(
            "a full node that published an invalid gossip message is still connected after 10 s".to_owned()
        );
    }
    // Dialled again, it is refused (the connection closes right after its handshake).
    spammer
        .dial(libp2p::swarm::dial_opts::DialOpts::peer_id(node0).addresses(vec![address0]).build())
        .expect("dial");
    let _ = drive_gossip(&mut spammer, Duration::from_secs(3), |_| None::<()>).await;
    if spammer.is_connected(&node0) {
        return Err("the full node that published an invalid gossip message was let back in".to_owned());
    }
    Ok(())
}

fn status_message() -> Vec<u8> {
    Message::Status(tetrad_consensus::wire::Status {
        view: View(0),
        view_active: true,
        committed: Height(0),
        stable: Height(0),
    })
    .encode()
}

fn metric(cluster: &Cluster, node: usize, name: &str) -> f64 {
    let url = format!("{}/metrics", cluster.rpc(node));
    let text = common::http()
        .get(&url)
        .call()
        .ok()
        .and_then(|mut response| response.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_a_byzantine_validator_on_the_p2p_port() {
    let mut cluster = Cluster::create("p2p", 4, 4);
    // Validator 1 stays down: the test peer plays it.
    for node in [0, 2, 3] {
        cluster.start(node);
    }
    for node in [0, 2, 3] {
        cluster.wait_up(node, Duration::from_secs(30));
    }
    let (node0, address0) = validator_address(&cluster, 0);

    // 1. A stranger connects (as a full node may) but cannot speak consensus: the protocol is
    //    not offered to it, so the frame is never read.
    let mut outsider = stranger(&cluster);
    assert!(connect(&mut outsider, node0, &address0).await, "a full node may connect");
    let (outcome, _) =
        request(&mut outsider, node0, Frame::Whole(status_message()), Duration::from_secs(10)).await;
    assert_eq!(outcome, Err("unsupported protocols".to_owned()), "a stranger's consensus frame");

    // 2. Full nodes from one address: up to the bound (4), then refused after the handshake.
    let mut full_nodes: Vec<Peer> = Vec::new();
    let mut admitted = 0;
    for _ in 0..6 {
        let mut full_node = stranger(&cluster);
        if connect(&mut full_node, node0, &address0).await
            && still_connected(&mut full_node, node0, Duration::from_millis(500)).await
        {
            admitted += 1;
        }
        full_nodes.push(full_node);
    }
    // The outsider of step 1 holds one of the four places.
    assert_eq!(admitted, 3, "full nodes admitted from one address beyond the first");
    drop(full_nodes);
    drop(outsider);

    // 3. The Byzantine validator 1: a frame announced over the genesis-derived limit (the
    //    default genesis: 1 MiB batches, so about 1 MiB) is refused after its length prefix,
    //    without waiting for the body.
    let (validator1, address1) = validator_address(&cluster, 1);
    let mut byzantine = peer(&cluster, validator_keypair(&cluster, 1));
    assert_eq!(*byzantine.local_peer_id(), validator1);
    byzantine.listen_on(address1).expect("listen at validator 1's address");
    assert!(connect(&mut byzantine, node0, &address0).await, "validator 1 connects");
    let (outcome, took) =
        request(&mut byzantine, node0, Frame::PrefixOnly(16 << 20), Duration::from_secs(8)).await;
    assert!(outcome.is_err(), "an oversized frame was acknowledged: {outcome:?}");
    assert!(
        took < Duration::from_secs(3),
        "the oversized frame was not refused at once: {outcome:?} after {took:?}"
    );
    // A frame within the limit is still taken.
    let (outcome, _) =
        request(&mut byzantine, node0, Frame::Whole(status_message()), Duration::from_secs(10)).await;
    assert_eq!(outcome, Ok(1));

    // 4. Commit a block, then ask node 0 for its batch 50 times in a row: it answers once per
    //    status interval, not 50 times.
    let key = cluster.account_key(0);
    let to = cluster.account_key(1).public_key();
    let tx = cluster.transfer(&key, 0, to, 5);
    let (code, body) =
        cluster.post(0, "/txs?wait=true&timeout_ms=30000", &serde_json::to_value(&tx).expect("json"));
    assert_eq!(code, 200, "{body}\n{}", tail(&cluster.log(0)));
    let height = body["height"].as_u64().expect("height");
    let (_, block) = cluster.get(0, &format!("/blocks/{height}"));
    let digest = Digest::from_hex(block["header"]["batch_digest"].as_str().expect("digest")).expect("hex");
    let fetch = Message::FetchBatch { height: Height(height), digest }.encode();
    for _ in 0..50 {
        byzantine.behaviour_mut().send_request(&node0, Frame::Whole(fetch.clone()));
    }
    let mut answers = 0;
    let _ = drive(&mut byzantine, Duration::from_secs(2), |peer, event| {
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { request: Frame::Whole(bytes), channel, .. },
            ..
        }) = event
        {
            let _ = peer.behaviour_mut().send_response(channel, 1);
            if matches!(Message::decode(&bytes), Ok(Message::Batch { .. })) {
                answers += 1;
            }
        }
        None::<()>
    })
    .await;
    assert!(answers >= 1, "the batch was never sent");
    assert!(answers <= 5, "50 requests for one batch got {answers} answers in 2 s");

    // 4b. Commits for the committed height with bad signatures: dropped as stale before their
    //     signature is checked (freshness is cheap, a signature is not).
    let bad_signature = "tetrad_messages_dropped_total{reason=\"bad_message_signature\"}";
    let checked_before = metric(&cluster, 0, bad_signature);
    for index in 0..100u64 {
        let commit = Message::Commit(Signed {
            body: Commit { view: View(0), height: Height(height), digest: Digest::of(&index.to_le_bytes()) },
            signer: ValidatorIndex(1),
            signature: Signature([7; 64]),
        });
        byzantine.behaviour_mut().send_request(&node0, Frame::Whole(commit.encode()));
    }
    let _ = drive(&mut byzantine, Duration::from_secs(2), |peer, event| {
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { channel, .. },
            ..
        }) = event
        {
            let _ = peer.behaviour_mut().send_response(channel, 1);
        }
        None::<()>
    })
    .await;
    let stale = metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"stale_height\"}")
        + metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"stale_view\"}");
    assert!(stale >= 1.0, "no stale commit was dropped as stale");
    assert_eq!(
        metric(&cluster, 0, bad_signature),
        checked_before,
        "stale commits had their signatures checked"
    );

    // 5. A flood of fresh-looking prepares with bad signatures from validator 1, while clients
    //    submit: the honest three keep committing.
    let flood_until = Instant::now() + Duration::from_secs(12);
    let submitter = {
        let net = cluster.net.clone();
        std::thread::spawn(move || {
            let key = net.account_key(2);
            let to = net.account_key(3).public_key();
            let mut latencies = Vec::new();
            for nonce in 0..8 {
                let tx = net.transfer(&key, nonce, to, 1);
                let started = Instant::now();
                let (code, body) = net.post(
                    nonce as usize % 2 * 2,
                    "/txs?wait=true&timeout_ms=20000",
                    &serde_json::to_value(&tx).expect("json"),
                );
                assert_eq!(code, 200, "submission {nonce} during the flood: {body}");
                latencies.push(started.elapsed());
            }
            latencies
        })
    };
    let mut sent = 0u64;
    let mut view = 0;
    // At least 5,000 bad prepares, and for as long as the honest submissions take.
    while Instant::now() < flood_until && (!submitter.is_finished() || sent < 5_000) {
        for _ in 0..200 {
            let prepare = Message::Prepare(Signed {
                body: Prepare {
                    view: View(view),
                    height: Height(height + 1 + sent % 32),
                    digest: Digest::of(&sent.to_le_bytes()),
                },
                signer: ValidatorIndex(1),
                signature: Signature([7; 64]),
            });
            byzantine.behaviour_mut().send_request(&node0, Frame::Whole(prepare.encode()));
            sent += 1;
        }
        let _ = drive(&mut byzantine, Duration::from_millis(20), |peer, event| {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = event
            {
                let _ = peer.behaviour_mut().send_response(channel, 1);
            }
            None::<()>
        })
        .await;
        view = cluster.status(0).and_then(|status| status["view"].as_u64()).unwrap_or(view);
    }
    let latencies = submitter.join().expect("the submissions committed during the flood");
    eprintln!("flood: {sent} bad prepares sent; commit latencies {latencies:?}");
    assert!(sent > 1000, "the flood was too small to mean anything: {sent}");
    let dropped_bad = metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"bad_message_signature\"}")
        + metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"peer_inbound_budget\"}");
    assert!(dropped_bad > 0.0, "node 0 saw none of the flood");
    assert_eq!(
        metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"verification_queue_full\"}"),
        0.0,
        "honest messages were dropped because the flood filled a shared queue"
    );

    // 6. A full node that publishes an invalid gossip message is disconnected and banned.
    let banned = invalid_gossip_from_a_full_node(&cluster).await;
    assert_eq!(banned, Ok(()), "log:\n{}", tail(&cluster.log(0)));
}
