//! `portcullis-bare-pingora`: the framework floor for `bench/run.sh`. A pingora mTLS proxy
//! with nothing of Portcullis in it — a `ProxyHttp` that only picks the one upstream — built
//! from the workspace's pingora with the gateway's features (rustls, ring) and the gateway
//! binary's allocator. What Portcullis costs beyond it is Portcullis's own work.
//!
//! Like Portcullis in the bench: TLS 1.3 (1.2 allowed) with the same restricted ring provider,
//! client certificates required against one CA, HTTP/2 and HTTP/1.1 by ALPN, plain HTTP/1.1
//! keep-alive to the upstream, one worker thread unless told otherwise. Unlike it: pingora's
//! own listener and accept loop, no identity, policy, limits, DLP, access log or audit.
//! Loopback only: it is a measuring instrument, not a server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::Parser;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use rustls::server::WebPkiClientVerifier;

// The gateway binary's allocator, so that the floor is not lower or higher for want of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "portcullis-bare-pingora", version, about)]
struct Cli {
    /// Address to listen on (loopback only).
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream, plain HTTP/1.1 (loopback only).
    #[arg(long)]
    upstream: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA bundle that client certificates must chain to (a certificate is required).
    #[arg(long)]
    client_ca: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// The whole proxy logic: every request goes to the one upstream.
struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> ExitCode {
    match serve(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bare-pingora: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    for (what, addr) in [("--listen", cli.listen), ("--upstream", cli.upstream)] {
        if !addr.ip().is_loopback() {
            bail!("{what} {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed");
        }
    }
    if cli.threads == 0 {
        bail!("--threads must be at least 1");
    }
    // Portcullis's provider (ring, AEAD suites only), installed before pingora builds its
    // rustls config, so both negotiate the same suite and key exchange.
    portcullis_identity::install_crypto_provider();
    let tls = tls_settings(&cli.cert, &cli.key, &cli.client_ca)?;
    // Bound first: pingora panics on a port it cannot bind.
    std::net::TcpListener::bind(cli.listen)
        .map(drop)
        .with_context(|| format!("listen on {}", cli.listen))?;

    let conf = ServerConf {
        threads: cli.threads,
        // SIGTERM: stop within a second, as the bench's Portcullis does.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: cli.upstream,
        },
    );
    proxy.add_tls_with_settings(&cli.listen.to_string(), None, tls);
    server.add_service(proxy);
    eprintln!(
        "portcullis-bare-pingora: listening on {} (mTLS), upstream http://{}, {} thread(s)",
        cli.listen, cli.upstream, cli.threads
    );
    server.run(RunArgs::default());
    Ok(())
}

/// The listener's TLS: the server certificate, client certificates required against
/// `client_ca`, h2 and http/1.1 by ALPN. The files are read and checked here, so pingora's
/// `build`, which panics on unreadable files, only sees files that load.
fn tls_settings(cert: &Path, key: &Path, client_ca: &Path) -> anyhow::Result<TlsSettings> {
    // The identity errors name the file and include their cause.
    let named = |e: portcullis_identity::IdentityError| anyhow::anyhow!("{e}");
    portcullis_identity::load_certified_key(cert, key).map_err(named)?;
    let roots = portcullis_identity::root_store(
        portcullis_identity::load_certs(client_ca).map_err(named)?,
        &client_ca.display().to_string(),
    )
    .map_err(named)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        portcullis_identity::provider(),
    )
    .build()
    .with_context(|| format!("client CA {}", client_ca.display()))?;
    let mut tls =
        TlsSettings::intermediate(&path_str(cert)?, &path_str(key)?).context("TLS settings")?;
    tls.set_client_cert_verifier(verifier);
    tls.enable_h2();
    Ok(tls)
}

fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: the path must be UTF-8", path.display()))
}
