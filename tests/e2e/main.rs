//! End-to-end tests: the real `portcullis` binary, real TLS clients (rustls and curl), real
//! upstream processes, all on loopback.

// Helpers are shared between the test modules of this one binary.
#![allow(unreachable_pub)]

mod abuse;
mod admin_plane;
mod agent;
mod audit;
mod ca;
mod connections;
mod demo;
mod dlp;
mod dns;
mod explain;
mod fairness;
mod fleet;
mod grpc;
mod harness;
mod limits;
mod mesh;
mod observability;
mod oidc;
mod oidc_login;
mod oidc_provider;
mod operations;
#[path = "../../audit/tests/common/postgres.rs"]
mod postgres;
mod proxy;
mod proxy_protocol;
mod secrets;
mod streaming;
mod strict;
mod traces;
mod upgrade;
mod websocket;
