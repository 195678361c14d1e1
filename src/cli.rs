//! The command line, as clap types. Parsing only: each subcommand's work
//! lives in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Endpoints, SecretUrl};

#[derive(Debug, Parser)]
#[command(name = "replay", version, about = "Event-sourcing replay engine for RabbitMQ and Postgres")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Postgres URL of the ledger and domain tables.
    #[arg(long, env = "DATABASE_URL", default_value = config::DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub database_url: String,
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = config::DEFAULT_AMQP_URL, global = true, hide_env_values = true, hide_default_value = true)]
    pub amqp_url: String,
    /// Topic exchange the events travel on.
    #[arg(long, env = "REPLAY_EXCHANGE", default_value = config::DEFAULT_EXCHANGE, global = true)]
    pub exchange: String,
    /// Durable queue the workers consume.
    #[arg(long, env = "REPLAY_QUEUE", default_value = config::DEFAULT_QUEUE, global = true)]
    pub queue: String,
    /// Partitions the stream is spread over, by the `x-partition-key` header
    /// (1..=64; the same for every process of the system, which each checks:
    /// changed only by `replay topology repartition`, offline).
    #[arg(long, env = "REPLAY_PARTITIONS", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(config::MAX_PARTITIONS)))]
    pub partitions: u16,
}

