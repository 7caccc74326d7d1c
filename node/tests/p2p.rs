//! The peer-to-peer port under attack, against real `tetrad` validators: an in-test libp2p
//! peer plays a stranger (a random peer id) and a Byzantine validator (validator 1's own
//! network key, listening at validator 1's address while the real validator 1 stays down).
//!
//! - a stranger's consensus frame is refused in protocol negotiation (it used to be read in
//!   full, up to 32 MiB, and acknowledged before the sender was checked);
//! - full nodes from one address are admitted up to a bound;
//! - a frame over the genesis-derived limit is refused after its length prefix;
//! - a repeated `FetchBatch`, and a stale `Status` (which asks for the whole new-view), are
//!   answered once per interval, not once per request;
//! - stale commits with bad signatures are dropped as stale before any signature is checked;
//! - a flood of fresh-looking votes with bad signatures from the Byzantine validator does not
//!   stop the honest three from committing;
//! - a full node that asks for the whole chain hundreds of times at once is served a few at a
//!   time (the requests used to be served in full, on the network's event loop, each time);
//! - a full node that publishes an invalid gossip message is disconnected and not let back in
//!   (gossip had no penalty at all).
//!
//! Each finding is a test of its own with its own cluster, so that each can be seen failing
//! against the code before its fix (`TETRAD_TEST_BINARY=<old tetrad> cargo nextest run …`).

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

/// The node's protocol `name` on this network (`consensus`, `sync`).
fn protocol(cluster: &Cluster, name: &str) -> StreamProtocol {
    let short = &cluster.genesis_hash.to_hex()[..16];
    StreamProtocol::try_from_owned(format!("/tetrad/{short}/{name}/1")).expect("protocol name")
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
    let protocol = protocol(cluster, "consensus");
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

/// A cluster of four validators where 0, 2 and 3 run, and a test peer that plays validator 1
/// (its network key, listening at its address) connected to node 0.
async fn byzantine_validator_1(label: &str) -> (Cluster, Peer, PeerId) {
    let mut cluster = Cluster::create(label, 4, 4);
    for node in [0, 2, 3] {
        cluster.start(node);
    }
    for node in [0, 2, 3] {
        cluster.wait_up(node, Duration::from_secs(30));
    }
    let (node0, address0) = validator_address(&cluster, 0);
    let byzantine = play_validator(&cluster, 1, node0, &address0).await;
    (cluster, byzantine, node0)
}

/// A test peer with validator `index`'s network key, listening at its address, connected to
/// `to` (the real validator `index` must be down).
async fn play_validator(cluster: &Cluster, index: usize, to: PeerId, address: &Multiaddr) -> Peer {
    let (validator, own_address) = validator_address(cluster, index);
    let mut byzantine = peer(cluster, validator_keypair(cluster, index));
    assert_eq!(*byzantine.local_peer_id(), validator);
    byzantine.listen_on(own_address).expect("listen at the validator's address");
    assert!(connect(&mut byzantine, to, address).await, "validator {index} connects");
    byzantine
}

/// Acknowledges every request that reaches `peer` for `wait`, and returns the consensus
/// messages among them that `count` picks, per sender.
async fn count_requests(
    peer: &mut Peer,
    wait: Duration,
    count: impl Fn(&Message) -> bool,
) -> std::collections::HashMap<PeerId, usize> {
    let mut counted = std::collections::HashMap::new();
    let _ = drive(peer, wait, |peer, event| {
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            peer: from,
            message: request_response::Message::Request { request, channel, .. },
            ..
        }) = event
        {
            let _ = peer.behaviour_mut().send_response(channel, 1);
            if let Frame::Whole(bytes) = request
                && Message::decode(&bytes).is_ok_and(|message| count(&message))
            {
                *counted.entry(from).or_insert(0) += 1;
            }
        }
        None::<()>
    })
    .await;
    counted
}

