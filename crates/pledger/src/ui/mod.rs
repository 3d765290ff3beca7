//! `pledger ui`: read-only release pages served from the binary (also started by `pledger up`).
//!
//! Every page reads the ledger as `pledger` commands do (verified, ignored messages marked),
//! plus the canary monitor's status and judgement history for the release page's charts. The
//! release page stays live through server-sent events: a watcher on the prompt's ledger
//! family, on the release's judgement history and on its canary status re-renders the page's
//! live part and tells the charts to reload. Nothing here writes: changes stay signed CLI
//! commands. Assets (uPlot, the stylesheet, the page script) are built into the binary.

mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use pledger_core::{PromptName, ReleaseId};
use pledger_infra::worker::canary::{read_judgements, read_status};
use pledger_infra::Ledger;
use tokio::sync::{mpsc, watch};

use crate::app::Conn;
use crate::failure::Failure;

/// `pledger ui`'s default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How long the release page's event stream gathers changes before it renders once: a burst
/// of events (a freeze and its rollback, statuses every 200 ms under load) is one update.
pub const SETTLE: Duration = Duration::from_millis(150);
/// How long a cached `audit verify` result of the audit page is reused while the ledger does
/// not grow.
const VERIFY_REUSE: Duration = Duration::from_secs(60);

/// What the pages read from.
pub struct Ui {
    conn: Conn,
    /// The NATS URL shown in the footer (without credentials).
    source: String,
    verified: tokio::sync::Mutex<Option<(u64, std::time::Instant, crate::app::Report)>>,
    /// Turns true at shutdown: open event streams end, so the server's graceful shutdown (which
    /// waits for every connection) is not held up by a page left open.
    shutdown: watch::Receiver<bool>,
}

/// Checks an address for `--listen`/`--ui`: loopback, or anything with `public`.
pub fn check_listen(raw: &str, public: bool, flag: &str) -> Result<SocketAddr, Failure> {
    let addr: SocketAddr = raw.parse().map_err(|_| {
        Failure::usage(format!(
            "{flag} `{raw}` is not HOST:PORT with an IP address (e.g. {DEFAULT_LISTEN})"
        ))
    })?;
    if !addr.ip().is_loopback() && !public {
        return Err(Failure::usage(format!(
            "{flag} {addr} is not a loopback address: the pages show every prompt's text, reviews and evidence to whoever reaches the address, without a login; pass --ui-public to serve them there anyway (docs/USER-GUIDE.md, \"Release pages\")"
        )));
    }
    Ok(addr)
}

/// `pledger ui`: serves until Ctrl-C or SIGTERM.
pub async fn run(args: &crate::cli::UiArgs, cli: &crate::cli::Cli) -> Result<(), Failure> {
    let addr = check_listen(&args.listen, args.ui_public, "--listen")?;
    let mut signals = crate::workers::Signals::install()?;
    let app = crate::app::App::from_cli(cli);
    let conn = app.connect().await?;
    let (stop, stopped) = watch::channel(false);
    let (bound, served) = serve(addr, conn, &cli.nats, stopped).await?;
    eprintln!(
        "pledger ui: release pages at http://{bound}/ (read-only; Ctrl-C or SIGTERM stops it)"
    );
    let reason = signals.recv().await;
    let _ = stop.send(true);
    let _ = served.await;
    eprintln!("pledger ui: {reason}: stopped");
    Ok(())
}

/// Binds `addr` and serves the pages until `shutdown` turns true. Returns the address bound
/// (a port 0 is chosen by the system) and the server's task.
pub async fn serve(
    addr: SocketAddr,
    conn: Conn,
    nats_url: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::other(format!("release pages: cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::other(e.to_string()))?;
    let ui = Arc::new(Ui {
        conn,
        source: pledger_core::nats_url::redact_all(nats_url),
        verified: tokio::sync::Mutex::new(None),
        shutdown: shutdown.clone(),
    });
    let router = router(ui);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        });
        if let Err(e) = server.await {
            tracing::warn!("release pages: {e}");
        }
    });
    Ok((bound, task))
}

