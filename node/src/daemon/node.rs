//! `tetrad run`: assembles a node from its home directory and runs it until SIGINT/SIGTERM.
//!
//! The node watches its core loops: if the consensus driver, the network task, the executor
//! thread or the RPC server ends (or panics) while no shutdown was asked for, the reason is
//! logged and `tetrad run` exits non-zero, so that a supervisor restarts it; a node that stopped
//! agreeing must not go on answering `/health` as if it were fine.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result, bail};
use tetrad_consensus::safety::{Restored, restore};
use tetrad_consensus::{Replica, ReplicaConfig, ValidatorIndex, ValidatorSchedule};
use tetrad_genesis::{Genesis, KeyFile};
use tetrad_ledger::{SafetyStore, Store};
use tetrad_rpc::Limits;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

use crate::config::{Config, Home};
use crate::daemon::admission::AdmissionLimits;
use crate::daemon::api::Api;
use crate::daemon::driver::{ConsensusStatus, Driver};
use crate::daemon::executor::Executor;
use crate::daemon::health::stall_after;
use crate::daemon::keys::{OwnKeys, SharedSchedule};
use crate::daemon::mempool::{Mempool, MempoolConfig};
use crate::daemon::metrics;
use crate::daemon::network::{self, FrameLimits, GossipValidator, GossipVerdict, NetworkConfig};
use crate::daemon::safety_check;
use crate::identity;