/// A stranger (a random peer id) may connect as a full node may, but cannot speak consensus;
/// full nodes from one address are admitted up to a bound; a full node that publishes an
/// invalid gossip message is disconnected and not let back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_speak_consensus_and_full_nodes_are_bounded() {
    let mut cluster = Cluster::create("p2p-strangers", 4, 4);
    for node in [0, 2, 3] {
        cluster.start(node);
    }
    for node in [0, 2, 3] {
        cluster.wait_up(node, Duration::from_secs(30));
    }
    let (node0, address0) = validator_address(&cluster, 0);

    // A stranger connects (as a full node may) but cannot speak consensus: the protocol is
    // not offered to it, so the frame is never read.
    let mut outsider = stranger(&cluster);
    assert!(connect(&mut outsider, node0, &address0).await, "a full node may connect");
    let (outcome, _) =
        request(&mut outsider, node0, Frame::Whole(status_message()), Duration::from_secs(10)).await;
    assert_eq!(outcome, Err("unsupported protocols".to_owned()), "a stranger's consensus frame");

    // Full nodes from one address: up to the bound (4), then refused after the handshake.
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
    // The outsider above holds one of the four places.
    assert_eq!(admitted, 3, "full nodes admitted from one address beyond the first");
    drop(full_nodes);
    drop(outsider);

    // A full node that publishes an invalid gossip message is disconnected and banned.
    let banned = invalid_gossip_from_a_full_node(&cluster).await;
    assert_eq!(banned, Ok(()), "log:\n{}", tail(&cluster.log(0)));
}

/// A frame over the genesis-derived limit, from a validator, is refused after its length
/// prefix (the limit was a constant 32 MiB, read in full).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_genesis_limit_is_refused_after_its_prefix() {
    let (cluster, mut byzantine, node0) = byzantine_validator_1("p2p-frames").await;
    // The default genesis: 1 MiB batches, so a limit of about 1 MiB; 16 MiB is far above it
    // and far below the old constant.
    let (outcome, took) =
        request(&mut byzantine, node0, Frame::PrefixOnly(16 << 20), Duration::from_secs(8)).await;
    eprintln!("a 16 MiB prefix: {outcome:?} after {took:?}");
    assert!(outcome.is_err(), "an oversized frame was acknowledged: {outcome:?}");
    assert!(
        took < Duration::from_secs(3),
        "the oversized frame was not refused at once: {outcome:?} after {took:?}"
    );
    // A whole frame of 4 MiB (over the limit, under the old constant) is not taken either.
    let (outcome, took) =
        request(&mut byzantine, node0, Frame::Whole(vec![0; 4 << 20]), Duration::from_secs(20)).await;
    eprintln!("a whole 4 MiB frame: {outcome:?} after {took:?}");
    assert!(outcome.is_err(), "a frame of 4 MiB was taken: {outcome:?}");
    // A frame within the limit is still taken.
    let (outcome, _) =
        request(&mut byzantine, node0, Frame::Whole(status_message()), Duration::from_secs(10)).await;
    assert_eq!(outcome, Ok(1));

    drop(cluster);
}

/// One Byzantine validator's cheap requests are rationed (a repeated `FetchBatch`), and its
/// stale votes are dropped before their signatures are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_validators_requests_are_rationed_and_checked_cheaply_first() {
    let (cluster, mut byzantine, node0) = byzantine_validator_1("p2p-rationed").await;
    // Commit a block, then ask node 0 for its batch 50 times in a row: it answers once per
    // status interval, not 50 times.
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
    let answers: usize = count_requests(&mut byzantine, Duration::from_secs(2), |message| {
        matches!(message, Message::Batch { .. })
    })
    .await
    .values()
    .sum();
    assert!(answers >= 1, "the batch was never sent");
    assert!(answers <= 5, "50 requests for one batch got {answers} answers in 2 s");

    // Commits for the committed height with bad signatures: dropped as stale before their
    // signature is checked (freshness is cheap, a signature is not).
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
    let _ = count_requests(&mut byzantine, Duration::from_secs(2), |_| false).await;
    let stale = metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"stale_height\"}")
        + metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"stale_view\"}");
    assert!(stale >= 1.0, "no stale commit was dropped as stale");
    assert_eq!(
        metric(&cluster, 0, bad_signature),
        checked_before,
        "stale commits had their signatures checked"
    );
}

