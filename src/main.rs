use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use corral::api::{Auth, Control};
use corral::cli::{Args, Command, LogFormat};
use corral::config::Config;
use corral::logging::{LogSink, PlainLine};
use corral::runtime::Runtime;
use corral::server::drain;
use corral::store::Store;

/// jemalloc rather than glibc's malloc: see its entry in Cargo.toml for what it was measured to
/// save. Only the binary sets it; the library and its tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let log = init_tracing(args.log_format);

    if let Some(Command::Check) = args.command {
        return check(&args);
    }

    let mut builder = if args.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if args.worker_threads > 1 {
            b.worker_threads(args.worker_threads);
        }
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    };
    log.flush();
    code
}

async fn run(args: Args) -> Result<(), String> {
    let control = corral::server::bind_control(args.control_addr)
        .map_err(|e| format!("cannot bind control listener {}: {e}", args.control_addr))?;
    let runtime = Arc::new(Runtime::new(args.listen_ip, vec![args.control_addr.port()]));

    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };

    let store = Store::open(&args.store_spec(), &args.store_prefix)
        .await
        .map_err(|e| e.to_string())?;
    let auth = Auth {
        rancher: args.access_key.clone().zip(args.secret_key.clone()),
        consul_token: args.consul_token.clone(),
    };
    let api = Arc::new(
        Control::start(store, runtime.clone(), config, auth)
            .await?
            .with_audit_retention(args.audit_retention)
            .with_dns_refresh(std::time::Duration::from_secs(args.dns_refresh_secs)),
    );
    corral::health::spawn(api.clone());
    // etcd: follow the other replicas' writes (the file store has none; this ends at once).
    tokio::spawn(api.clone().follow());
    let (control_signal, control_watch) = drain::channel();
    tokio::spawn(api.clone().run_resolver(control_watch.clone()));
    tokio::spawn(corral::api::serve(control, api.clone(), control_watch));
    // Held until `run` returns: dropping it stops the metrics listener.
    let _metrics_signal = match args.metrics_addr {
        Some(addr) => {
            let listener = corral::server::bind_control(addr)
                .map_err(|e| format!("cannot bind metrics listener {addr}: {e}"))?;
            let (signal, watch) = drain::channel();
            tokio::spawn(corral::api::serve_metrics(listener, runtime.clone(), watch));
            Some(signal)
        }
        None => None,
    };
    tracing::info!(control = %args.control_addr, "corral started");

    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&api, args.config.as_deref()).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    let deadline = runtime.table().timeouts.drain();
    tracing::info!(?deadline, "shutting down: draining connections");
    // The control listener stays up while the data plane drains, answering /ready with 503.
    runtime.drain(deadline).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), control_signal.drain()).await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// SIGHUP: a valid file replaces the table; an invalid one is refused and the old table stays.
async fn reload(api: &Control, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: no --config file");
        return;
    };
    let result = match Config::load(path) {
        Ok(config) => api.reload_file(config).await,
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(generation) => tracing::info!(generation, "reload applied"),
        Err(e) => tracing::error!(error = %e, "reload refused; the previous table keeps serving"),
    }
}

fn check(args: &Args) -> ExitCode {
    let Some(path) = &args.config else {
        eprintln!("corral check: --config FILE is required");
        return ExitCode::FAILURE;
    };
    let result = Config::load(path).map_err(|e| e.to_string()).and_then(|c| {
        let metrics = corral::metrics::Metrics::new();
        let ctx = corral::routing::BuildContext {
            generation: 1,
            reserved_ports: &[args.control_addr.port()],
            metrics: &metrics,
            tls: &corral::tls::TlsContext::new(),
        };
        // Load errors name the file already; build errors do not.
        corral::routing::build(&c, &ctx).map_err(|e| format!("{}: {e}", path.display()))
    });
    match result {
        Ok(table) => {
            println!(
                "{}: ok ({} listeners)",
                path.display(),
                table.listeners().count()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The log subscriber, writing through a [`LogSink`] (whose batch `main` flushes at exit).
fn init_tracing(format: LogFormat) -> LogSink {
    let sink = LogSink::default();
    if let Err(e) = sink.flush_periodically() {
        eprintln!("log lines will wait for a full batch: {e}");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not in a file or a log collector.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink.clone());
    match format {
        // Fields stay under "fields": flattened, the access log's `target` field would collide with
        // the event's own `target` (its module path).
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.event_format(PlainLine::default()).init(),
    }
    sink
}
