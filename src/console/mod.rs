//! `replay console`: the HTTP API (`/api/v1/`, JSON, bearer tokens with
//! roles) and the web pages (`/`, server-rendered, browser sessions) over
//! the same library the CLI calls — every check, plan, apply, pause and
//! audit entry is the library's, none is written twice. Where the API and a
//! page need the same step (reading filters, starting an apply, following
//! progress), it lives here once (`filters`, `live`, [`Console::apply_plan`]).
//!
//! The caller binds the listener and owns the shutdown token (tests bind
//! port 0). Applies started over the API run in this process as tasks the
//! console tracks; its shutdown interrupts them between two chunks, and a
//! re-run of the same apply resumes them.

mod api;
mod auth;
mod error;
pub(crate) mod filters;
mod live;
mod pages;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::Caller;
pub use error::ApiError;
pub use session::Visitor;

use crate::config::Endpoints;
use crate::control::approvals;
use crate::control::notify::{AppliedPlan, Notifier};
use crate::replay::apply::{self, BackupSource, Checked, Request};
use crate::replay::plan::{PlanId, SealedPlan};

/// How long requests in flight may take to finish once the console stops.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the console keeps what it makes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plans are written here and looked up here by id (`replay-plans/`).
    pub plan_dir: PathBuf,
    /// Pre-replay backups of applies started from the console (`backups/`).
    pub backup_dir: PathBuf,
    /// The console is served behind TLS (a reverse proxy): session cookies
    /// carry `Secure`, so a browser never sends them over plain HTTP.
    pub secure_cookies: bool,
    /// The two-person rule (`--require-approval`): a plan is applied only
    /// once an operator other than its maker approved it
    /// (`control::approvals`).
    pub require_approval: bool,
    /// Apply only plans rehearsed on the data as it is now
    /// (`--require-rehearsal`, checked by `replay::apply`).
    pub require_rehearsal: bool,
    /// The webhook told of the console's applies (`--notify`, `control::notify`).
    pub notify: Option<url::Url>,
}

/// How long a pause waits for the workers when not told.
pub(crate) const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// A request's reason, which every write needs.
pub(crate) fn reason(text: &str, why: &str) -> Result<String, ApiError> {
    match text.trim() {
        "" => Err(ApiError::bad_request(format!("reason is empty: say why {why}"))),
        reason => Ok(reason.to_string()),
    }
}

/// What asking for an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Every check passed and the apply runs in the console (`resumed`: it
    /// goes on with a run an earlier apply left open).
    Running { resumed: bool },
    /// The plan's replay was applied already; nothing was started.
    AlreadyDone,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

struct Inner {
    pool: PgPool,
    endpoints: Endpoints,
    settings: Settings,
    /// Cancelled when the console stops: running applies stop between chunks.
    shutdown: CancellationToken,
    /// The applies started over the API, awaited before the console exits.
    applies: TaskTracker,
    /// How each apply the console ran last ended, if not done (an
    /// interrupt, a pause, a refusal): the status report shows it.
    endings: Mutex<HashMap<PlanId, ApplyEnding>>,
    /// Plans read and checked once: a sealed plan file never changes (an
    /// edited one fails `replay apply`'s digest check, which reads it again).
    plans: Mutex<HashMap<PathBuf, Arc<SealedPlan>>>,
    /// Browser sessions and failed logins, in memory only: a restart signs
    /// everyone out, which is the safe way to forget.
    sessions: session::Sessions,
}

