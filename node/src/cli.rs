//! The command line: `tetrad keys|genesis|init|bench …`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tetrad_consensus::PublicKey;
use tetrad_genesis::{Genesis, GenesisAccount, GenesisValidator, KeyFile, Problem};
use tetrad_ledger::Store;

use crate::config::{Config, Home};
use crate::identity;

#[derive(Parser, Debug)]
#[command(name = "tetrad", version, about = "Tetrad: a permissioned blockchain node with PBFT consensus")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate and inspect key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Build and check a genesis file.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Create a node home: config, genesis, keys and an initialised database.
    Init(InitArgs),
    /// Run a node from its home directory (logs go to stderr; RUST_LOG is honoured).
    Run {
        #[arg(long, env = "TETRAD_HOME")]
        home: PathBuf,
        /// Start a validator whose safety records (HOME/safety) are missing, empty or older than
        /// its chain database, which the node otherwise refuses: it may then sign something
        /// that conflicts with what it signed before the records were lost. The node stays
        /// silent (signs nothing) until the network is W + K heights past anything it may have
        /// signed.
        #[arg(long)]
        accept_double_sign_risk: bool,
    },
    /// Create a local network: keys, genesis, one home per validator, funded accounts.
    Testnet(TestnetArgs),
    /// Sign and submit transactions.
    #[command(subcommand)]
    Tx(crate::client::TxCommand),
    /// Ask a node about its status, blocks, transactions, accounts, checkpoints, validators
    /// (what the node says, unchecked; `verify` proves it).
    #[command(subcommand)]
    Query(crate::client::QueryCommand),
    /// Prove what a node says, trusting only the genesis file (or a header given with
    /// --trust): a transaction and its outcome, a block, an account, the validator set, the
    /// latest checkpoint. Exits non-zero, naming what did not verify, when the node lies.
    #[command(subcommand)]
    Verify(crate::client::verify::VerifyCommand),
    /// Ask a node's GET /health; exit 0 if it answers 200 (progressing, idle, syncing), 1
    /// otherwise (stalled, stopped, no answer). The image's HEALTHCHECK.
    Health {
        /// The node to ask (default: the RPC address of the node in --home).
        #[arg(long, conflicts_with = "home")]
        rpc: Option<String>,
        /// A node home: its config.toml's rpc_listen is asked (0.0.0.0 as 127.0.0.1).
        #[arg(long, env = "TETRAD_HOME")]
        home: Option<PathBuf>,
        #[arg(long, default_value_t = 3_000)]
        timeout_ms: u64,
    },
    /// Benchmark a local network (or, with `ledger`, execution and storage alone).
    Bench(BenchCli),
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    network: NetworkBenchArgs,
}

#[derive(Args, Debug)]
struct NetworkBenchArgs {
    #[arg(long, default_value_t = 4)]
    validators: u16,
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Transfers to pre-sign and submit.
    #[arg(long, default_value_t = 200_000)]
    txs: u64,
    /// Offer this many tx/s (default: open loop, as fast as the network absorbs).
    #[arg(long)]
    rate: Option<u64>,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 27600)]
    base_port: u16,
    /// Threads that submit.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Keep the network's homes and logs in this (new) directory.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
    /// Flood scenario: this many junk keys (funded accounts that only send transfers behind a
    /// nonce gap, with as many fresh keys sending rotations and transfers from no account)
    /// submit junk beside the honest load; 0 runs no flood.
    #[arg(long, default_value_t = 0)]
    flood_keys: u64,
    /// Junk transactions per second of the flood.
    #[arg(long, default_value_t = 5000)]
    flood_rate: u64,
}

