//! `portcullis`: the command line. Parses arguments, starts logging, and hands over to the
//! crates that do the work. Bad input exits non-zero with a clear message, never a panic.

mod audit_cli;
mod cli_docs;
mod config_cli;
mod demo;
mod explain;
mod health;
mod keys;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

// mimalloc: the proxy allocates and frees many small objects per request (header maps, body
// chunks); glibc's allocator spent about a sixth of a request's instructions on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Hardened edge gateway and zero-trust proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with the given configuration (SIGHUP reloads it, SIGTERM drains).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Also reload when the config file changes (polled every 200 ms).
        #[arg(long)]
        watch: bool,
        /// Listen on this Unix socket (mode 0600) for a new gateway taking over (--upgrade),
        /// and with --upgrade, the running gateway's socket to take over from.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
        /// Take over the listening sockets of the gateway running with --upgrade-socket; it
        /// then drains its requests and exits (zero-downtime upgrade).
        #[arg(long, requires = "upgrade_socket")]
        upgrade: bool,
    },
    /// Validate a configuration and the files it refers to, without serving.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with the access policy of a configuration.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the certificate authority: init, issue, list, revoke, CRL.
    Ca {
        /// Record issuances, refusals and revocations in this audit log directory.
        #[arg(long, global = true)]
        audit_dir: Option<PathBuf>,
        /// The audit checkpoint signing key (Ed25519 PKCS#8, created 0600 if missing).
        #[arg(long, global = true, default_value = "ca-audit.key")]
        audit_key: PathBuf,
        #[command(subcommand)]
        command: portcullis_ca::cli::CaCommand,
    },
    /// Serve the admin API (issuance, roles, policies, webhooks); create bootstrap tokens;
    /// print reports and certificates from a running admin API.
    Admin {
        /// Record every call (and the CA's issue, refuse and revoke events) in this audit log
        /// directory.
        #[arg(long, global = true)]
        audit_dir: Option<PathBuf>,
        /// The audit checkpoint signing key (Ed25519 PKCS#8, created 0600 if missing).
        #[arg(long, global = true, default_value = "admin-audit.key")]
        audit_key: PathBuf,
        #[command(subcommand)]
        command: portcullis_admin::cli::AdminCommand,
    },
    /// Serve the SPIFFE Workload API on a Unix socket: attest local workloads and hand them
    /// X.509-SVIDs obtained from the admin API.
    Agent {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Verify, tail and query an audit log.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Start a complete local deployment (development CA, certificates, echo upstream,
    /// gateway) in a state folder, and print commands to try it.
    Demo {
        /// Folder for the demo's certificates and configuration.
        #[arg(long, default_value = "portcullis-demo")]
        state: PathBuf,
        /// Port of the gateway's mTLS listener on 127.0.0.1.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Port of the built-in echo upstream on 127.0.0.1.
        #[arg(long, default_value_t = 8081)]
        upstream_port: u16,
        /// Port of the metrics and health listener on 127.0.0.1.
        #[arg(long, default_value_t = 9901)]
        metrics_port: u16,
    },
    /// Work with config files: print their JSON Schema.
    Config {
        #[command(subcommand)]
        command: config_cli::ConfigCommand,
    },
    /// Probe the metrics listener: GET URL, exit 0 on a 2xx answer (a container HEALTHCHECK).
    Health {
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a folder.
    Man {
        /// Write portcullis.1, portcullis-serve.1, … into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the built-in echo upstream (plain HTTP): it answers with what it received.
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "echo")]
        name: String,
        /// Exit when standard input closes (lets a parent process take it down with it).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the route, decision and deciding rule for a described request.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The caller's SPIFFE ID (omit for a caller without a certificate).
        #[arg(long)]
        identity: Option<String>,
        /// A DNS SAN of the caller's certificate (repeatable).
        #[arg(long = "dns-san")]
        dns_san: Vec<String>,
        /// The caller's certificate subject, e.g. "O=Acme, CN=frontend".
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The Host the request is sent to.
        #[arg(long)]
        host: Option<String>,
        /// The request path as sent (it is normalised first, as the gateway does).
        #[arg(long)]
        path: String,
        /// The client address.
        #[arg(long, default_value = "127.0.0.1")]
        source: IpAddr,
        /// A request header NAME=VALUE (repeatable).
        #[arg(long)]
        header: Vec<String>,
        /// The claims of the caller's bearer token, as a JSON object in this file (taken as
        /// verified: only the route's authentication, MFA and access rules are judged).
        #[arg(long, value_name = "FILE")]
        claims: Option<PathBuf>,
        /// Print the verdict as one JSON object (decision, route, rule, status, error code).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    portcullis_gateway::install_crypto_provider();
    let result = match cli.command {
        Command::Serve {
            config,
            watch,
            upgrade_socket,
            upgrade,
        } => {
            let options = portcullis_gateway::ServeOptions {
                watch,
                upgrade_socket,
                upgrade,
            };
            portcullis_gateway::serve(config, options, &keys::audit_signer)
                .map_err(anyhow::Error::from)
        }
        Command::Check { config } => portcullis_gateway::check(&config)
            .map(|c| {
                println!(
                    "{}: ok ({} listener(s), {} upstream(s), {} route(s))",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
            })
            .map_err(anyhow::Error::from),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    identity,
                    dns_san,
                    subject,
                    method,
                    host,
                    path,
                    source,
                    header,
                    claims,
                    json,
                },
        } => explain::explain(
            &config,
            &explain::Described {
                identity: identity.as_deref(),
                dns_sans: &dns_san,
                subject: subject.as_deref(),
                // As sent: the gateway matches methods as the client wrote them.
                method: &method,
                host: host.as_deref(),
                path: &path,
                source,
                headers: &header,
                claims: claims.as_deref(),
                json,
            },
        ),
        Command::Agent { config } => portcullis_agent::run(&config).map_err(anyhow::Error::from),
        Command::Audit { command } => audit_cli::run(command),
        Command::Admin {
            audit_dir,
            audit_key,
            command,
        } => audit_cli::with_audit_log(audit_dir, &audit_key, "admin", |audit| {
            portcullis_admin::cli::run(command, audit).map_err(Into::into)
        }),
        Command::Ca {
            audit_dir,
            audit_key,
            command,
        } => audit_cli::with_audit_log(audit_dir, &audit_key, "ca", |audit| {
            let events = audit.map(|a| Arc::new(a) as Arc<dyn portcullis_ca::CaEventSink>);
            // Revocations are also spooled for the fleet's etcd when the CA's state folder
            // has the admin server's spool.
            portcullis_ca::cli::run_audited_with(
                command,
                events,
                &portcullis_admin::cli_revocation_sink,
            )
            .map_err(Into::into)
        }),
        Command::Demo {
            state,
            port,
            upstream_port,
            metrics_port,
        } => demo::run(&demo::DemoPorts {
            state,
            gateway: port,
            upstream: upstream_port,
            metrics: metrics_port,
        }),
        Command::Config { command } => config_cli::run(command),
        Command::Health { url } => health::probe(&url),
        Command::Completions { shell } => cli_docs::completions(shell, Cli::command()),
        Command::Man { dir } => cli_docs::man(Cli::command(), dir.as_deref()),
        Command::Echo {
            listen,
            name,
            exit_with_stdin,
        } => {
            if exit_with_stdin {
                demo::exit_when_stdin_closes();
            }
            portcullis_gateway::serve_echo(listen, &name).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and the like: the reader went away, nothing is wrong.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines on stderr through tracing; pingora's `log` records are bridged in (the
/// subscriber installs the `log` bridge itself). The filter
/// comes from `PORTCULLIS_LOG` (tracing's env-filter syntax), default `info`.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