fn router(ui: Arc<Ui>) -> axum::Router {
    axum::Router::new()
        .route("/", get(prompts))
        .route("/prompts/{prompt}", get(prompt))
        .route("/releases/{release}", get(release))
        .route("/releases/{release}/live", get(release_live))
        .route("/releases/{release}/judgements", get(judgements))
        .route("/releases/{release}/events", get(release_events))
        .route("/digest", get(digest))
        .route("/audit", get(audit))
        .route("/assets/{name}", get(asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            page_error(not_found(
                "no such page: the pages are /, /prompts/<prompt>, /releases/<release>, /digest and /audit",
            ))
        })
        .with_state(ui)
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

fn html(markup: maud::Markup) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A failure as a page: 404 for what does not exist, 400 for a malformed address, 503 when
/// the ledger cannot be read.
fn page_error(f: Failure) -> Response {
    use crate::failure::Exit;
    let status = match f.exit {
        Exit::Usage => StatusCode::BAD_REQUEST,
        Exit::Rejected => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, html(pages::error(status.as_u16(), &f.message))).into_response()
}

fn not_found(message: impl Into<String>) -> Failure {
    Failure {
        exit: crate::failure::Exit::Rejected,
        message: message.into(),
        rule: None,
    }
}

fn respond(result: Result<maud::Markup, Failure>) -> Response {
    match result {
        Ok(m) => html(m),
        Err(f) => page_error(f),
    }
}

async fn prompts(State(ui): State<Arc<Ui>>) -> Response {
    respond(prompts_page(&ui).await)
}

async fn prompts_page(ui: &Ui) -> Result<maud::Markup, Failure> {
    let ledger = &ui.conn.ledger;
    let mut rows = Vec::new();
    for p in ledger.prompts().await? {
        let family = ledger.load(&p).await?;
        if family.state.is_registered() {
            rows.push(pages::PromptRow::of(&family));
        }
    }
    Ok(pages::prompts(&ui.source, &rows))
}

#[derive(serde::Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn prompt(
    State(ui): State<Arc<Ui>>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Response {
    respond(prompt_page(&ui, &name, q).await)
}

async fn prompt_page(ui: &Ui, name: &str, q: DiffQuery) -> Result<maud::Markup, Failure> {
    let prompt = PromptName::parse(name)?;
    let family = crate::app::registered(ui.conn.ledger.load_all(&prompt).await?)?;
    let diff = match (q.from.as_deref(), q.to.as_deref()) {
        (Some(from), Some(to)) if !from.is_empty() && !to.is_empty() => {
            let from = pledger_core::decide::resolve_version(&family.state, from)?;
            let to = pledger_core::decide::resolve_version(&family.state, to)?;
            let (Some(a), Some(b)) = (
                family.state.versions.get(&from),
                family.state.versions.get(&to),
            ) else {
                return Err(Failure::usage("a version to compare is not on this prompt"));
            };
            Some((
                from.clone(),
                to.clone(),
                pledger_core::diff::diff_artifacts(&a.artifact, &b.artifact),
            ))
        }
        _ => None,
    };
    Ok(pages::prompt(&ui.source, &family, diff.as_ref()))
}

/// Everything the release page shows, read now.
struct ReleaseRead {
    family: pledger_infra::Family,
    status: Option<pledger_infra::worker::canary::CanaryStatus>,
}

async fn read_release(ledger: &Ledger, release: &ReleaseId) -> Result<ReleaseRead, Failure> {
    let family = crate::app::registered(ledger.load_all(release.prompt()).await?)?;
    crate::app::known_release(&family.state, release)?;
    let status = read_status(ledger.jetstream(), release)
        .await
        .map_err(|e| Failure::other(e.to_string()))?;
    Ok(ReleaseRead { family, status })
}

async fn release(State(ui): State<Arc<Ui>>, Path(raw): Path<String>) -> Response {
    let result = async {
        let release = ReleaseId::parse(&raw)?;
        let read = read_release(&ui.conn.ledger, &release).await?;
        Ok(pages::release(
            &ui.source,
            &release,
            &read.family,
            read.status.as_ref(),
        ))
    }
    .await;
    respond(result)
}

async fn release_live(State(ui): State<Arc<Ui>>, Path(raw): Path<String>) -> Response {
    let result = async {
        let release = ReleaseId::parse(&raw)?;
        let read = read_release(&ui.conn.ledger, &release).await?;
        Ok(pages::release_live(
            &release,
            &read.family,
            read.status.as_ref(),
        ))
    }
    .await;
    respond(result)
}

async fn judgements(State(ui): State<Arc<Ui>>, Path(raw): Path<String>) -> Response {
    let result = async {
        let release = ReleaseId::parse(&raw)?;
        let (points, skipped) = read_judgements(&ui.conn.ledger, &release)
            .await
            .map_err(|e| Failure::other(e.to_string()))?;
        let charts = pledger_core::chart::charts(&points);
        let mut json = serde_json::to_value(&charts).map_err(|e| Failure::other(e.to_string()))?;
        json["skipped"] = skipped.into();
        json["release"] = release.to_string().into();
        Ok::<_, Failure>(json)
    }
    .await;
    match result {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json.to_string(),
        )
            .into_response(),
        Err(f) => page_error(f),
    }
}

#[derive(serde::Deserialize)]
struct WeekQuery {
    week: Option<String>,
}

async fn digest(State(ui): State<Arc<Ui>>, Query(q): Query<WeekQuery>) -> Response {
    let result = async {
        let d = crate::schedule::digest_for_page(&ui.conn, q.week).await?;
        Ok(pages::digest(&ui.source, &d))
    }
    .await;
    respond(result)
}

