//! Admin API. Not implemented yet: see issue 3.