#[derive(Args, Debug)]
struct TestnetArgs {
    #[arg(long, default_value_t = 4)]
    validators: u16,
    /// Funded accounts; their keys go to DIR/accounts/.
    #[arg(long, default_value_t = 10)]
    accounts: u64,
    /// Balance of each funded account.
    #[arg(long, default_value_t = 1_000_000_000)]
    balance: u64,
    #[arg(long)]
    dir: PathBuf,
    /// Validator i listens on base+2i (p2p) and base+2i+1 (RPC).
    #[arg(long, default_value_t = 26600)]
    base_port: u16,
    #[arg(long, default_value = "tetrad-local")]
    chain_id: String,
    /// Consensus parameters of the genesis (defaults: those of `tetrad genesis new`).
    #[arg(long)]
    checkpoint_interval: Option<u64>,
    #[arg(long)]
    watermark_window: Option<u64>,
    #[arg(long)]
    view_change_timeout_ms: Option<u64>,
    /// Also start every validator and stop them all on Ctrl-C.
    #[arg(long, conflicts_with = "hosts")]
    start: bool,
    /// One IP address per node, comma-separated: the first --validators are validators, any
    /// more are full nodes (full0, …). Every node then listens on all interfaces at p2p port
    /// 26000 and RPC port 8545, and the genesis holds these addresses.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<std::net::IpAddr>,
    /// Also write DIR/compose.yaml: one container per node at its --hosts address, each with its
    /// own volume; node i's RPC published on 127.0.0.1:base+2i+1.
    #[arg(long, requires = "hosts")]
    compose: bool,
    /// The image of the compose file's containers (scripts/docker-image.sh builds it).
    #[arg(long, default_value = "tetrad:local")]
    image: String,
    /// The compose network (default: the /24 of the first --hosts address).
    #[arg(long, requires = "compose")]
    subnet: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Write a new ed25519 key file (mode 0600); never overwrites.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's public key (account address / consensus key) and libp2p peer id.
    Show { file: PathBuf },
    /// Rotate the consensus key of the validator in HOME while it runs: writes the next key into
    /// the home (durably, before anything is sent), submits the rotation signed by the current
    /// key, waits for the commit, and reports the activation height. Safe to run again: a
    /// rotation in progress (consensus_key.next.json exists) is found and reported, or the same
    /// transaction is submitted again; the next key file is never deleted.
    Rotate {
        #[arg(long)]
        home: PathBuf,
        /// The node to submit to (default: the home's own RPC address).
        #[arg(long)]
        rpc: Option<String>,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
enum GenesisCommand {
    /// Write a new genesis file with default consensus parameters and no validators or accounts.
    New {
        #[arg(long)]
        chain_id: String,
        #[arg(long)]
        out: PathBuf,
        /// Milliseconds since the Unix epoch (default: now).
        #[arg(long)]
        genesis_time_ms: Option<u64>,
    },
    /// Append a validator.
    AddValidator(AddValidatorArgs),
    /// Append a funded account.
    AddAccount(AddAccountArgs),
    /// Check every rule of a valid genesis and print its summary and hash.
    Validate { file: PathBuf },
}

#[derive(Args, Debug)]
struct AddValidatorArgs {
    #[arg(long)]
    genesis: PathBuf,
    #[arg(long)]
    name: String,
    /// The validator's consensus key: a key file or 64 hex digits of the public key.
    #[arg(long)]
    consensus_key: String,
    /// The validator's network key file (its peer id is derived); or give --peer-id.
    #[arg(long, conflicts_with = "peer_id", required_unless_present = "peer_id")]
    network_key: Option<PathBuf>,
    #[arg(long)]
    peer_id: Option<String>,
    /// Where the other validators dial it, e.g. /ip4/10.0.0.5/tcp/26000.
    #[arg(long)]
    p2p_address: String,
}

#[derive(Args, Debug)]
struct AddAccountArgs {
    #[arg(long)]
    genesis: PathBuf,
    /// The account address: a key file or 64 hex digits.
    #[arg(long)]
    address: String,
    #[arg(long)]
    balance: u64,
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The home directory to create.
    #[arg(long)]
    home: PathBuf,
    /// The genesis file (copied into the home).
    #[arg(long)]
    genesis: PathBuf,
    /// Consensus key file to use (copied); default: HOME/consensus_key.json if it exists (used
    /// in place), else a new key.
    #[arg(long)]
    consensus_key: Option<PathBuf>,
    /// Network key file to use (copied); default: HOME/network_key.json if it exists (used in
    /// place), else a new key.
    #[arg(long)]
    network_key: Option<PathBuf>,
    /// Node name; defaults to the validator's genesis name, or "full-node".
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/26000")]
    p2p_listen: String,
    #[arg(long, default_value = "127.0.0.1:8545")]
    rpc_listen: String,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Execute and persist transfers on one core (signatures excluded).
    Ledger(crate::cli::LedgerBenchArgs),
}

#[derive(Args, Debug)]
pub struct LedgerBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    txs: u64,
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    #[arg(long, default_value_t = 1_000)]
    block_txs: u64,
    /// Where to put the database (default: a scratch directory that is removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the fsync per block (to see what the sync costs; nodes always sync).
    #[arg(long)]
    no_sync: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keys(KeysCommand::Generate { out }) => keys_generate(&out),
        Command::Keys(KeysCommand::Show { file }) => keys_show(&file),
        Command::Keys(KeysCommand::Rotate { home, rpc, timeout_ms }) => {
            crate::client::rotate(&home, rpc, timeout_ms)
        }
        Command::Genesis(command) => genesis(command),
        Command::Init(args) => init(args),
        Command::Run { home, accept_double_sign_risk } => run_node(&home, accept_double_sign_risk),
        Command::Tx(command) => crate::client::tx(command),
        Command::Query(command) => crate::client::query(command),
        Command::Verify(command) => crate::client::verify::verify(command),
        Command::Health { rpc, home, timeout_ms } => crate::client::health(rpc, home, timeout_ms),
        Command::Testnet(args) => testnet(args),
        Command::Bench(BenchCli { command: Some(BenchCommand::Ledger(args)), .. }) => {
            crate::ops::bench_ledger::run(&args.into())
        }
        Command::Bench(BenchCli { command: None, network }) => {
            let args = crate::ops::bench::BenchArgs {
                validators: network.validators,
                accounts: network.accounts,
                txs: network.txs,
                rate: network.rate,
                json: network.json,
                base_port: network.base_port,
                submitters: network.submitters,
                timeout_s: network.timeout_s,
                keep_dir: network.keep_dir,
                flood_keys: network.flood_keys,
                flood_rate: network.flood_rate,
            };
            crate::ops::bench::run(&args).map(|_| ())
        }
    }
}