/// A flood of fresh-looking votes with bad signatures from one validator, while clients submit:
/// the flood is dropped within that validator's own share, and the honest three keep
/// committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_validator_does_not_crowd_out_honest_votes() {
    let (cluster, mut byzantine, node0) = byzantine_validator_1("p2p-flood").await;
    let height = cluster.height(0).unwrap_or(0);
    // Node 0 verifies more slowly than the flood arrives: pinned to one core that it shares
    // with three busy loops. What it cannot verify must be the flooding peer's loss alone (a
    // shared pool of verifications used to fill with the flood and drop honest votes).
    let pid = cluster.pid(0).expect("node 0 runs").to_string();
    let pinned = std::process::Command::new("taskset").args(["-a", "-p", "-c", "0", &pid]).output();
    assert!(pinned.is_ok_and(|output| output.status.success()), "taskset (util-linux) pins node 0");
    let _busy: Vec<common::KillOnDrop> = (0..3)
        .map(|_| {
            let busy = std::process::Command::new("taskset")
                .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("a busy loop");
            common::KillOnDrop(busy)
        })
        .collect();
    let flood_until = Instant::now() + Duration::from_secs(8);
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
    let (mut sent, mut acknowledged, mut failed) = (0u64, 0u64, 0u64);
    let mut view = 0;
    // A fixed eight seconds, with as many bad prepares outstanding as one connection carries.
    while Instant::now() < flood_until {
        while sent - acknowledged - failed < 256 {
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
            match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                }) => {
                    let _ = peer.behaviour_mut().send_response(channel, 1);
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                }) => acknowledged += 1,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => failed += 1,
                _ => {}
            }
            None::<()>
        })
        .await;
        view = cluster.status(0).and_then(|status| status["view"].as_u64()).unwrap_or(view);
    }
    let latencies = submitter.join().expect("the submissions committed during the flood");
    eprintln!(
        "flood: {sent} bad prepares sent, {acknowledged} acknowledged, {failed} failed; commit latencies {latencies:?}"
    );
    let metrics = common::http()
        .get(format!("{}/metrics", cluster.rpc(0)))
        .call()
        .ok()
        .and_then(|mut response| response.body_mut().read_to_string().ok())
        .unwrap_or_default();
    for line in metrics.lines().filter(|line| line.starts_with("tetrad_messages_dropped_total")) {
        eprintln!("node 0: {line}");
    }
    assert!(acknowledged >= 5_000, "the flood was too small to mean anything: {acknowledged} taken");
    let dropped_bad = metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"bad_message_signature\"}")
        + metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"peer_inbound_budget\"}");
    assert!(dropped_bad > 0.0, "node 0 saw none of the flood");
    assert_eq!(
        metric(&cluster, 0, "tetrad_messages_dropped_total{reason=\"verification_queue_full\"}"),
        0.0,
        "messages were dropped because the flood filled a pool that honest votes share"
    );
}

/// A stale `Status` (unsigned, a few bytes) used to be answered with the whole new-view every
/// time. Validator 0, the primary of view 0, goes down; the others change view; the test peer
/// then plays validator 0, still in view 0, and sends node 2 fifty stale statuses in a row:
/// node 2 answers with its new-view at most once per status interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_status_gets_the_new_view_once_per_interval() {
    let mut cluster = Cluster::create("p2p-status", 4, 4);
    cluster.start_all();
    cluster.kill9(0);
    let tx = cluster.transfer(&cluster.account_key(0), 0, cluster.account_key(1).public_key(), 5);
    let (code, body) =
        cluster.post(2, "/txs?wait=true&timeout_ms=60000", &serde_json::to_value(&tx).expect("json"));
    assert_eq!(code, 200, "the others did not commit without validator 0: {body}\n{}", tail(&cluster.log(2)));
    let view = cluster.status(2).and_then(|status| status["view"].as_u64()).unwrap_or(0);
    assert!(view >= 1, "no view change happened (view {view})");

    let (node2, address2) = validator_address(&cluster, 2);
    let mut byzantine = play_validator(&cluster, 0, node2, &address2).await;
    // Let the connection settle (the others redial validator 0's address and find the peer).
    let _ = count_requests(&mut byzantine, Duration::from_secs(1), |_| false).await;
    for _ in 0..50 {
        byzantine.behaviour_mut().send_request(&node2, Frame::Whole(status_message()));
    }
    let new_views = count_requests(&mut byzantine, Duration::from_secs(2), |message| {
        matches!(message, Message::NewView(_))
    })
    .await
    .get(&node2)
    .copied()
    .unwrap_or(0);
    assert!(new_views >= 1, "node 2 never sent its new-view to a peer behind in view");
    assert!(new_views <= 4, "50 stale statuses got {new_views} new-views in 2 s");
}

/// Block sync as a full node asks for it: a range of heights (16 bytes), answered with a frame
/// of blocks (only its size is kept here).
#[derive(Clone, Default)]
struct SyncClientCodec;