/// Runs the node in `home` until a shutdown signal. `accept_double_sign_risk`: start a validator
/// whose safety records are missing or older than its chain (see `safety_check.rs`).
pub async fn run(home_dir: &Path, accept_double_sign_risk: bool) -> Result<()> {
    let home = Home::new(home_dir);
    if !home.config().exists() {
        bail!("{}: not a node home (no config.toml); create one with `tetrad init`", home_dir.display());
    }
    let config = Config::load(&home.config())?;
    let genesis = Genesis::load(&home.genesis())?;
    crate::cli::check_peer_ids(&genesis, &home.genesis())?;
    let own_keys = OwnKeys::load(&home)?;
    for note in &own_keys.notes {
        warn!("{note}");
    }
    let network_key = KeyFile::read(&home.network_key())?;
    let genesis_hash = genesis.hash();
    genesis.validator_set().with_context(|| format!("{}: validator set", home.genesis().display()))?;
    metrics::install();

    let store = Arc::new(
        Store::open_or_init(&home.data(), &genesis.ledger_state())
            .with_context(|| format!("opening the database in {}", home.data().display()))?,
    );
    let head = store.head();
    let registry = store.registry();
    let schedule =
        SharedSchedule::new(registry.schedule(head.height).context("the stored validator registry")?);
    let me = identify(&home, &genesis, &own_keys, &registry, &network_key)?;
    // A validator's safety records are checked against the chain before anything is signed.
    let checked = match me {
        Some(index) => Some(safety_check::open_checked(
            &home,
            &store,
            genesis_hash,
            index,
            &genesis.consensus,
            accept_double_sign_risk,
        )?),
        None => {
            if accept_double_sign_risk {
                warn!("{} is ignored: this node is not a validator", safety_check::ACCEPT_RISK_FLAG);
            }
            None
        }
    };
    let low = checked
        .as_ref()
        .and_then(|checked| checked.restored.stable.as_ref())
        .map(|stable| stable.statement.height)
        .unwrap_or_default();
    let keyring = own_keys.keyring(&registry, low).map(|(_, keys)| keys);
    let role = match (me, &keyring) {
        (Some(_), Some(_)) => "validator",
        (Some(_), None) => "validator waiting for its key in the registry",
        (None, _) => "full node",
    };
    info!(
        node = %config.name,
        chain = %genesis.chain_id,
        genesis = %genesis_hash,
        height = %head.height,
        role,
        "starting"
    );
    if let (Some(index), None) = (me, &keyring) {
        // The registry of this data/ does not know this home's key yet: the key was rotated
        // after the last block here (a resync after a rotation). Following the chain brings
        // the rotation, and the driver starts validating then.
        info!(validator = %index, "following the chain until the registry holds this home's consensus key");
    }

    // Bind the RPC port first: a port conflict is reported before anything else starts.
    let rpc_listener = tokio::net::TcpListener::bind(&config.rpc_listen).await.with_context(|| {
        format!(
            "cannot bind the RPC address {} (rpc_listen in {})",
            config.rpc_listen,
            home.config().display()
        )
    })?;

    let mempool = Arc::new(Mutex::new(Mempool::new(MempoolConfig::default())));
    let new_txs = Arc::new(tokio::sync::Notify::new());
    let validator = gossip_validator(store.clone(), mempool.clone(), genesis_hash, new_txs.clone());
    let validators = genesis
        .validators
        .iter()
        .map(|validator| Ok((validator.peer_id.parse()?, validator.p2p_address.parse()?)))
        .collect::<Result<Vec<_>>>()?;
    let limits = FrameLimits::from_genesis(
        genesis.validators.len(),
        genesis.consensus.watermark_window,
        genesis.consensus.batch_bytes_max as usize,
    );
    let network = network::start(
        NetworkConfig {
            keypair: identity::network_keypair(&network_key)?,
            listen: config
                .p2p_listen
                .parse()
                .with_context(|| format!("p2p_listen in {}", home.config().display()))?,
            chain_id: genesis.chain_id.clone(),
            genesis_hash,
            validators,
            me,
            limits,
            admission: AdmissionLimits::default(),
        },
        store.clone(),
        validator,
    )
    .await
    .with_context(|| format!("p2p_listen {} in {}", config.p2p_listen, home.config().display()))?;

    let waiters = Arc::new(Mutex::new(Default::default()));
    let (blocks, _) = broadcast::channel(1024);
    let (executed_tx, executed_rx) = mpsc::channel(network::INBOUND_QUEUE);
    let timings = crate::daemon::timing::Timings::default();
    let backpressure = Arc::new(crate::daemon::backpressure::Backpressure::new(
        std::time::Duration::from_millis(genesis.consensus.view_change_timeout_ms),
        genesis.consensus.batch_txs_max as usize,
    ));
    let (executor, executor_thread) = Executor {
        store: store.clone(),
        mempool: mempool.clone(),
        waiters: Arc::clone(&waiters),
        blocks: blocks.clone(),
        schedule: schedule.clone(),
        own: me.map(|index| (index, home.clone())),
        timings: timings.clone(),
        backpressure: backpressure.clone(),
    }
    .spawn(executed_tx)
    .context("starting the executor thread")?;

    let params = genesis.consensus.clone();
    let (replica, safety, margin_from) = match checked {
        Some(checked) => {
            let replica = match (me, &keyring) {
                (Some(index), Some(keys)) => {
                    Some(make_replica(&store, checked.restored, &params, index, keys.clone(), schedule.get()))
                }
                _ => None,
            };
            (replica, Some(Arc::new(checked.safety)), checked.margin_from)
        }
        None => (None, None, None),
    };
    let pending = match (me, &replica) {
        (Some(index), None) => Some(crate::daemon::driver::Pending { index, keys: own_keys }),
        _ => None,
    };
    let validating = replica.as_ref().map(Replica::me);
    let status = Arc::new(RwLock::new(ConsensusStatus::new(
        validating,
        stall_after(genesis.consensus.view_change_timeout_ms),
    )));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let api = Api {
        name: config.name.clone(),
        genesis: Arc::new(genesis.clone()),
        genesis_hash,
        schedule: schedule.clone(),
        store: store.clone(),
        mempool: mempool.clone(),
        status: status.clone(),
        peers: network.peers.clone(),
        waiters,
        blocks,
        gossip: network.gossip.clone(),
        new_txs: new_txs.clone(),
        timings,
        backpressure,
    };
    let driver = Driver {
        replica,
        safety,
        keys: keyring.unwrap_or_default(),
        pending,
        margin_from,
        store: store.clone(),
        mempool,
        schedule,
        params,
        home: home.clone(),
        genesis_hash,
        network: network.commands.clone(),
        events: network.events,
        executor,
        executed: executed_rx,
        status,
        shutdown: shutdown_rx.clone(),
        new_txs,
        verifications: Arc::new(tokio::sync::Semaphore::new(crate::daemon::driver::VERIFICATIONS_MAX)),
        gossip: network.gossip.clone(),
        limits,
        empty_blocks_after_idle: std::time::Duration::from_millis(config.empty_blocks_after_idle_ms),
    };
    let mut driver = tokio::spawn(driver.run());
    let mut network_task = network.task;
    let mut executor_thread = tokio::task::spawn_blocking(move || executor_thread.join());

    let mut rpc_shutdown = shutdown_rx.clone();
    let rpc_address = rpc_listener.local_addr()?;
    let mut rpc = tokio::spawn(tetrad_rpc::serve(rpc_listener, api, Limits::default(), async move {
        let _ = rpc_shutdown.changed().await;
    }));
    info!(rpc = %rpc_address, p2p = %config.p2p_listen, "node is up");

    let stopped = tokio::select! {
        () = wait_for_signal() => None,
        result = &mut driver => Some(("consensus driver", outcome(result.map(|run| run.map_err(|e| e.to_string()))))),
        result = &mut network_task => Some(("network task", outcome(result.map(Ok)))),
        result = &mut executor_thread => Some(("executor thread", thread_outcome(result))),
        result = &mut rpc => Some(("RPC server", outcome(result.map(|served| served.map_err(|e| e.to_string()))))),
    };
    if let Some((name, reason)) = stopped {
        tracing::error!(loop_name = name, %reason, "a core loop of the node stopped; exiting so that a supervisor can restart it");
        bail!("the {name} stopped: {reason}");
    }
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = driver.await;
    if let Ok(Err(error)) = rpc.await {
        warn!(%error, "rpc server");
    }
    info!("stopped");
    Ok(())
}