impl From<LedgerBenchArgs> for crate::ops::bench_ledger::LedgerBench {
    fn from(args: LedgerBenchArgs) -> Self {
        crate::ops::bench_ledger::LedgerBench {
            txs: args.txs,
            accounts: args.accounts,
            block_txs: args.block_txs,
            dir: args.dir,
            sync: !args.no_sync,
        }
    }
}

fn run_node(home: &Path, accept_double_sign_risk: bool) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(crate::daemon::node::run(home, accept_double_sign_risk))
}

fn testnet(args: TestnetArgs) -> Result<()> {
    let existing = args.dir.join("testnet.json");
    if args.start && existing.exists() {
        let text = std::fs::read_to_string(&existing)
            .with_context(|| format!("{}: cannot read", existing.display()))?;
        let file: crate::ops::testnet::TestnetFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a testnet file", existing.display()))?;
        println!(
            "starting the existing testnet in {} (remove the directory for a fresh one)",
            args.dir.display()
        );
        return crate::ops::testnet::start(&file);
    }
    let compose = if args.compose {
        let plan = crate::ops::compose::ComposePlan {
            image: args.image.clone(),
            subnet: args.subnet.as_deref().map(crate::ops::compose::Subnet::parse).transpose()?,
            base_port: args.base_port,
        };
        // Refused before anything is written.
        crate::ops::compose::check_hosts(&args.hosts, &plan)?;
        Some(plan)
    } else {
        None
    };
    let plan = crate::ops::testnet::TestnetPlan {
        validators: args.validators,
        accounts: args.accounts,
        balance: args.balance,
        dir: args.dir.clone(),
        base_port: args.base_port,
        chain_id: args.chain_id,
        account_seed: None,
        checkpoint_interval: args.checkpoint_interval,
        watermark_window: args.watermark_window,
        view_change_timeout_ms: args.view_change_timeout_ms,
        hosts: args.hosts.clone(),
    };
    let file = crate::ops::testnet::create(&plan)?;
    let full_nodes = file.nodes.iter().filter(|node| node.full_node).count();
    match full_nodes {
        0 => println!("created a {}-validator testnet in {}", file.nodes.len(), args.dir.display()),
        _ => println!(
            "created a {}-validator testnet with {full_nodes} full node{} in {}",
            file.nodes.len() - full_nodes,
            if full_nodes == 1 { "" } else { "s" },
            args.dir.display()
        ),
    }
    println!("chain id      {}", file.chain_id);
    println!("genesis hash  {}", file.genesis_hash);
    println!("accounts      {} keys in {}", file.accounts, file.accounts_dir.display());
    for node in &file.nodes {
        println!(
            "  {}  rpc {}  p2p {}  home {}",
            node.name,
            node.rpc_url,
            node.p2p_address,
            node.home.display()
        );
    }
    if let Some(compose) = compose {
        let path = args.dir.join("compose.yaml");
        let text = crate::ops::compose::compose_yaml(&file, &compose)?;
        tetrad_genesis::durable::write_file(
            &path,
            text.as_bytes(),
            0o644,
            tetrad_genesis::durable::Existing::Refuse,
        )
        .with_context(|| format!("{}: cannot write", path.display()))?;
        println!("compose file  {} (image {})", path.display(), compose.image);
        println!("start it with: scripts/compose.sh up   (TETRAD_COMPOSE_DIR={})", args.dir.display());
    } else if args.start {
        crate::ops::testnet::start(&file)?;
    } else if !args.hosts.is_empty() {
        println!("copy each home to its machine and start it there with: tetrad run --home <home>");
    } else {
        println!("start each with: tetrad run --home <home>   (or pass --start)");
    }
    Ok(())
}