async fn audit(State(ui): State<Arc<Ui>>) -> Response {
    let result = async {
        let facts = ui.conn.ledger.stream_facts().await?;
        let mut cached = ui.verified.lock().await;
        let fresh = cached.as_ref().is_some_and(|(last, at, _)| {
            *last == facts.last_sequence && at.elapsed() < VERIFY_REUSE
        });
        if !fresh {
            let report = crate::commands::audit::verify_ledger(&ui.conn).await?;
            *cached = Some((facts.last_sequence, std::time::Instant::now(), report));
        }
        let (last, at, report) = cached.as_ref().expect("just filled");
        let checkpoint = crate::commands::audit::latest_checkpoint_text(&ui.conn).await;
        Ok(pages::audit(
            &ui.source,
            *last,
            at.elapsed(),
            report,
            checkpoint.as_deref().map_err(String::as_str),
        ))
    }
    .await;
    respond(result)
}

// ---------------------------------------------------------------------------------------------
// Assets
// ---------------------------------------------------------------------------------------------

/// The assets built into the binary: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
    (
        "pledger.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/pledger.css"),
    ),
    (
        "release.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/release.js"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => page_error(not_found(format!("no asset `{name}`"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------------

/// What changed for an open release page.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    /// A message on the prompt's ledger family (accepted or not: the render says).
    Ledger,
    /// A new judgement point: the charts reload.
    Point,
    /// The canary monitor's status of the release.
    Status,
}

/// `GET /releases/<release>/events`: server-sent events for an open release page. `live`
/// carries the page's live part as HTML, rendered after [`SETTLE`] of quiet; `chart` says the
/// judgement history grew. One `live` and one `chart` are sent at once, so a change between
/// the page's load and this stream's start is not missed.
async fn release_events(State(ui): State<Arc<Ui>>, Path(raw): Path<String>) -> Response {
    let release = match ReleaseId::parse(&raw) {
        Ok(r) => r,
        Err(e) => return page_error(e.into()),
    };
    let (changes_tx, mut changes) = mpsc::channel::<Change>(64);
    let ledger = ui.conn.ledger.clone();
    tokio::spawn(follow_stream(
        ledger.clone(),
        pledger_infra::ledger::LEDGER_STREAM,
        pledger_core::names::family_filter(release.prompt()),
        Change::Ledger,
        changes_tx.clone(),
    ));
    tokio::spawn(follow_stream(
        ledger.clone(),
        pledger_core::names::JUDGEMENTS_STREAM,
        pledger_core::names::judgement_subject(&release),
        Change::Point,
        changes_tx.clone(),
    ));
    tokio::spawn(follow_status(ledger.clone(), release.clone(), changes_tx));
    let (out_tx, out_rx) = mpsc::channel::<SseEvent>(16);
    let mut shutdown = ui.shutdown.clone();
    tokio::spawn(async move {
        let mut pending = vec![Change::Ledger, Change::Point];
        loop {
            if !pending.is_empty() {
                // Gather what else arrives while settling.
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        c = changes.recv() => match c {
                            Some(c) => pending.push(c),
                            None => break,
                        },
                    }
                }
                if pending.iter().any(|c| *c != Change::Point) {
                    let live = match read_release(&ledger, &release).await {
                        Ok(read) => {
                            pages::release_live(&release, &read.family, read.status.as_ref())
                                .into_string()
                        }
                        Err(f) => pages::error(503, &f.message).into_string(),
                    };
                    if out_tx
                        .send(SseEvent::default().event("live").data(live))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if pending.iter().any(|c| *c != Change::Status)
                    && out_tx
                        .send(SseEvent::default().event("chart").data("reload"))
                        .await
                        .is_err()
                {
                    return;
                }
                pending.clear();
            }
            tokio::select! {
                _ = out_tx.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
                c = changes.recv() => match c {
                    Some(c) => pending.push(c),
                    None => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Sends `change` for each new message on `filter` of `stream` until the page goes away. A
/// stream that does not exist (a ledger from before the judgement history) sends nothing.
async fn follow_stream(
    ledger: Ledger,
    stream: &'static str,
    filter: String,
    change: Change,
    tx: mpsc::Sender<Change>,
) {
    let consumer = async {
        let s = ledger
            .jetstream()
            .get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?;
        let c: consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::None,
                filter_subject: filter.clone(),
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        c.messages().await.map_err(|e| e.to_string())
    };
    let mut messages = match consumer.await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!("release page: not following {stream} {filter}: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            m = messages.next() => match m {
                Some(Ok(_)) => {
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => tracing::debug!("release page: following {filter}: {e}"),
                None => return,
            },
        }
    }
}

/// Sends [`Change::Status`] for each new canary status of `release`.
async fn follow_status(ledger: Ledger, release: ReleaseId, tx: mpsc::Sender<Change>) {
    let watch = async {
        let kv = ledger
            .jetstream()
            .get_key_value(pledger_core::names::CANARY_STATUS_BUCKET)
            .await
            .map_err(|e| e.to_string())?;
        kv.watch(pledger_core::names::canary_status_key(&release))
            .await
            .map_err(|e| e.to_string())
    };
    let mut updates = match watch.await {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!("release page: not following the canary status of {release}: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            u = updates.next() => match u {
                Some(Ok(_)) => {
                    if tx.send(Change::Status).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => tracing::debug!("release page: canary status of {release}: {e}"),
                None => return,
            },
        }
    }
}
