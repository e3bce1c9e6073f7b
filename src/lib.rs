//! corral: a load-balancer data plane driven by Rancher's loadBalancerService model and
//! Consul's agent service API.
#![forbid(unsafe_code)]

pub mod api;
pub mod balance;
pub mod cli;
pub mod config;
pub mod health;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod sticky;
pub mod store;
pub mod tls;
pub mod utc;
