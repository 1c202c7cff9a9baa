//! Socket activation: the admin API's listening socket held by systemd
//! (`portcullis-admin.socket`, passed as `LISTEN_FDS`). systemd keeps it open while
//! `portcullis-admin.service` restarts, so connections made between the old process and the new
//! one wait in its queue instead of being refused. Without `LISTEN_FDS` the server binds its
//! `listen` address itself.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::error::AdminError;

/// The socket systemd passed, until the server takes it.
static PASSED: Mutex<Option<TcpListener>> = Mutex::new(None);

/// Takes the listening socket systemd passed to this process (`LISTEN_FDS` for its
/// `LISTEN_PID`), if any, and keeps it for the server. It must be one TCP socket listening on
/// `listen`, the admin config's (`config`) address: any other socket would take connections
/// nobody answers, or leave the configured address unserved.
///
/// Reads and clears the `LISTEN_*` variables: call it before other threads start.
pub(crate) fn from_systemd(listen: SocketAddr, config: &Path) -> Result<(), AdminError> {
    let mut passed = listenfd::ListenFd::from_env();
    if passed.len() == 0 {
        return Ok(());
    }
    if passed.len() > 1 {
        return Err(AdminError::SocketActivation(format!(
            "systemd passed {} sockets (LISTEN_FDS); portcullis-admin.socket must list exactly \
             one ListenStream=, the address of `listen` in {} ({listen})",
            passed.len(),
            config.display()
        )));
    }
    let bad = |e: std::io::Error| {
        AdminError::SocketActivation(format!(
            "socket 0 passed by systemd (LISTEN_FDS): {e}; portcullis-admin.socket may list \
             one TCP ListenStream= only, the address of `listen` in {} ({listen})",
            config.display()
        ))
    };
    let listener = passed
        .take_tcp_listener(0)
        .map_err(bad)?
        .ok_or_else(|| bad(std::io::Error::other("already taken")))?;
    let address = listener.local_addr().map_err(bad)?;
    if address != listen {
        return Err(AdminError::SocketActivation(format!(
            "systemd passed a listening socket for {address} (portcullis-admin.socket's \
             ListenStream=), but `listen` in {} is {listen}: make them the same",
            config.display()
        )));
    }
    *PASSED.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    Ok(())
}

/// The socket systemd passed for `listen` (taken, once), else `None`: bind one.
pub(crate) fn take(listen: SocketAddr) -> Option<TcpListener> {
    let mut passed = PASSED.lock().unwrap_or_else(PoisonError::into_inner);
    match passed.as_ref().map(TcpListener::local_addr) {
        Some(Ok(address)) if address == listen => passed.take(),
        _ => None,
    }
}