/// How an apply the console ran ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyEnding {
    pub finished: bool,
    /// What the CLI would have printed on stderr, if it did not finish.
    pub error: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl Console {
    pub fn new(pool: PgPool, endpoints: Endpoints, settings: Settings, shutdown: CancellationToken) -> Self {
        Self(Arc::new(Inner {
            pool,
            endpoints,
            settings,
            shutdown,
            applies: TaskTracker::new(),
            endings: Mutex::default(),
            plans: Mutex::default(),
            sessions: session::Sessions::default(),
        }))
    }

    fn pool(&self) -> &PgPool {
        &self.0.pool
    }

    fn endpoints(&self) -> &Endpoints {
        &self.0.endpoints
    }

    fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The plan at `path`, read once.
    fn plan_at(&self, path: &Path) -> Result<Arc<SealedPlan>, ApiError> {
        if let Some(plan) = lock(&self.0.plans).get(path) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(SealedPlan::open(path).map_err(|e| ApiError::refused(e.to_string()))?);
        lock(&self.0.plans).insert(path.to_path_buf(), plan.clone());
        Ok(plan)
    }

    /// The plan `plan_id` of the plan directory (its file ends in the id).
    fn plan(&self, plan_id: PlanId) -> Result<Arc<SealedPlan>, ApiError> {
        let suffix = format!("-{plan_id}.jsonl");
        let found = self.plan_files()?.into_iter().find(|p| p.to_string_lossy().ends_with(&suffix));
        match found {
            Some(path) => self.plan_at(&path),
            None => Err(ApiError::not_found(format!(
                "no plan {plan_id} in {}: GET /api/v1/plans lists the plans",
                self.settings().plan_dir.display()
            ))),
        }
    }

    /// Every readable plan of the plan directory, newest first.
    fn plans(&self) -> Result<Vec<Arc<SealedPlan>>, ApiError> {
        let mut plans: Vec<_> = self.plan_files()?.iter().filter_map(|p| self.plan_at(p).ok()).collect();
        plans.sort_by_key(|p| std::cmp::Reverse(p.header.created_at));
        Ok(plans)
    }

    fn plan_files(&self) -> Result<Vec<PathBuf>, ApiError> {
        let dir = &self.settings().plan_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow::anyhow!("reading the plan directory {}: {e}", dir.display()).into()),
        };
        Ok(entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect())
    }

    /// `replay apply` of `plan_id` for `operator`: the two-person rule's
    /// check when it is on, then every check of `replay apply` (a refusal
    /// is the error and changes nothing), then the apply in a task of the
    /// console. The API and the plan page both ask through here.
    async fn apply_plan(
        &self,
        plan_id: PlanId,
        operator: &str,
        rate: Option<u32>,
        allow_external_effects: bool,
        canary: Option<apply::Canary>,
    ) -> Result<Started, ApiError> {
        if rate == Some(0) {
            return Err(ApiError::bad_request("rate must be at least 1 event per second"));
        }
        let plan = self.plan(plan_id)?;
        if self.settings().require_approval {
            approvals::check(self.pool(), &plan, operator).await?;
        }
        let request = apply::Request {
            operator: operator.to_string(),
            allow_external_effects,
            backup: BackupSource::Fresh { dir: self.settings().backup_dir.clone() },
            rate,
            canary,
            require_rehearsal: self.settings().require_rehearsal,
        };
        let checked = apply::check(self.pool(), &plan.path, &request).await?;
        if checked.is_done() {
            return Ok(Started::AlreadyDone);
        }
        let resumed = checked.run.is_some();
        self.start_apply(checked, request);
        Ok(Started::Running { resumed })
    }

    /// Runs a checked apply in a task of the console; its ending is kept.
    fn start_apply(&self, checked: Checked, request: Request) {
        let console = self.clone();
        let plan_id = checked.plan.header.plan_id;
        lock(&self.0.endings).remove(&plan_id);
        let (notifier, applied) =
            (Notifier::new(self.settings().notify.clone()), AppliedPlan::of(&checked.plan, &request.operator));
        self.0.applies.spawn(async move {
            let inner = &console.0;
            notifier.send(applied.started());
            let outcome =
                apply::execute(&inner.pool, &inner.endpoints, checked, &request, &inner.shutdown, |_| {}).await;
            notifier.send(applied.ended(&outcome));
            let error = outcome.err().map(|e| crate::exit::render(&anyhow::Error::from(e)));
            match &error {
                None => tracing::info!(plan = %plan_id, operator = %request.operator, "console apply finished"),
                Some(error) => tracing::warn!(plan = %plan_id, error = %error, "console apply stopped"),
            }
            let ending = ApplyEnding { finished: error.is_none(), error, at: chrono::Utc::now() };
            lock(&inner.endings).insert(plan_id, ending);
            notifier.close().await;
        });
    }

    /// How the console's last apply of `plan_id` ended, if it ran one.
    fn apply_ended(&self, plan_id: PlanId) -> Option<ApplyEnding> {
        lock(&self.0.endings).get(&plan_id).cloned()
    }
}

/// A mutex of plain maps: a panic while it was held left nothing half-done
/// that matters, so a poisoned lock is taken as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every route of the console.
pub fn router(console: Console) -> Router {
    Router::new().nest("/api/v1", api::routes()).merge(session::routes()).merge(pages::routes()).with_state(console)
}

/// Serves until `shutdown` is cancelled, then waits for the applies it
/// started to stop at their next chunk. Each request knows its peer's
/// address, which failed logins are counted by.
pub async fn serve(listener: TcpListener, console: Console) -> std::io::Result<()> {
    let shutdown = console.0.shutdown.clone();
    let app = router(console.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    // Requests in flight get SHUTDOWN_GRACE to finish; a client holding a
    // connection open (keep-alive, an event stream) does not keep the
    // console running past it.
    let served = tokio::select! {
        served = served => served,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace: closing them");
            Ok(())
        }
    };
    console.0.applies.close();
    console.0.applies.wait().await;
    served
}

/// The canary policy asked for, checked as `replay apply` checks its flags;
/// the API and the plan page's form both ask through here.
pub(crate) fn canary_of(
    events: Option<u64>,
    max_failure_rate: Option<f64>,
    wait: Option<&str>,
) -> Result<Option<apply::Canary>, ApiError> {
    let Some(events) = events else {
        return match (max_failure_rate, wait) {
            (None, None) => Ok(None),
            _ => Err(ApiError::bad_request(
                "max_failure_rate and canary_wait need canary (e.g. \"canary\": 10): nothing was applied",
            )),
        };
    };
    let wait = match wait {
        None => apply::DEFAULT_CANARY_WAIT,
        Some(text) => humantime::parse_duration(text.trim()).map_err(|_| {
            ApiError::bad_request(format!(
                "canary_wait '{text}' is not a duration (e.g. 90s or 5m): nothing was applied"
            ))
        })?,
    };
    apply::Canary::new(events, max_failure_rate.unwrap_or(0.0), wait).map(Some).map_err(ApiError::bad_request)
}
