//! The `kronotop` binary: parse flags, load the configuration, set up logging, open the member
//! directory, bind the listeners and serve until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kronotop_server::config::{Config, LogFormat, Overrides};
use kronotop_server::launch;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's allocator: a command allocates and frees many small buffers across
/// threads (a request, its document, metadata keys, the reply), and profiles of bucket inserts
/// showed glibc's malloc and free (with its consolidation) as the largest single cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Also serve clients on this Unix socket (network.unix_socket; Redis's unixsocket).
    #[arg(long, value_name = "PATH", alias = "unixsocket")]
    unix_socket: Option<String>,
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
    /// On first start, initialise the cluster and route every shard of both kinds to the members
    /// (round-robin), READWRITE. Does nothing on a cluster already initialised.
    #[arg(long)]
    bootstrap: bool,
    /// Run this many members in this process, sharing one embedded metadata store; member i
    /// listens on port+i and admin-port+i and keeps its files in <data-dir>/member-<i>.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    members: u16,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Bootstrap a cluster through the admin ports of running members (idempotent).
    Bootstrap {
        /// A shard kind and `admin-host:port=shard,shard,…` to make primary (repeatable).
        #[arg(long, num_args = 2, value_names = ["KIND", "ADDR=SHARDS"], required = true)]
        primary: Vec<String>,
        /// A shard kind and `admin-host:port=shard,shard,…` to make standby (repeatable).
        #[arg(long, num_args = 2, value_names = ["KIND", "ADDR=SHARDS"])]
        standby: Vec<String>,
        /// A shard kind and `admin-host:port=shard,shard,…` to make standby and sync standby:
        /// writes of those shards wait for it (repeatable).
        #[arg(long, num_args = 2, value_names = ["KIND", "ADDR=SHARDS"])]
        sync_standby: Vec<String>,
        /// Seconds to wait for the shards to appear after initialisation.
        #[arg(long, default_value_t = 30)]
        shard_discovery_timeout: u64,
        /// Connect over TLS, trusting the CA certificates in this PEM file (admin ports with
        /// `network.admin.tls = true`).
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<String>,
        /// The client certificate (PEM) to present over TLS; admin ports ask for one by default.
        #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
        tls_cert: Option<String>,
        /// The client certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<String>,
        /// The user to log in as on the admin ports.
        #[arg(long, default_value = "default", requires = "password")]
        user: String,
        /// The password to log in with (or the KRONOTOP_PASSWORD environment variable), for
        /// admin ports that require one.
        #[arg(long, env = "KRONOTOP_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

fn assignments(flat: &[String]) -> anyhow::Result<Vec<kronotop_server::bootstrap::Assignment>> {
    flat.chunks(2)
        .map(|p| match p {
            [kind, spec] => kronotop_server::bootstrap::parse_assignment(kind, spec),
            _ => anyhow::bail!("expected KIND ADDR=SHARDS"),
        })
        .collect()
}

/// `kronotop bootstrap`'s TLS files (the CA, and the client certificate and key) and login.
struct BootstrapTls<'a> {
    ca: Option<&'a str>,
    identity: Option<(&'a str, &'a str)>,
    auth: Option<(String, String)>,
}

fn bootstrap_command(
    primary: &[String],
    standby: &[String],
    sync_standby: &[String],
    timeout: u64,
    how: &BootstrapTls<'_>,
) -> ExitCode {
    let result = assignments(primary).and_then(|p| {
        let s = assignments(standby)?;
        let sync = assignments(sync_standby)?;
        let tls =
            how.ca.map(|ca| kronotop_server::tls::client_config(ca, how.identity)).transpose()?;
        let connect = kronotop_server::bootstrap::Connect { tls, auth: how.auth.clone() };
        kronotop_server::bootstrap::run(
            &p,
            &s,
            &sync,
            std::time::Duration::from_secs(timeout),
            &connect,
        )
    });
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("kronotop bootstrap: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// How many file descriptors we ask for: `maxclients` plus room for files and listeners, the
/// same headroom Redis reserves (`CONFIG_MIN_RESERVED_FDS` = 32).
const RESERVED_FDS: u64 = 32;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Bootstrap {
        primary,
        standby,
        sync_standby,
        shard_discovery_timeout,
        tls_ca,
        tls_cert,
        tls_key,
        user,
        password,
    }) = &cli.command
    {
        let tls = BootstrapTls {
            ca: tls_ca.as_deref(),
            identity: tls_cert.as_deref().zip(tls_key.as_deref()),
            auth: password.clone().map(|p| (user.clone(), p)),
        };
        return bootstrap_command(primary, standby, sync_standby, *shard_discovery_timeout, &tls);
    }
    let overrides = Overrides {
        host: cli.host,
        port: cli.port,
        admin_host: cli.admin_host,
        admin_port: cli.admin_port,
        unix_socket: cli.unix_socket,
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
    match serve(config, cli.config, cli.members, cli.bootstrap) {
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| LogSink);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Standard error for logs, ignoring write failures: a server must not stop because whoever read
/// its logs went away (tracing-subscriber reports a failed write with `eprintln!`, which panics
/// when standard error itself is the broken pipe).
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn serve(
    config: Config,
    config_file: Option<PathBuf>,
    members: u16,
    bootstrap: bool,
) -> anyhow::Result<()> {
    let wanted = (u64::try_from(config.server.maxclients).unwrap_or(u64::MAX) + RESERVED_FDS)
        .saturating_mul(u64::from(members.max(1)));
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            got,
            wanted,
            "the open-file limit is below maxclients; connections past it will be refused"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let meta = runtime.block_on(async move {
        let stop = CancellationToken::new();
        let signal = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            signal.cancel();
        });
        launch::run(config, config_file, members, bootstrap, stop).await
    })?;
    meta.close();
    Ok(())
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
