//! The command-line tools beside the server: `send`/`tail`, `admin`, and the `bench` load
//! generator.
//! Clients of the server, not parts of it: they use only `config` and the protocol's types.

pub mod admin;
pub mod bench;
pub mod bench_rooms;
pub mod cli;
