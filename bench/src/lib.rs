//! Load generator and benchmark harness. Not implemented yet: see issue 6.
