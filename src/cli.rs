//! Command-line flags; every flag can also be set by a `CORRAL_*` environment variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::store::StoreSpec;

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "A load balancer driven by the Rancher v1 and Consul agent APIs",
    // A flag given twice takes its last value (wrappers can append to a base command line).
    args_override_self = true
)]
pub struct Args {
    /// JSON configuration file (see config/corral.json); re-read on SIGHUP.
    #[arg(long, env = "CORRAL_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address of the control listener (API, status, metrics).
    #[arg(long, env = "CORRAL_CONTROL_ADDR", default_value = "127.0.0.1:9180")]
    pub control_addr: SocketAddr,

    /// Also serve /metrics on this address (it is always on the control listener).
    #[arg(long, env = "CORRAL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Address the load-balancer listeners bind to.
    #[arg(long, env = "CORRAL_LISTEN_IP", default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,

    /// Directory of the control state (`state.json`, mode 0600: it holds private keys);
    /// short for `--store file:DIR`.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Where the control state lives: `file:DIR` (default: `file:` + --data-dir) or
    /// `etcd:http://HOST:PORT[,http://HOST:PORT…]` to share it between replicas. Wins over
    /// --data-dir.
    #[arg(long, env = "CORRAL_STORE")]
    pub store: Option<StoreSpec>,

    /// Key prefix of the state in etcd (several corral clusters can share one etcd).
    #[arg(long, env = "CORRAL_STORE_PREFIX", default_value = "/corral/")]
    pub store_prefix: String,

    /// Rancher API access key; with --secret-key, HTTP Basic is required on /v1.
    #[arg(long, env = "CORRAL_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,

    /// Rancher API secret key.
    #[arg(long, env = "CORRAL_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Consul ACL token required for agent writes (reads stay anonymous).
    #[arg(long, env = "CORRAL_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,

    /// Audit log entries kept (newest); older ones are dropped.
    #[arg(long, env = "CORRAL_AUDIT_RETENTION", default_value_t = 10_000)]
    pub audit_retention: usize,

    /// Seconds between lookups of external services' hostnames (clamped to 1..=3600).
    #[arg(long, env = "CORRAL_DNS_REFRESH_SECS", default_value_t = 30)]
    pub dns_refresh_secs: u64,

    /// Worker threads of the runtime; 0 means one per core.
    #[arg(long, env = "CORRAL_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Log line format.
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Args {
    /// The store to use: `--store`, else `file:` + `--data-dir`.
    pub fn store_spec(&self) -> StoreSpec {
        self.store
            .clone()
            .unwrap_or_else(|| StoreSpec::File(self.data_dir.clone()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file and exit: 0 if it would be served, 1 with the error if not.
    Check,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_flags() {
        let args = Args::parse_from(["corral"]);
        assert_eq!(args.store_spec(), StoreSpec::File("./data".into()));
        assert_eq!(args.store_prefix, "/corral/");
        let args = Args::parse_from(["corral", "--data-dir", "/d"]);
        assert_eq!(args.store_spec(), StoreSpec::File("/d".into()));
        let args = Args::parse_from([
            "corral",
            "--data-dir",
            "/d",
            "--store",
            "etcd:http://127.0.0.1:2379,http://127.0.0.1:2381",
            "--store-prefix",
            "/t/",
        ]);
        assert_eq!(
            args.store_spec(),
            StoreSpec::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.1:2381".into()
            ])
        );
        assert!(Args::try_parse_from(["corral", "--store", "zk:x"]).is_err());
        // The last of a repeated flag wins.
        let args = Args::parse_from([
            "corral",
            "--listen-ip",
            "127.0.0.1",
            "--listen-ip",
            "127.0.0.2",
        ]);
        assert_eq!(args.listen_ip, "127.0.0.2".parse::<IpAddr>().unwrap());
    }
}