/// Why a task that should have run until shutdown ended.
fn outcome(result: std::result::Result<std::result::Result<(), String>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "it returned".to_owned(),
        Ok(Err(error)) => error,
        Err(error) if error.is_panic() => format!("it panicked: {}", panic_message(error.into_panic())),
        Err(error) => format!("it was cancelled: {error}"),
    }
}

/// Why the executor thread ended (the blocking join of its handle).
fn thread_outcome(result: std::result::Result<std::thread::Result<()>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "it returned (its job channel closed)".to_owned(),
        Ok(Err(payload)) => format!("it panicked: {}", panic_message(payload)),
        Err(error) => format!("waiting for it failed: {error}"),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .unwrap_or_else(|| "(no message)".to_owned()),
    }
}

/// Which validator this home is: the genesis validator whose peer id its network key has
/// (network keys never rotate, so this holds across consensus key rotations and a resync).
/// Refuses a home whose consensus keys belong to another validator than its network key.
fn identify(
    home: &Home,
    genesis: &Genesis,
    own_keys: &OwnKeys,
    registry: &tetrad_ledger::ValidatorRegistry,
    network_key: &KeyFile,
) -> Result<Option<ValidatorIndex>> {
    let peer_id = identity::peer_id(network_key)?.to_string();
    let by_peer = genesis
        .validators
        .iter()
        .position(|validator| validator.peer_id == peer_id)
        .map(|index| ValidatorIndex(index as u16));
    if let Some((index, _)) = own_keys.keyring(registry, tetrad_consensus::Height::GENESIS)
        && by_peer != Some(index)
    {
        let expected = &genesis.validators[index.as_usize()].peer_id;
        bail!(
            "{}: peer id {peer_id} is not validators[{index}].peer_id {expected} of {}",
            home.network_key().display(),
            home.genesis().display()
        );
    }
    Ok(by_peer)
}

