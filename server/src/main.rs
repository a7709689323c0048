//! The `kronotop` binary: parse flags, load the configuration, set up logging, open the member
//! directory, bind the listeners and serve until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use kronotop_cluster::{Cluster, ClusterConfig, MemberRecord, MemberStatus};
use kronotop_meta::Database;
use kronotop_server::config::{Config, LogFormat, Overrides};
use kronotop_server::node::Node;
use kronotop_server::server::{self, Listeners};

/// Kronotop: a sharded document database that speaks the Redis protocol.
#[derive(Debug, Parser)]
#[command(name = "kronotop", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the client listener (network.client.host).
    #[arg(long)]
    host: Option<String>,
    /// Port of the client listener (network.client.port); 0 picks a free one.
    #[arg(long)]
    port: Option<u16>,
    /// Address of the admin listener (network.admin.host).
    #[arg(long)]
    admin_host: Option<String>,
    /// Port of the admin listener (network.admin.port); 0 picks a free one.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Root of the member's local files (data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format: human or json (log_format).
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter such as info or kronotop_server=debug (log_level).
    #[arg(long)]
    log_level: Option<String>,
    /// Any other configuration key: --set server.maxclients=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// How many file descriptors we ask for: `maxclients` plus room for files and listeners, the
/// same headroom Redis reserves (`CONFIG_MIN_RESERVED_FDS` = 32).
const RESERVED_FDS: u64 = 32;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        host: cli.host,
        port: cli.port,
        admin_host: cli.admin_host,
        admin_port: cli.admin_port,
        data_dir: cli.data_dir,
        log_format: cli.log_format,
        log_level: cli.log_level,
        set: cli.set,
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("kronotop: {err}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    match serve(config, cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("kronotop: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn serve(config: Config, config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let wanted = u64::try_from(config.server.maxclients).unwrap_or(u64::MAX) + RESERVED_FDS;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            got,
            wanted,
            "the open-file limit is below maxclients; connections past it will be refused"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot raise the open-file limit"),
    }
    let member = kronotop_server::member::open(&config.data_dir, &config.cluster.name)?;
    let meta = open_meta(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let member_path = member.path.display().to_string();
    let member_id = member.id.clone();
    let meta_handle = meta.clone();
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config.network).await?;
        let addrs = listeners.addrs()?;
        let record = MemberRecord {
            id: member_id,
            status: MemberStatus::Running,
            external_host: addrs.client.ip().to_string(),
            external_port: addrs.client.port(),
            internal_host: addrs.admin.ip().to_string(),
            internal_port: addrs.admin.port(),
            process_id: String::new(),
        };
        let cluster = Cluster::start(meta.clone(), cluster_config(&config), record)
            .await
            .context("cannot register this member in the cluster")?;
        let node = Arc::new(Node::new(config, config_file, addrs, meta.clone(), cluster)?);
        tracing::info!(
            member_id = %node.member_id,
            data = %member_path,
            meta = meta.backend_name(),
            initialized = node.cluster_initialized(),
            "member ready"
        );
        tracing::info!(kind = "client", addr = %addrs.client, "listening");
        tracing::info!(kind = "admin", addr = %addrs.admin, "listening");
        server::run(Arc::clone(&node), listeners, shutdown_signal()).await;
        if let Err(err) = node.cluster.stop().await {
            tracing::warn!(%err, "could not mark this member STOPPED");
        }
        anyhow::Ok(())
    })?;
    meta_handle.close();
    drop(member);
    Ok(())
}

fn cluster_config(config: &Config) -> ClusterConfig {
    ClusterConfig {
        name: config.cluster.name.clone(),
        redis_shards: config.redis.shards,
        bucket_shards: config.bucket.shards,
        heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_interval_ms),
        max_silent_period: Duration::from_millis(config.cluster.max_silent_period_ms),
        force_initialization: config.cluster.force_initialization,
    }
}

/// Opens the configured metadata store.
fn open_meta(config: &Config) -> anyhow::Result<Database> {
    match config.meta.backend.as_str() {
        "foundationdb" => open_foundationdb(config),
        _ => {
            let path = if config.meta.path.is_empty() {
                config.data_dir.join("metadata")
            } else {
                PathBuf::from(&config.meta.path)
            };
            Database::open_embedded(&path, kronotop_meta::embedded::Options::default()).map_err(
                |e| {
                    anyhow::anyhow!(
                        "cannot open the metadata store in {}: {e} (is another kronotop using it?)",
                        path.display()
                    )
                },
            )
        }
    }
}

#[cfg(feature = "fdb")]
fn open_foundationdb(config: &Config) -> anyhow::Result<Database> {
    let file = (!config.meta.cluster_file.is_empty()).then_some(config.meta.cluster_file.as_str());
    Database::open_foundationdb(file)
        .map_err(|e| anyhow::anyhow!("cannot connect to FoundationDB: {e}"))
}

#[cfg(not(feature = "fdb"))]
fn open_foundationdb(_config: &Config) -> anyhow::Result<Database> {
    anyhow::bail!(
        "meta.backend = \"foundationdb\" needs a kronotop built with `--features fdb` (and the \
         FoundationDB client library installed)"
    )
}

/// Completes on SIGINT or SIGTERM. If a handler cannot be installed, that signal is simply not
/// awaited (the process then dies of it, as it would without us).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let int = async {
        match int.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        () = int => tracing::info!("SIGINT received"),
    }
}