fn keys_generate(out: &Path) -> Result<()> {
    let key = KeyFile::generate().context("reading the system's random source")?;
    key.write_new(out)?;
    println!("wrote {} (mode 0600)", out.display());
    println!("public key  {}", key.public_key());
    println!("peer id     {}", identity::peer_id(&key)?);
    Ok(())
}

fn keys_show(file: &Path) -> Result<()> {
    let key = KeyFile::read(file)?;
    println!("public key  {}", key.public_key());
    println!("peer id     {}", identity::peer_id(&key)?);
    Ok(())
}

/// A public key given as a key file or as hex; errors name the flag.
fn public_key_arg(flag: &str, value: &str) -> Result<PublicKey> {
    if Path::new(value).exists() {
        return Ok(KeyFile::read(Path::new(value))?.public_key());
    }
    PublicKey::from_hex(value)
        .map_err(|error| anyhow::anyhow!("{flag} {value:?}: not a key file, and not a public key: {error}"))
}

/// Saves a genesis under construction, refusing problems other than the ones that adding more
/// validators or accounts will fix.
fn save_partial(genesis: &Genesis, path: &Path) -> Result<()> {
    match genesis.validate() {
        Ok(()) | Err(Problem::NoValidators | Problem::ZeroSupply) => {}
        Err(problem) => bail!("{}: {problem}", path.display()),
    }
    genesis.save(path)?;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn genesis(command: GenesisCommand) -> Result<()> {
    match command {
        GenesisCommand::New { chain_id, out, genesis_time_ms } => {
            if out.exists() {
                bail!("{}: already exists; refusing to overwrite", out.display());
            }
            let genesis = Genesis::new(&chain_id, genesis_time_ms.unwrap_or_else(now_ms));
            if let Err(problem @ Problem::BadChainId(_)) = genesis.validate() {
                bail!("--chain-id: {problem}");
            }
            genesis.save(&out)?;
            println!("wrote {}", out.display());
        }
        GenesisCommand::AddValidator(args) => {
            let mut genesis = Genesis::load_unvalidated(&args.genesis)?;
            let consensus_key = public_key_arg("--consensus-key", &args.consensus_key)?;
            let peer_id = match (&args.network_key, &args.peer_id) {
                (Some(file), _) => identity::peer_id(&KeyFile::read(file)?)?.to_string(),
                (None, Some(peer_id)) => {
                    peer_id
                        .parse::<libp2p::PeerId>()
                        .with_context(|| format!("--peer-id {peer_id:?}: not a libp2p peer id"))?;
                    peer_id.clone()
                }
                (None, None) => bail!("give --network-key or --peer-id"),
            };
            genesis.validators.push(GenesisValidator {
                name: args.name.clone(),
                consensus_key,
                peer_id,
                p2p_address: args.p2p_address,
            });
            save_partial(&genesis, &args.genesis)?;
            println!("added validator {} (index {})", args.name, genesis.validators.len() - 1);
        }
        GenesisCommand::AddAccount(args) => {
            let mut genesis = Genesis::load_unvalidated(&args.genesis)?;
            let address = public_key_arg("--address", &args.address)?;
            genesis.accounts.push(GenesisAccount { address, balance: args.balance });
            save_partial(&genesis, &args.genesis)?;
            println!("added account {address} with balance {}", args.balance);
        }
        GenesisCommand::Validate { file } => {
            let genesis = Genesis::load(&file)?;
            check_peer_ids(&genesis, &file)?;
            println!("{}: valid", file.display());
            println!("{genesis}");
        }
    }
    Ok(())
}

/// The genesis crate checks peer ids by shape; libp2p checks them fully.
pub fn check_peer_ids(genesis: &Genesis, file: &Path) -> Result<()> {
    for (index, validator) in genesis.validators.iter().enumerate() {
        validator.peer_id.parse::<libp2p::PeerId>().map_err(|error| {
            anyhow::anyhow!("{}: validators[{index}].peer_id: not a libp2p peer id: {error}", file.display())
        })?;
        validator.p2p_address.parse::<libp2p::Multiaddr>().map_err(|error| {
            anyhow::anyhow!("{}: validators[{index}].p2p_address: not a multiaddr: {error}", file.display())
        })?;
    }
    Ok(())
}

/// A key file to copy into the home, or a new key.
fn load_or_generate(source: Option<&Path>) -> Result<KeyFile> {
    match source {
        Some(path) => Ok(KeyFile::read(path)?),
        None => KeyFile::generate().context("reading the system's random source"),
    }
}

fn existing(path: &Path) -> Option<PathBuf> {
    path.exists().then(|| path.to_path_buf())
}

/// Whether `source` is the file `target` itself.
fn same_file(source: Option<&Path>, target: &Path) -> bool {
    match (source.map(std::fs::canonicalize), std::fs::canonicalize(target)) {
        (Some(Ok(source)), Ok(target)) => source == target,
        _ => false,
    }
}

fn init(args: InitArgs) -> Result<()> {
    let genesis = Genesis::load(&args.genesis)?;
    check_peer_ids(&genesis, &args.genesis)?;
    let home = Home::new(&args.home);
    if home.config().exists() || home.genesis().exists() {
        bail!("{}: already initialised (remove it first to start over)", args.home.display());
    }
    // Everything is checked before anything is written, so a refused init leaves no debris.
    // A key already in the home (made there by `keys generate`, e.g. inside a container's
    // volume) is used in place: the secret is never copied.
    let consensus_source = args.consensus_key.clone().or_else(|| existing(&home.consensus_key()));
    let network_source = args.network_key.clone().or_else(|| existing(&home.network_key()));
    let consensus = load_or_generate(consensus_source.as_deref())?;
    let network = load_or_generate(network_source.as_deref())?;
    let consensus_in_place = same_file(consensus_source.as_deref(), &home.consensus_key());
    let network_in_place = same_file(network_source.as_deref(), &home.network_key());
    let validator =
        genesis.validators.iter().position(|validator| validator.consensus_key == consensus.public_key());
    if let Some(index) = validator {
        let peer_id = identity::peer_id(&network)?.to_string();
        if genesis.validators[index].peer_id != peer_id {
            bail!(
                "{}: validators[{index}].peer_id is {} but the network key has peer id {peer_id}",
                args.genesis.display(),
                genesis.validators[index].peer_id,
            );
        }
    }
    let name = args
        .name
        .clone()
        .or_else(|| validator.map(|index| genesis.validators[index].name.clone()))
        .unwrap_or_else(|| "full-node".to_string());
    let config = Config {
        name,
        p2p_listen: args.p2p_listen,
        rpc_listen: args.rpc_listen,
        empty_blocks_after_idle_ms: crate::config::EMPTY_BLOCKS_AFTER_IDLE_MS,
    };
    config.validate().context("invalid --p2p-listen or --rpc-listen")?;
    tetrad_genesis::durable::create_dir(&home.dir)
        .with_context(|| format!("{}: cannot create", home.dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("{}: cannot set mode 0700", home.dir.display()))?;
    }
    if !consensus_in_place {
        consensus.write_new(&home.consensus_key())?;
    }
    if !network_in_place {
        network.write_new(&home.network_key())?;
    }
    genesis.save(&home.genesis())?;
    config.save_new(&home.config())?;
    let store = Store::open_or_init(&home.data(), &genesis.ledger_state())?;
    println!("initialised {}", home.dir.display());
    println!("chain id        {}", genesis.chain_id);
    println!("genesis hash    {}", genesis.hash());
    println!("consensus key   {}", consensus.public_key());
    println!("peer id         {}", identity::peer_id(&network)?);
    match validator {
        Some(index) => println!("role            validator {index} ({})", config.name),
        None => println!("role            full node (the consensus key is not in the validator set)"),
    }
    println!("state root      {}", store.head().state_root);
    Ok(())
}
