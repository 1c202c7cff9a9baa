//! Zero-downtime upgrade: the running gateway hands its listening sockets to a new one, then
//! drains and exits. A socket handed over is the same kernel socket, with the same queue of
//! connections not yet accepted, so nothing is dropped between the two processes.
//!
//! - The running gateway, started with `--upgrade-socket PATH`, listens on that Unix socket
//!   (mode 0600; callers of another user are refused by their peer credentials).
//! - `portcullis serve --upgrade --upgrade-socket PATH` connects there first, receives every
//!   TCP listening socket (its address, and the socket by `SCM_RIGHTS`), then the old gateway
//!   starts its graceful shutdown (as on SIGTERM): it stops accepting, finishes the requests in
//!   flight and exits, releasing the audit log, which the new gateway then opens.
//! - The metrics listener is not handed over: it binds with `SO_REUSEPORT`, so both gateways
//!   answer scrapes while they overlap.
//!
//! Under systemd the same table takes the sockets of socket activation (`LISTEN_FDS`, a
//! `portcullis.socket` unit): systemd keeps them open while the service restarts, so
//! connections made between the old process and the new one wait in their queue.

use std::collections::{HashMap, HashSet};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::GatewayError;

/// Most listening sockets handed over at once.
const MAX_SOCKETS: usize = 32;
/// How long a new gateway tries to reach the running one.
const CONNECT_FOR: Duration = Duration::from_secs(10);

/// This process's listening sockets, by address: registered at bind (a duplicate handle, so a
/// listener that has stopped does not close what is still to be handed over).
fn ours() -> &'static Mutex<Vec<(SocketAddr, OwnedFd)>> {
    static OURS: OnceLock<Mutex<Vec<(SocketAddr, OwnedFd)>>> = OnceLock::new();
    OURS.get_or_init(Mutex::default)
}

/// Sockets received from the gateway this one replaces, until the listeners take them.
fn inherited() -> &'static Mutex<HashMap<SocketAddr, OwnedFd>> {
    static INHERITED: OnceLock<Mutex<HashMap<SocketAddr, OwnedFd>>> = OnceLock::new();
    INHERITED.get_or_init(Mutex::default)
}

/// The listening socket for `address`: the one handed over by the previous gateway, if any
/// (taken, once), else `None` (bind a new one).
pub(crate) fn take_inherited(address: SocketAddr) -> Option<TcpListener> {
    let fd = inherited()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&address)?;
    Some(TcpListener::from(fd))
}

/// Closes the handed-over sockets of addresses this gateway does not listen on (a listener
/// removed from the config): nobody would accept their connections.
pub(crate) fn keep_only(addresses: &[SocketAddr]) {
    let mut table = inherited().lock().unwrap_or_else(PoisonError::into_inner);
    table.retain(|address, _| {
        let keep = addresses.contains(address);
        if !keep {
            tracing::warn!(address = %address, "handed-over socket not in this config: closed");
        }
        keep
    });
}

/// Whether the previous gateway handed over a socket for `address`.
pub(crate) fn is_inherited(address: SocketAddr) -> bool {
    inherited()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&address)
}

/// Keeps the listening sockets systemd passed (socket activation: `LISTEN_FDS` for this
/// process's `LISTEN_PID`) for the listeners of the same address; returns their addresses.
pub(crate) fn from_systemd() -> Result<Vec<SocketAddr>, GatewayError> {
    let mut passed = listenfd::ListenFd::from_env();
    let mut table = inherited().lock().unwrap_or_else(PoisonError::into_inner);
    let mut addresses = Vec::new();
    for index in 0..passed.len() {
        let bad = |e: std::io::Error| {
            GatewayError::SocketActivation(format!(
                "socket {index} passed by systemd (LISTEN_FDS): {e}; a portcullis.socket unit \
                 may list TCP ListenStream= sockets only"
            ))
        };
        let Some(listener) = passed.take_tcp_listener(index).map_err(bad)? else {
            continue;
        };
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| bad(e.into()))?;
        let address = listener.local_addr().map_err(bad)?;
        if table.insert(address, listener.into()).is_some() {
            return Err(bad(std::io::Error::other(format!(
                "a second socket for {address}"
            ))));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// Addresses this process's listeners listen on (bound, taken over or passed by systemd).
fn bound() -> &'static Mutex<HashSet<SocketAddr>> {
    static BOUND: OnceLock<Mutex<HashSet<SocketAddr>>> = OnceLock::new();
    BOUND.get_or_init(Mutex::default)
}

/// Whether a listener of this process listens on `address` (its connections are queued from
/// then on): what readiness waits for. Known from the listeners themselves, not from
/// `/proc/net`, which a sandbox may hide (systemd's `ProcSubset=pid`).
pub(crate) fn is_listening(address: SocketAddr) -> bool {
    bound()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&address)
}

