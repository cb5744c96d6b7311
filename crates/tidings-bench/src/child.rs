//! The Tidings under test: a `tidings serve` child process with a fresh store (or several on
//! one PostgreSQL database), and what `/proc` says about their CPU time and memory while they
//! run.
//!
//! Every run gets its own SQLite file or PostgreSQL database, dropped afterwards, so runs
//! never see each other's rows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Which store the child runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// How to start the child.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    pub bin: PathBuf,
    pub store: StoreKind,
    /// A server URL (no database name) where fresh databases can be created.
    pub postgres_url: String,
    /// The child's own directory: its log, and its SQLite file.
    pub dir: PathBuf,
    /// The key that seals signing secrets (made by the first start): one for every instance
    /// on a database, since each unseals the secrets the others sealed.
    pub secret_key_file: PathBuf,
    pub ca_file: PathBuf,
    pub retry_schedule: String,
    pub max_in_flight: usize,
    pub per_destination: usize,
    pub rust_log: String,
    /// TIDINGS_RETENTION for the child (its default when `None`).
    pub retention: Option<String>,
}

pub const ADMIN_KEY: &str = "tidings-bench-operator-key";

pub struct Tidings {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    /// The PostgreSQL database to drop at the end.
    database: Option<String>,
    database_url: String,
    cfg: ChildConfig,
    postgres_url: String,
    pub sampler: Arc<ProcSampler>,
    sampler_task: tokio::task::JoinHandle<()>,
}

