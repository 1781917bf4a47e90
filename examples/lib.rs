//! Runnable examples live beside this file; see each one's header comment.
