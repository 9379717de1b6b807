//! The fleet console, served by the collector's HTTP listener.

pub mod session;

pub use session::Console;
