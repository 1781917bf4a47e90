//! Forged, stale, replayed and mismatched callbacks.