/// Registers a listening socket, so that an upgrade can hand it over.
pub(crate) fn register(address: SocketAddr, socket: &impl AsFd) {
    bound()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(address);
    match socket.as_fd().try_clone_to_owned() {
        Ok(fd) => ours()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((address, fd)),
        Err(e) => {
            tracing::warn!(address = %address, error = %e, "listening socket not registered for upgrades")
        }
    }
}

/// Listens on `path` for a new gateway; the first one of this user that asks gets every
/// registered socket, and this gateway then shuts down gracefully.
pub(crate) fn serve_handover(path: &Path) -> Result<(), GatewayError> {
    let bad = |e: std::io::Error| {
        GatewayError::Upgrade(format!("upgrade socket {}: {e}", path.display()))
    };
    // A stale socket file from an earlier run would make bind fail.
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(path).map_err(bad)?;
    }
    let listener = UnixListener::bind(path).map_err(bad)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bad)?;
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match hand_over(&stream) {
                    Ok(count) => {
                        tracing::info!(
                            sockets = count,
                            "listening sockets handed to the new gateway; draining and exiting"
                        );
                        let _ = std::fs::remove_file(&path);
                        // The same graceful shutdown as SIGTERM: stop accepting, finish what is
                        // in flight, exit.
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::TERM,
                        );
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "upgrade request refused"),
                }
            }
        })
        .map(drop)
        .map_err(bad)
}

fn hand_over(stream: &UnixStream) -> Result<usize, String> {
    let peer = rustix::net::sockopt::socket_peercred(stream).map_err(|e| e.to_string())?;
    if peer.uid != rustix::process::getuid() {
        return Err(format!(
            "caller uid {} is not this gateway's",
            peer.uid.as_raw()
        ));
    }
    let ours = ours().lock().unwrap_or_else(PoisonError::into_inner);
    let sockets: Vec<_> = ours.iter().take(MAX_SOCKETS).collect();
    let names: String = sockets.iter().map(|(a, _)| format!("{a}\n")).collect();
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err("too many sockets for one message".to_owned());
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(names.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| e.to_string())?;
    Ok(fds.len())
}

/// Asks the running gateway at `path` for its listening sockets (trying for a few seconds),
/// and keeps them for the listeners of this one.
pub(crate) fn receive(path: &PathBuf) -> Result<usize, GatewayError> {
    let started = Instant::now();
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(stream) => break stream,
            Err(e) if started.elapsed() < CONNECT_FOR => {
                tracing::debug!(error = %e, "waiting for the running gateway's upgrade socket");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(GatewayError::Upgrade(format!(
                    "no running gateway answered on {} ({e}); start the running one with --upgrade-socket",
                    path.display()
                )))
            }
        }
    };
    let mut names = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut names)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| GatewayError::Upgrade(format!("receiving the listening sockets: {e}")))?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let text = String::from_utf8_lossy(&names[..received.bytes]);
    let addresses: Vec<SocketAddr> = text.lines().filter_map(|l| l.parse().ok()).collect();
    if addresses.len() != fds.len() {
        return Err(GatewayError::Upgrade(format!(
            "the running gateway sent {} addresses and {} sockets",
            addresses.len(),
            fds.len()
        )));
    }
    let count = fds.len();
    let mut table = inherited().lock().unwrap_or_else(PoisonError::into_inner);
    table.extend(addresses.into_iter().zip(fds));
    Ok(count)
}
