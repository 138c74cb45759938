//! Pure state machines: `step(state, event, now, &policy) -> (state, actions)`.
//!
//! This module is the library's decision-maker. It performs no I/O and reads
//! no clock; the controller feeds it events and time and carries out the
//! actions it returns. Every decision can be tested without a runtime.
