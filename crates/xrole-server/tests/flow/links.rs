//! Link edge cases.