impl Global {
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            database_url: SecretUrl::new(&self.database_url),
            amqp_url: SecretUrl::new(&self.amqp_url),
            exchange: self.exchange.clone(),
            queue: self.queue.clone(),
            partitions: self.partitions,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded database migrations.
    Migrate,
    /// Publish events to the exchange, with publisher confirms.
    Publish(PublishArgs),
    /// Consume events and claim due ledger rows until stopped (SIGTERM, Ctrl-C).
    Worker(WorkerArgs),
    /// Measure against a raw baseline in the same run: the worker (default), apply, or plan.
    Bench(BenchArgs),
    /// Select ledger rows to replay and write a sealed plan file to read before applying.
    Plan(Box<PlanArgs>),
    /// Take a checked pg_dump of the domain and the ledger (not the control plane).
    Backup(BackupArgs),
    /// Apply a plan: check it, back up, reset its rows (audited) and republish them.
    Apply(Box<ApplyArgs>),
    /// Rehearse a plan on a scratch copy of the database: what it would change, table by table (production untouched).
    Rehearse(RehearseArgs),
    /// Where a plan's replay stands, or the ledger and queue as a whole.
    Status(StatusArgs),
    /// Show the broker topology against the ordered one, or migrate to it.
    Topology(TopologyArgs),
    /// Read ledger rows.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Pause every worker, on every host, and wait until they stopped taking work.
    Pause(PauseArgs),
    /// Lift the pause: workers take work again within a second.
    Resume(ResumeArgs),
    /// Pause every worker, purge the replay's messages, restore the pre-replay backup; keep everything else.
    EmergencyStop(EmergencyStopArgs),
    /// Inspect the append-only audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Maintain the ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The dead-letter view: failed events and unreadable messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Tokens of the console and its HTTP API, by name and role.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the web console and the JSON API (/api/v1/) until stopped.
    Console(ConsoleArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it once; only its SHA-256 is stored (audited).
    Create {
        /// What the audit log records as the operator of every write made with it.
        #[arg(long)]
        name: String,
        /// viewer reads; operator also plans, applies, resolves, pauses and resumes; admin also stops, prunes and manages tokens.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// Who makes it (default: the OS user).
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every token: name, role, who made it, whether revoked. Never a token.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once (audited); its name is never reused.
    Revoke {
        name: String,
        #[arg(long)]
        operator: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to listen. Loopback unless told otherwise: put a TLS reverse proxy in front to serve others (README).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Where plans made from the console are written and looked up.
    #[arg(long, default_value = "replay-plans")]
    pub plan_dir: PathBuf,
    /// Where the pre-replay backups of applies started from the console go.
    #[arg(long, default_value = "backups")]
    pub backup_dir: PathBuf,
    /// The console is served behind TLS (a reverse proxy): mark session cookies `Secure`.
    #[arg(long)]
    pub secure_cookies: bool,
    /// The two-person rule: a plan is applied from the console only after an operator other than its maker approved it.
    #[arg(long)]
    pub require_approval: bool,
    /// Apply from the console only plans rehearsed (`replay rehearse`) on the data as it is now.
    #[arg(long)]
    pub require_rehearsal: bool,
    /// POST a JSON event to this webhook (http://host[:port]/path) when the console applies a plan, and when it halts or finishes; never fails an apply.
    #[arg(long, value_name = "URL", env = "REPLAY_NOTIFY_URL", hide_env_values = true, value_parser = crate::control::notify::parse_url)]
    pub notify: Option<url::Url>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Failed events (ledger rows in `error`) and dead-lettered messages, not resolved, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One entry: an event id, or `dl-N` for a dead-lettered message.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Counts by type and by error over the last N hours, with first and last seen.
    Report {
        #[arg(long, default_value_t = 24)]
        hours: i64,
        #[arg(long)]
        json: bool,
    },
    /// Mark an entry resolved (audited): it leaves the DLQ view. Reprocess with `replay plan --status error` instead.
    Resolve {
        id: String,
        /// What was done about it.
        #[arg(long)]
        note: String,
        /// Who resolves it (default: the OS user).
        #[arg(long)]
        operator: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Delete processed rows older than a duration, in bounded batches (audited).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete `processed` rows processed longer ago than this (e.g. 90d, 12h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// Rows deleted per statement, so no lock is held long.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch: i64,
    /// Delete without asking (required when there is no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    /// Who prunes, for the audit log (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsListArgs {
    /// Only rows in this status (repeatable).
    #[arg(long = "status")]
    pub statuses: Vec<String>,
    /// Only this event type (repeatable).
    #[arg(long = "type")]
    pub event_types: Vec<String>,
    /// Only rows the ledger received within this long (e.g. 1h, 30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only rows whose top-level payload field KEY equals VALUE (repeatable).
    #[arg(long = "payload", value_name = "KEY=VALUE")]
    pub payload: Vec<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print them as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RehearseArgs {
    /// The plan file `replay plan` wrote.
    pub plan: PathBuf,
    /// Keep the scratch database (replay_rehearsal_<hex>) for inspection; drop it by hand when done.
    #[arg(long)]
    pub keep: bool,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Who rehearses (recorded in the scratch database's replay history); the OS user by default.
    #[arg(long)]
    pub operator: Option<String>,
    /// Make the scratch database on this Postgres server instead of production's (a URL of a database there to connect to, e.g. postgres://user@staging:5432/postgres).
    #[arg(long, value_name = "URL", env = "REPLAY_REHEARSAL_URL", hide_env_values = true)]
    pub rehearsal_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file `replay plan` wrote.
    pub plan: PathBuf,
    /// Apply without asking (required when there is no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    /// Run every check and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow replaying events whose handlers reach outside the database.
    #[arg(long)]
    pub allow_external_effects: bool,
    /// Use this pg_dump instead of taking a fresh one (it must be younger than --backup-max-age).
    #[arg(long)]
    pub backup: Option<PathBuf>,
    /// Oldest a --backup may be.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub backup_max_age: Duration,
    /// Directory for the fresh backup.
    #[arg(long, default_value = "backups")]
    pub backup_dir: PathBuf,
    /// Republish at most N events per second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Publish the first N events, wait until they are settled, and go on only if few enough failed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub canary: Option<u64>,
    /// Highest share (0 to 1) of failures the canary and the rest may have; above it the apply halts (exit 4).
    #[arg(long, value_name = "R", default_value = "0", requires = "canary", value_parser = crate::replay::apply::parse_failure_rate)]
    pub max_failure_rate: f64,
    /// Longest wait for the canary's events to be settled before halting.
    #[arg(long, default_value = "60s", requires = "canary", value_parser = humantime::parse_duration)]
    pub canary_wait: Duration,
    /// Refuse (exit 3) unless the plan was rehearsed (`replay rehearse`) on the data as it is now.
    #[arg(long)]
    pub require_rehearsal: bool,
    /// Who applies it, for the audit log (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// POST a JSON event to this webhook (http://host[:port]/path) when the plan is applied, halted or finished; never fails the apply.
    #[arg(long, value_name = "URL", env = "REPLAY_NOTIFY_URL", hide_env_values = true, value_parser = crate::control::notify::parse_url)]
    pub notify: Option<url::Url>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why; recorded in the pause and the audit log.
    #[arg(long)]
    pub reason: String,
    /// Who pauses (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// Longest wait for every live worker to report paused.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("restore").required(true).args(["plan", "backup", "no_restore"]))]
pub struct EmergencyStopArgs {
    /// Why; recorded in the pause, the audit log and the incident report.
    #[arg(long)]
    pub reason: String,
    /// The plan being applied: purge its messages and restore its pre-replay backup.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Restore this dump instead (every replay's messages are purged).
    #[arg(long)]
    pub backup: Option<PathBuf>,
    /// Pause and purge only; restore nothing.
    #[arg(long)]
    pub no_restore: bool,
    /// Do it without asking (required when there is no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    /// Who stops (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// Longest wait for the workers to report paused and release the queue.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Where the incident report goes (default: next to the backup when its directory exists, else backups/).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// POST a JSON event to this webhook (http://host[:port]/path) when the stop ends; never fails the stop.
    #[arg(long, value_name = "URL", env = "REPLAY_NOTIFY_URL", hide_env_values = true, value_parser = crate::control::notify::parse_url)]
    pub notify: Option<url::Url>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Why; recorded in the audit log.
    #[arg(long)]
    pub reason: String,
    /// Who resumes (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A plan file: show its replay's progress.
    pub plan: Option<PathBuf>,
    /// Redraw until the replay is finished (or Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Ledger rows, newest first.
    List(EventsListArgs),
    /// Every field of one ledger row, its payload, and its replay history.
    Show {
        event_id: String,
        /// Print it as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write the dump here instead of a timestamped file in --dir.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory for timestamped dumps.
    #[arg(long, default_value = "backups")]
    pub dir: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopologyArgs {
    #[command(subcommand)]
    pub action: Option<TopologyAction>,
    /// Print JSON instead of a report.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopologyAction {
    /// Move a queue declared before ordered consumption (a classic queue) to
    /// the ordered quorum queue, losing and reordering nothing. Refused while
    /// anything consumes it.
    Migrate,
    /// Change how many partitions the stream is spread over, for every
    /// process: checked and offline (workers paused then stopped, partition
    /// queues drained, no pending row), audited. Start everything with the
    /// new count afterwards.
    Repartition(RepartitionArgs),
}

#[derive(Debug, Args)]
pub struct RepartitionArgs {
    /// The new partition count.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(config::MAX_PARTITIONS)))]
    pub to: u16,
    /// Why; recorded in the audit log.
    #[arg(long)]
    pub reason: String,
    /// Who (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of every audit entry; exit 3 if it is broken.
    Verify,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Select this event id (repeatable).
    #[arg(long = "event-id")]
    pub event_ids: Vec<String>,
    /// Select this event type (repeatable).
    #[arg(long = "type")]
    pub event_types: Vec<String>,
    /// Events that occurred at or after this time (RFC 3339 or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Events that occurred before this time; a plain date includes that day.
    #[arg(long)]
    pub to: Option<String>,
    /// Rows processed at or after this time (RFC 3339 or a date).
    #[arg(long)]
    pub processed_from: Option<String>,
    /// Rows processed before this time; a plain date includes that day.
    #[arg(long)]
    pub processed_to: Option<String>,
    /// Select rows in this status (repeatable): pending, processing, processed, error, skipped.
    #[arg(long = "status")]
    pub statuses: Vec<String>,
    /// Select rows whose top-level payload field KEY equals VALUE (repeatable).
    #[arg(long = "payload", value_name = "KEY=VALUE")]
    pub payload: Vec<String>,
    /// Select at most N rows (oldest first).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Select every row of the ledger (needed when no other selector is given).
    #[arg(long)]
    pub all: bool,
    /// A named replay: period-close (--period ID|latest-closed) or member-allocations (--member ID --period ID).
    #[arg(long)]
    pub workflow: Option<String>,
    /// The workflow's period: an id, or latest-closed.
    #[arg(long, requires = "workflow")]
    pub period: Option<String>,
    /// The workflow's member id.
    #[arg(long, requires = "workflow")]
    pub member: Option<String>,
    /// Why this replay is needed; recorded in the plan and the audit log.
    #[arg(long)]
    pub reason: String,
    /// Treat rows as new, skipping idempotency. Dangerous: effects may apply twice.
    #[arg(long)]
    pub force: bool,
    /// Who plans it (default: the OS user).
    #[arg(long)]
    pub operator: Option<String>,
    /// Republish rate the duration estimate assumes, events per second.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Directory the plan file is written to.
    #[arg(long, default_value = "replay-plans")]
    pub out_dir: PathBuf,
    /// Publish to one subscriber's queue (queue:NAME) instead of our workers; nothing in this database is reset.
    #[arg(long, value_name = "queue:NAME")]
    pub destination: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["event_type", "file"]))]
pub struct PublishArgs {
    /// Event type (also the routing key), e.g. contribution.submitted.
    #[arg(long = "type", requires = "payload")]
    pub event_type: Option<String>,
    /// The event's payload, a JSON object.
    #[arg(long)]
    pub payload: Option<String>,
    /// The event's id (default: a new UUID).
    #[arg(long, requires = "event_type")]
    pub event_id: Option<String>,
    /// When the event happened, RFC 3339 (default: now).
    #[arg(long, requires = "event_type")]
    pub occurred_at: Option<String>,
    /// A JSON Lines file, one {"event_id","event_type","occurred_at","payload"} per line.
    #[arg(long, conflicts_with_all = ["event_type", "payload"])]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Name of this worker in the ledger and the logs (default: host-pid).
    #[arg(long)]
    pub id: Option<String>,
    /// Address of the health endpoint, or `off`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http: HttpListen,
    /// Attempts before an event is left in `error`.
    #[arg(long, env = "REPLAY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Delay before the first retry, doubled on each further one (e.g. 1s, 500ms).
    #[arg(long, env = "REPLAY_RETRY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Unacked messages the broker may hand this worker at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Most events committed in one transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// How long a claimed ledger row stays this worker's before others may reclaim it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// How often to look for due ledger rows when no notification arrives.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Longest a batch may take against the database (a hung backend) before it is abandoned and retried.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub batch_timeout: Duration,
    /// Largest message body accepted as an event, in bytes; larger ones are dead-lettered.
    #[arg(long, default_value_t = crate::wire::envelope::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
}

/// `--http ADDR` or `--http off`.
#[derive(Debug, Clone, Copy)]
pub enum HttpListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse().map(Self::On).map_err(|_| format!("'{s}' is not an address like 127.0.0.1:9464, nor `off`"))
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = BenchScenario::Worker)]
    pub scenario: BenchScenario,
    /// Events per measured run (worker, apply, rehearse).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Ledger rows to plan over (plan) or to list (console).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Messages to queue for `stop`: time `emergency-stop --no-restore` taking
    /// them (and some replay's) against a raw consume, instead of the restore
    /// (default 300,000 when given without a number).
    #[arg(long, num_args = 0..=1, default_missing_value = "300000")]
    pub queued: Option<usize>,
    /// Keep the scratch database afterwards, for inspection.
    #[arg(long)]
    pub keep: bool,
    /// An earlier `replay` binary (before ordered consumption) to measure in
    /// the same run, on the classic queue it declares (worker).
    #[arg(long)]
    pub previous_exe: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchScenario {
    /// The worker's drain against consume -> batched INSERT -> ack.
    Worker,
    /// `replay apply` (backup included) with two workers, to the last confirm and to the last row processed, against a raw publish-with-confirms loop; pause latency during the apply and idle; the runbook's loop.
    Apply,
    /// `replay plan` over a large ledger against a raw streamed read of the same rows.
    Plan,
    /// `replay emergency-stop` (two workers running) against a plain pg_restore of the same dump; --events ledger rows.
    /// With --queued N: `emergency-stop --no-restore` over N queued messages against a raw consume.
    Stop,
    /// The console's events API with each filter on a --rows ledger against the same query read directly.
    Console,
    /// `replay rehearse` of a --events-row plan against `replay apply` of the same plan, to its last row processed.
    Rehearse,
    /// The stream over 1, 2 and 4 partitions, a worker leading each, against a raw consumer per partition queue;
    /// the broker needs the consistent-hash exchange plugin.
    Partitions,
}
