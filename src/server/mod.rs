//! The actix-web server: routes, the proxy handler, health, and the state
//! writer that runs beside them.

pub(crate) mod admin;
pub(crate) mod auth;
mod body;
pub(crate) mod disconnect;
pub(crate) mod errors;
mod gate;
mod generations;
mod health;
mod load;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod relay;
pub(crate) mod request_log;
mod routes;
pub(crate) mod shared;
mod tasks;

use crate::config::ServeConfig;
use crate::model::StoreFile;
use crate::store::Backend;
use actix_web::http::KeepAlive;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use errors::ApiError;
use shared::Shared;
use std::time::Duration;

/// How long a client may take to send a request's head, and may stay silent
/// while sending its body.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// host:port
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the server failed: {0}")]
    Run(#[from] std::io::Error),
}

/// Run the server until SIGINT/SIGTERM. `file` is the store as read at start.
pub(crate) fn run(config: ServeConfig, store: Backend, file: StoreFile) -> Result<(), ServeError> {
    let shared = web::Data::new(Shared::new(config.clone(), store, file));
    actix_web::rt::System::new().block_on(serve(config, shared))
}

async fn serve(config: ServeConfig, shared: web::Data<Shared>) -> Result<(), ServeError> {
    // Each client connection holds two descriptors (see `disconnect`), and a
    // proxy holds an upstream one per request: use the hard limit.
    // Each worker then keeps its connections within its share (see `load`).
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let workers = config.workers.unwrap_or_else(default_workers);
    let budget = load::Budget::new(nofile, workers);
    let addr = format!("{}:{}", config.host, config.port);
    let data = shared.clone();
    let (connect_timeout, headers_timeout) = (config.connect_timeout, config.headers_timeout);
    let (referer, title) = (config.referer.clone(), config.title.clone());
    let access = web::Data::new(auth::Access::new(
        config.admin_token.as_ref(),
        &config.client_tokens,
    ));
    let scrape = web::Data::new(metrics::Scrape(metrics::registry(
        shared.live().clone(),
        shared.sync().clone(),
    )));
    let gate_budget = web::Data::new(budget);
    let server = HttpServer::new(move || {
        use actix_web::middleware::from_fn;
        App::new()
            .app_data(data.clone())
            .app_data(access.clone())
            .app_data(scrape.clone())
            .app_data(gate_budget.clone())
            .app_data(web::Data::new(proxy::UpstreamClient::new(
                connect_timeout,
                headers_timeout,
                &referer,
                &title,
            )))
            .service(
                web::resource("/health")
                    .route(web::get().to(health::handle))
                    .default_service(web::to(get_only)),
            )
            .service(
                web::resource("/metrics")
                    .route(web::get().to(metrics::handle))
                    .default_service(web::to(get_only)),
            )
            .service(admin::scope())
            // Scopes rather than `{tail:.*}` patterns: no regex per request.
            .service(web::scope("/v1").default_service(web::to(proxy::handle)))
            .service(web::scope("/api/v1").default_service(web::to(proxy::handle)))
            .default_service(web::to(not_found))
            // The last wrap is the outermost: every request is logged,
            // including the ones the gate and the token check turn away.
            .wrap(from_fn(auth::clients))
            .wrap(from_fn(gate::gate))
            .wrap(from_fn(request_log::middleware))
            .wrap(from_fn(disconnect::track))
    })
    .on_connect(move |conn, ext| disconnect::on_connect(conn, ext, budget))
    .workers(workers)
    // Never EMFILE on accept: a worker full of busy connections waits.
    .max_connections(budget.max)
    .shutdown_timeout(config.shutdown_grace.as_secs())
    // SIGINT and SIGTERM both stop gracefully (actix's own SIGINT is forced).
    .disable_signals()
    // Idle kept-alive connections close after --keep-alive (75 s). actix
    // times out only the head of a connection's first request
    // (`client_request_timeout`); later heads are bounded by the watchdog in
    // `disconnect`.
    .keep_alive(KeepAlive::Timeout(config.keep_alive))
    .client_request_timeout(CLIENT_TIMEOUT);
    let server = server.bind(&addr).map_err(|source| ServeError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let bound = server
        .addrs()
        .first()
        .map_or_else(|| addr.clone(), ToString::to_string);
    announce(&config, &shared, &bound);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        log::info!(
            "{signal} received: no new connections; in-flight requests get up to the grace period"
        );
        handle.stop(true).await;
    });
    let writer = actix_web::rt::spawn(tasks::state_writer(shared.clone().into_inner()));
    let checker = actix_web::rt::spawn(tasks::upstream_checker(shared.clone().into_inner()));
    let prober = config
        .reprobe_interval
        .map(|every| actix_web::rt::spawn(tasks::reprober(shared.clone().into_inner(), every)));
    server.await?;
    writer.abort();
    checker.abort();
    if let Some(prober) = prober {
        prober.abort();
    }
    // Final write of the state, after in-flight requests finished.
    let sync = shared.sync().clone();
    let _ = web::block(move || sync.shutdown()).await;
    log::info!("orproxy stopped");
    crate::logging::flush();
    Ok(())
}

/// actix's default number of workers: one per CPU, at most 512 (actix
/// refuses more).
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .min(512)
}

/// The startup lines: where orproxy listens, its store, upstream, keys,
/// logs and access.
fn announce(config: &ServeConfig, shared: &Shared, bound: &str) {
    let counts = shared.counts(Utc::now());
    say(format_args!(
        "orproxy listening on http://{bound}/v1 | store {}{} | upstream {} | keys: {} active, {} free held, {} cooling, {} disabled | logs {}",
        shared.store.describe(),
        // A file store was checked at start (`commands::serve`).
        if matches!(shared.store, Backend::File(_)) {
            " (writable)"
        } else {
            ""
        },
        config.upstream,
        counts.active,
        counts.free_held,
        counts.cooling,
        counts.disabled,
        config.log_files.dir.display()
    ));
    say(format_args!(
        "access: {} | admin API: {} | metrics: http://{bound}/metrics",
        match config.client_tokens.len() {
            0 => "any bearer token (no --client-token)".to_owned(),
            1 => "1 client token".to_owned(),
            n => format!("{n} client tokens"),
        },
        if config.admin_token.is_some() {
            "on at /admin/keys"
        } else {
            "off (no --admin-token)"
        }
    ));
    if counts.active + counts.free_held + counts.cooling == 0 {
        say(format_args!(
            "No usable key yet: add one with `orproxy keys add` (the running server picks it up), \
             or set OPENROUTER_API_KEYS."
        ));
    }
}

/// Print a startup line on stdout. A closed or full stdout (the terminal
/// went away, `| head`) must not stop the server: the line is then dropped.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

/// Wait for SIGINT or SIGTERM; returns its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => {
            // Without signal handlers, Ctrl-C still ends the process the hard
            // way; state written in the last second may be lost.
            log::warn!("cannot install signal handlers; shutdown will not be graceful");
            std::future::pending().await
        }
    }
}

/// 405: a GET-only route asked with another method.
async fn get_only(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(
        req.method().as_str(),
        req.path(),
        "GET",
    ))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(req.path()))
}