/// The replica of validator `index`, restored from its safety records, at the store's head.
pub fn make_replica(
    store: &Store,
    restored: Restored,
    params: &tetrad_genesis::ConsensusParams,
    index: ValidatorIndex,
    keys: Vec<(tetrad_consensus::Height, tetrad_consensus::SecretKey)>,
    schedule: Arc<ValidatorSchedule>,
) -> Replica {
    let config = ReplicaConfig::new(
        params.checkpoint_interval,
        params.watermark_window,
        params.view_change_timeout_ms,
        params.view_change_timeout_max_ms,
    );
    Replica::new(config, index, keys, schedule, store.head().height, restored)
}

/// What a validator's safety records say it signed (to restore its replica).
pub fn restore_from(safety: &SafetyStore) -> Result<Restored> {
    let records = safety.records()?;
    restore(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        .map_err(|error| anyhow::anyhow!("consensus safety records are unreadable: {error}"))
}

/// Gossip messages: every transaction must pass its static checks; a batch with a forged one is
/// rejected, and the network task then lowers the forwarding peer's gossipsub score (one such
/// batch graylists it) and bans it if it is a full node. Valid ones are admitted; a batch of
/// which nothing was admitted is not forwarded.
fn gossip_validator(
    store: Arc<Store>,
    mempool: Arc<Mutex<Mempool>>,
    genesis_hash: tetrad_consensus::Digest,
    new_txs: Arc<tokio::sync::Notify>,
) -> GossipValidator {
    Arc::new(move |txs| {
        // What the mempool already holds was verified when it was admitted (a re-gossip).
        let fresh: Vec<(tetrad_ledger::Tx, tetrad_consensus::Digest)> = {
            let pool = mempool.lock().unwrap_or_else(|p| p.into_inner());
            txs.into_iter()
                .map(|tx| (tx.hash(), tx))
                .filter(|(hash, _)| !pool.contains(hash))
                .map(|(hash, tx)| (tx, hash))
                .collect()
        };
        let unverified: Vec<tetrad_ledger::Tx> = fresh.iter().map(|(tx, _)| tx.clone()).collect();
        let results = crate::daemon::metrics::check_txs(&unverified, &genesis_hash);
        if results.iter().any(Result::is_err) {
            return GossipVerdict::Invalid;
        }
        let mut pool = mempool.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let mut admitted = 0usize;
        for (tx, hash) in fresh {
            // Stale or duplicate here is normal (it was committed or we had it already); every
            // refusal is counted by reason in the mempool's metrics.
            match pool.admit(tx, hash, &*store, now) {
                Ok(()) => admitted += 1,
                Err(_) => metrics::dropped("gossip_tx_not_admitted", 1),
            }
        }
        if admitted == 0 {
            // Nothing here is news to this node's mempool: not forwarded (what admission
            // refuses goes no further than the nodes it was sent to).
            return GossipVerdict::NothingNew;
        }
        new_txs.notify_one();
        GossipVerdict::Admitted
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_panicked_or_returned_is_named_with_its_reason() {
        let panicked = tokio::spawn(async { panic!("the replica broke an invariant") }).await;
        assert_eq!(outcome(panicked.map(Ok)), "it panicked: the replica broke an invariant");
        let formatted = tokio::spawn(async {
            let height = 7;
            panic!("height {height}");
        })
        .await;
        assert_eq!(outcome(formatted.map(Ok)), "it panicked: height 7");
        assert_eq!(outcome(Ok(Err("the network task is gone".to_owned()))), "the network task is gone");
        let thread = std::thread::spawn(|| panic!("executor died")).join();
        assert_eq!(thread_outcome(Ok(thread)), "it panicked: executor died");
    }
}