impl Tidings {
    pub async fn start(cfg: &ChildConfig, name: &str) -> anyhow::Result<Tidings> {
        std::fs::create_dir_all(&cfg.dir)?;
        let (database_url, database) = match cfg.store {
            StoreKind::Sqlite => (
                format!("sqlite://{}", cfg.dir.join("tidings.db").display()),
                None,
            ),
            StoreKind::Postgres => {
                let db = format!("tidings_bench_{}_{}", name, std::process::id());
                let mut conn = sqlx::PgConnection::connect(&cfg.postgres_url)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {}", cfg.postgres_url))?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
                    .execute(&mut conn)
                    .await?;
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut conn)
                    .await?;
                (with_database(&cfg.postgres_url, &db), Some(db))
            }
        };
        let mut t = Tidings::spawn(cfg, &database_url).await?;
        t.database = database;
        Ok(t)
    }

    /// Starts `tidings serve` on an existing store and waits until it listens.
    async fn spawn(cfg: &ChildConfig, database_url: &str) -> anyhow::Result<Tidings> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cfg.dir.join("tidings.log"))?;
        let mut child = Command::new(&cfg.bin)
            .arg("serve")
            .env("TIDINGS_LISTEN", "127.0.0.1:0")
            .env("TIDINGS_DATABASE_URL", database_url)
            .env("TIDINGS_SECRET_KEY_FILE", &cfg.secret_key_file)
            .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
            .env("TIDINGS_SSRF_ALLOW", "127.0.0.1/32")
            .env("TIDINGS_CA_FILE", &cfg.ca_file)
            .env("TIDINGS_RETRY_SCHEDULE", &cfg.retry_schedule)
            .env("TIDINGS_MAX_IN_FLIGHT", cfg.max_in_flight.to_string())
            .env("TIDINGS_PER_DESTINATION", cfg.per_destination.to_string())
            .env("RUST_LOG", &cfg.rust_log)
            .envs(
                cfg.retention
                    .iter()
                    .map(|r| ("TIDINGS_RETENTION", r.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", cfg.bin.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("tidings listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!(
                "tidings exited before listening; see {}",
                cfg.dir.join("tidings.log").display()
            )
        })
        .await
        .context("tidings did not say it was listening within 60 s")??;
        // Keep draining stdout (where Tidings logs) into the run's log, so the child never
        // blocks on a full pipe and its log is there to read after the run.
        let mut out = std::fs::OpenOptions::new()
            .append(true)
            .open(cfg.dir.join("tidings.log"))?;
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(out, "{line}");
            }
        });
        let sampler = Arc::new(ProcSampler::new(pid));
        let sampler_task = tokio::spawn(sampler.clone().run(Duration::from_millis(250)));
        Ok(Tidings {
            child,
            pid,
            base_url: ready,
            database: None,
            database_url: database_url.to_owned(),
            cfg: cfg.clone(),
            postgres_url: cfg.postgres_url.clone(),
            sampler,
            sampler_task,
        })
    }

    /// SIGTERM, then SIGKILL after 10 s.
    async fn terminate(&mut self) {
        self.sampler_task.abort();
        // The child is not reaped before `wait` below, so its pid is still its own.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Stops the child (SIGTERM, then SIGKILL after 10 s) and drops its database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.terminate().await;
        if let Some(db) = self.database.take() {
            let mut conn = sqlx::PgConnection::connect(&self.postgres_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// The Tidings under test: one `tidings serve`, or several sharing one PostgreSQL database,
/// each with its own API port, directory and log.
pub struct Instances {
    /// Never empty; the first made the database, and drops it at the end.
    all: Vec<Tidings>,
}

impl Instances {
    /// Starts `n` instances: the first on a fresh store (it creates and migrates it), the
    /// others once it is up, on the same store. With more than one, each gets a directory
    /// `instance-{i}` in `cfg.dir`.
    pub async fn start(cfg: &ChildConfig, name: &str, n: usize) -> anyhow::Result<Instances> {
        let n = n.max(1);
        let first = Tidings::start(&instance_config(cfg, 0, n), name).await?;
        let database_url = first.database_url.clone();
        let mut instances = Instances { all: vec![first] };
        for i in 1..n {
            let cfg = instance_config(cfg, i, n);
            std::fs::create_dir_all(&cfg.dir)?;
            match Tidings::spawn(&cfg, &database_url).await {
                Ok(t) => instances.all.push(t),
                Err(e) => {
                    let _ = instances.stop().await;
                    return Err(e.context(format!("starting instance {i} of {n}")));
                }
            }
        }
        Ok(instances)
    }

    /// How many instances run.
    pub fn count(&self) -> usize {
        self.all.len()
    }

    /// The first instance: the one that made the store.
    pub fn first(&self) -> &Tidings {
        &self.all[0]
    }

    pub fn base_urls(&self) -> Vec<String> {
        self.all.iter().map(|t| t.base_url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.all.iter().map(|t| t.pid).collect()
    }

    pub fn samplers(&self) -> Vec<Arc<ProcSampler>> {
        self.all.iter().map(|t| t.sampler.clone()).collect()
    }

    /// Stops every instance, keeping the store, until [`Instances::resume`].
    pub async fn pause(&mut self) {
        for t in &mut self.all {
            t.terminate().await;
        }
    }

    /// Starts every instance again on the same store, all at once, so that none has a head
    /// start on what is due; returns once each listens.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let mut starting = tokio::task::JoinSet::new();
        for (i, t) in self.all.iter().enumerate() {
            let (cfg, url) = (t.cfg.clone(), t.database_url.clone());
            starting.spawn(async move { (i, Tidings::spawn(&cfg, &url).await) });
        }
        while let Some(started) = starting.join_next().await {
            let (i, next) = started?;
            let mut next = next.with_context(|| format!("restarting instance {i}"))?;
            next.database = self.all[i].database.take();
            self.all[i] = next;
        }
        Ok(())
    }

    /// Stops every instance, the first last: it drops the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        for t in self.all.into_iter().rev() {
            t.stop().await?;
        }
        Ok(())
    }
}

/// Instance `i` of `n`: its own directory when there are several.
fn instance_config(cfg: &ChildConfig, i: usize, n: usize) -> ChildConfig {
    let mut cfg = cfg.clone();
    if n > 1 {
        cfg.dir = cfg.dir.join(format!("instance-{i}"));
    }
    cfg
}

/// `postgres://u@h:p/x?o` with the database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One reading of `/proc/PID`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcReading {
    pub at: Option<Instant>,
    /// utime + stime, seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Peak RSS since the process started (VmHWM).
    pub hwm_bytes: u64,
    /// Context switches of all its threads so far (voluntary + involuntary).
    pub context_switches: u64,
    pub threads: u64,
}

/// Samples a process's CPU time and memory on an interval; phases read the peaks between
/// two marks.
pub struct ProcSampler {
    pid: u32,
    state: Mutex<SamplerState>,
}