impl request_response::Codec for SyncClientCodec {
    type Protocol = StreamProtocol;
    type Request = (u64, u64);
    type Response = usize;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<(u64, u64)> {
        Err(io::Error::other("this peer serves no sync"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<usize> {
        let mut length = [0u8; 4];
        io.read_exact(&mut length).await?;
        let length = u32::from_le_bytes(length) as usize;
        if length > 64 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
        }
        let mut bytes = vec![0u8; length];
        io.read_exact(&mut bytes).await?;
        Ok(length)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        (from, to): (u64, u64),
    ) -> io::Result<()> {
        let mut request = from.to_le_bytes().to_vec();
        request.extend_from_slice(&to.to_le_bytes());
        io.write_all(&(request.len() as u32).to_le_bytes()).await?;
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: usize,
    ) -> io::Result<()> {
        Err(io::Error::other("this peer serves no sync"))
    }
}

/// A full node (a random peer id) that asks for the whole chain 200 times at once, while
/// clients submit: node 0 serves it a few requests at a time, off its network loop, and refuses
/// the rest at once; the network keeps committing. (A 16-byte request used to be served in
/// full from RocksDB on the network's event loop, every time: 200 requests, 200 answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_asking_for_the_chain_again_and_again_is_served_a_few_at_a_time() {
    let mut cluster = Cluster::create("p2p-sync", 4, 24);
    cluster.start_all();
    let (node0, address0) = validator_address(&cluster, 0);
    // A chain worth asking for: 24 senders, 20 transfers each, as fast as they are admitted.
    let to = cluster.account_key(0).public_key();
    let mut last = Vec::new();
    for nonce in 0..20 {
        for sender in 0..24 {
            let tx = cluster.transfer(&cluster.account_key(sender), nonce, to, 1);
            let (code, body) = cluster.submit(sender as usize % 2 * 2, &tx);
            assert_eq!(code, 202, "{body}");
            if nonce == 19 {
                last.push(body["hash"].as_str().expect("hash").to_owned());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for hash in &last {
        while cluster.get(0, &format!("/txs/{hash}")).1["status"] != "committed" {
            assert!(Instant::now() < deadline, "the load did not commit; log:\n{}", tail(&cluster.log(0)));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let height = cluster.height(0).expect("height");

    let protocol = protocol(&cluster, "sync");
    let mut full_node = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(move |_| {
            request_response::Behaviour::with_codec(
                SyncClientCodec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(4096),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|config| config.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    full_node
        .dial(libp2p::swarm::dial_opts::DialOpts::peer_id(node0).addresses(vec![address0]).build())
        .expect("dial");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !full_node.is_connected(&node0) {
        let _ = tokio::time::timeout_at(deadline, full_node.select_next_some()).await.expect("connected");
    }

    // Honest submissions go on meanwhile (a thread of their own).
    let submitter = {
        let net = cluster.net.clone();
        std::thread::spawn(move || {
            let key = net.account_key(1);
            for nonce in 20..24 {
                let tx = net.transfer(&key, nonce, to, 1);
                let (code, body) =
                    net.post(2, "/txs?wait=true&timeout_ms=30000", &serde_json::to_value(&tx).expect("json"));
                assert_eq!(code, 200, "submission {nonce} while a full node asks for the chain: {body}");
            }
        })
    };
    let asked = 200;
    for _ in 0..asked {
        full_node.behaviour_mut().send_request(&node0, (1, height));
    }
    let (mut answered, mut bytes, mut refused) = (0usize, 0usize, 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while answered + refused < asked {
        let Ok(event) = tokio::time::timeout_at(deadline, full_node.select_next_some()).await else { break };
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => {
                answered += 1;
                bytes += response;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => refused += 1,
            _ => {}
        }
    }
    submitter.join().expect("the honest submissions committed while a full node asked for the chain");
    eprintln!("sync flood: {asked} asked, {answered} answered ({bytes} bytes), {refused} refused");
    assert!(answered >= 1, "node 0 never served the full node");
    // One request of a peer is served at a time and the others are refused at once, so how many
    // are served depends on how the 200 arrivals interleave with the reads (22 in a CI run on
    // 2026-12-02, over the tenth this used to demand). The code before served all 200; a quarter
    // keeps that apart from timing.
    assert!(
        answered <= asked / 4,
        "{answered} of {asked} simultaneous requests of one full node for the whole chain were served ({bytes} bytes)"
    );
}
