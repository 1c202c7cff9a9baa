//! Tamper-evident audit log. Not implemented yet: see issue 5.
