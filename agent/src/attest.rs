//! Who is calling: the peer credentials the kernel recorded for the Unix socket connection
//! (SO_PEERCRED: pid, uid, gid at connect time — the caller cannot choose them) and the
//! executable of that pid, matched against the registered workloads' selectors.

use std::path::PathBuf;

use crate::config::{Selectors, WorkloadEntry};

/// A local caller, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) pid: Option<i32>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `/proc/PID/exe`, when the pid is known and the link readable.
    pub(crate) path: Option<PathBuf>,
}

impl Caller {
    /// The caller of a connection with these peer credentials.
    pub(crate) fn from_cred(cred: &tokio::net::unix::UCred) -> Self {
        let pid = cred.pid();
        // A process may exit (and its pid be reused) between connect and now; an unreadable
        // link leaves the path unknown, and a `path` selector then does not match.
        let path = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
        Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            path,
        }
    }

    /// Whether every given selector matches this caller.
    pub(crate) fn matches(&self, s: &Selectors) -> bool {
        s.uid.is_none_or(|uid| uid == self.uid)
            && s.gid.is_none_or(|gid| gid == self.gid)
            && s.path
                .as_ref()
                .is_none_or(|p| self.path.as_ref() == Some(p))
    }

    /// The positions of the entries this caller matches, in configuration order (the first is
    /// the caller's default SVID).
    pub(crate) fn entries(&self, workloads: &[WorkloadEntry]) -> Vec<usize> {
        workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| self.matches(&w.selectors))
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            pid: Some(42),
            uid: 1000,
            gid: 100,
            path: Some("/usr/bin/python3.11".into()),
        }
    }

    #[test]
    fn every_given_selector_must_match() {
        let c = caller();
        let sel = |uid, gid, path: Option<&str>| Selectors {
            uid,
            gid,
            path: path.map(PathBuf::from),
        };
        assert!(c.matches(&sel(Some(1000), None, None)));
        assert!(c.matches(&sel(Some(1000), Some(100), Some("/usr/bin/python3.11"))));
        assert!(!c.matches(&sel(Some(1000), Some(100), Some("/usr/bin/python3"))));
        assert!(!c.matches(&sel(Some(0), None, None)));
        assert!(!c.matches(&sel(None, Some(0), None)));
        let unknown = Caller { path: None, ..c };
        assert!(!unknown.matches(&sel(None, None, Some("/usr/bin/python3.11"))));
        assert!(unknown.matches(&sel(Some(1000), None, None)));
    }
}
