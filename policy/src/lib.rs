//! Pure decision logic.