#[derive(Default)]
struct SamplerState {
    last: ProcReading,
    /// Largest RSS since the last `reset_peak`.
    peak_rss: u64,
    /// Largest CPU use over one interval since the last `reset_peak`, in cores.
    peak_cores: f64,
}

impl ProcSampler {
    pub fn new(pid: u32) -> Self {
        ProcSampler {
            pid,
            state: Mutex::new(SamplerState::default()),
        }
    }

    pub fn read(&self) -> ProcReading {
        read_proc(self.pid).unwrap_or_default()
    }

    async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(r) = read_proc(self.pid) else { return };
            let mut s = self.state.lock().unwrap();
            if let (Some(prev), Some(now)) = (s.last.at, r.at) {
                let wall = now.duration_since(prev).as_secs_f64();
                if wall > 0.0 {
                    let cores = (r.cpu_seconds - s.last.cpu_seconds) / wall;
                    s.peak_cores = s.peak_cores.max(cores);
                }
            }
            s.peak_rss = s.peak_rss.max(r.rss_bytes);
            s.last = r;
        }
    }

    /// Starts a new peak window; returns the current reading.
    pub fn mark(&self) -> ProcReading {
        let r = self.read();
        let mut s = self.state.lock().unwrap();
        s.peak_rss = r.rss_bytes;
        s.peak_cores = 0.0;
        r
    }

    /// Peak RSS and peak cores since the last mark.
    pub fn peaks(&self) -> (u64, f64) {
        let r = self.read();
        let s = self.state.lock().unwrap();
        (s.peak_rss.max(r.rss_bytes), s.peak_cores)
    }
}

fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

pub fn read_proc(pid: u32) -> Option<ProcReading> {
    read_proc_at(&PathBuf::from(format!("/proc/{pid}")))
}

/// Busy and total CPU seconds of the whole machine so far (all processes, all cores), from
/// `/proc/stat`: what Tidings, this process, PostgreSQL and anything else used together.
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clock_ticks(), total / clock_ticks())
}

/// CPU seconds used so far by every process whose command name is `comm` (e.g. the
/// `postgres` server and its backends), exited ones not included.
pub fn processes_cpu(comm: &str) -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != comm {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (ticks(11) + ticks(12)) / clock_ticks();
    }
    total
}

pub fn read_self() -> ProcReading {
    read_proc_at(Path::new("/proc/self")).unwrap_or_default()
}

fn read_proc_at(dir: &Path) -> Option<ProcReading> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let mut context_switches = 0;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
        for task in tasks.flatten() {
            threads += 1;
            let Ok(st) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
                context_switches += st
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some(ProcReading {
        at: Some(at),
        cpu_seconds: ticks / clock_ticks(),
        rss_bytes: kib("VmRSS:"),
        hwm_bytes: kib("VmHWM:"),
        context_switches,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/x", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://h/x?sslmode=disable", "b"),
            "postgres://h/b?sslmode=disable"
        );
    }

    #[test]
    fn several_instances_have_a_directory_each_and_one_key() {
        let cfg = ChildConfig {
            bin: PathBuf::from("tidings"),
            store: StoreKind::Postgres,
            postgres_url: "postgres://postgres@127.0.0.1:5432".into(),
            dir: PathBuf::from("/runs/b-postgres"),
            secret_key_file: PathBuf::from("/runs/b-postgres/tidings.key"),
            ca_file: PathBuf::from("/runs/b-postgres/sink-ca.pem"),
            retry_schedule: "1s".into(),
            max_in_flight: 512,
            per_destination: 32,
            rust_log: "info".into(),
            retention: None,
        };
        assert_eq!(instance_config(&cfg, 0, 1).dir, cfg.dir, "one: the run's");
        let second = instance_config(&cfg, 1, 2);
        assert_eq!(second.dir, PathBuf::from("/runs/b-postgres/instance-1"));
        assert_eq!(second.secret_key_file, cfg.secret_key_file);
        assert_eq!(
            instance_config(&cfg, 0, 2).dir,
            PathBuf::from("/runs/b-postgres/instance-0")
        );
    }

    #[test]
    fn reads_this_process() {
        let r = read_self();
        assert!(r.rss_bytes > 0 && r.hwm_bytes >= r.rss_bytes);
    }
}
