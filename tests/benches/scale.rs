//! Scale benchmark (a bench binary that prints its figures and PASS/FAIL).
//!
//! One [`Lifecycle`] with the [`LocalOrchestrator`] runs N real test MCP
//! servers (the `mcp-test-server` fixture) over stdio, each probed with the
//! default health settings (`tools/list` every 30 s), the default restart
//! backoff (10 s doubling) and every other setting at its default. It prints:
//!
//! 1. the time from the first `apply` to all N Ready (goal: ≤ 60 s at N = 1000);
//! 2. the host process's CPU time per probe and in percent of one core over a
//!    steady window, counted by a wrapper around the default [`McpProber`]
//!    (goal: < 10 % of one core);
//! 3. the host's resident memory per managed server (host RSS after all Ready
//!    minus before the first apply, over N; goal: < 64 KiB), and the
//!    servers' own memory (separate processes, not counted in the goal);
//! 4. the time from SIGKILLing 10 % of the servers' processes to all Ready
//!    again, split into detection, the restart backoff and restart to Ready
//!    (goal: the 10 s backoff plus at most 6 s, the start goal scaled to 10 %);
//! 5. the processes left after `Lifecycle::shutdown` (goal: none).
//!
//! The soft limit on open files is raised to the hard limit first: each stdio
//! child holds 4 descriptors in the host (stdin, stdout and stderr pipes and a
//! pidfd).
//!
//! `cargo bench -p mcp-lifecycle-tests --bench scale`. Environment:
//! `SCALE_BENCH_SERVERS` (default 1000), `SCALE_BENCH_STEADY_SECS` (default
//! 60). A smoke run for CI: `SCALE_BENCH_SERVERS=50 SCALE_BENCH_STEADY_SECS=5`
//! (the goals are set for 1000 servers on a 2-core machine; at 50, the fixed
//! part of the host's memory makes the per-server figure look large). A goal
//! missed prints FAIL; the exit status is non-zero only when something is
//! broken: a server never Ready, a killed one never back, or a process still
//! there once the orchestrator is gone. Linux only (it reads `/proc`).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mcp_lifecycle::spec::Command;
use mcp_lifecycle::{
    InstanceId, Lifecycle, LifecycleConfig, LifecycleEventKind, LocalOrchestrator, McpProber,
    ProbeOutcome, ProbeTarget, Prober, ServerSpec, SessionPool, Source,
};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
/// Longest wait for a phase (all Ready, all Ready again) before it FAILs.
const PHASE_LIMIT: Duration = Duration::from_secs(300);
/// Share of the servers killed, in percent.
const KILL_PERCENT: usize = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The default [`McpProber`], counting the probes it runs.
struct CountingProber {
    inner: McpProber,
    liveness: AtomicU64,
    readiness: AtomicU64,
}

#[async_trait]
impl Prober for CountingProber {
    async fn probe(&self, target: ProbeTarget<'_>) -> ProbeOutcome {
        let counter = if target.readiness {
            &self.readiness
        } else {
            &self.liveness
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.probe(target).await
    }

    fn forget(&self, instance: &InstanceId) {
        self.inner.forget(instance);
    }
}

/// The host process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let to = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    to(usage.user_time()) + to(usage.system_time())
}

/// A `kB` field of a `/proc` file (`VmRSS` of `status`, `Rss`/`Pss` of
/// `smaps_rollup`), in bytes; `None` if the process is gone.
fn proc_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
}

fn host_rss() -> u64 {
    proc_kb("/proc/self/status", "VmRSS").unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// `(pid, ppid, pgid, state)` of every process, from `/proc/<pid>/stat`.
fn processes() -> Vec<(i32, i32, i32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let state = fields[0].chars().next().unwrap_or('?');
        let (Ok(ppid), Ok(pgid)) = (fields[1].parse(), fields[2].parse()) else {
            continue;
        };
        out.push((pid, ppid, pgid, state));
    }
    out
}

fn spec(name: &str) -> ServerSpec {
    ServerSpec::new(
        name,
        Source::Command(Command {
            program: SERVER.to_owned(),
            args: vec![],
            working_dir: None,
        }),
    )
}

/// The one instance of each server and its process id.
async fn pids(
    lifecycle: &Lifecycle,
    local: &LocalOrchestrator,
    names: &[String],
) -> Vec<(String, InstanceId, Option<u32>)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let status = lifecycle.status(name).await.unwrap();
        let id = status.instances[0].id.clone();
        let pid = local.pid(&id);
        out.push((name.clone(), id, pid));
    }
    out
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = env_or("SCALE_BENCH_SERVERS", 1000);
    let steady = Duration::from_secs(env_or("SCALE_BENCH_STEADY_SECS", 60));
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("scale bench: {n} test servers over stdio, {cores} cores, steady window {steady:?}");

    // File descriptors: 4 per stdio child in the host, plus the runtime's.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft_now, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let needed = 4 * n as u64 + 256;
    println!(
        "open files limit: soft {soft} -> {soft_now} (hard {hard}); about {needed} needed: {}",
        verdict(soft_now >= needed)
    );

    let config = LifecycleConfig::default();
    let backoff = config.backoff.delay_for(1);
    let local = LocalOrchestrator::new();
    // The bench counts probes; the lifecycle keeps its own session pool for
    // `peer`, which this bench does not use.
    let prober = Arc::new(CountingProber {
        inner: McpProber::new(Arc::new(SessionPool::new())),
        liveness: AtomicU64::new(0),
        readiness: AtomicU64::new(0),
    });
    let lifecycle = Lifecycle::builder()
        .orchestrator(Arc::new(local.clone()))
        .prober(prober.clone())
        .config(config)
        .build()
        .await?;
    let names: Vec<String> = (0..n).map(|i| format!("scale-{i:05}")).collect();
    let fds_before = open_fds();
    let rss_before = host_rss();

    // 1. First apply to all Ready.
    let began = Instant::now();
    for name in &names {
        lifecycle.apply(spec(name)).await?;
    }
    let applied = began.elapsed();
    let mut waits: FuturesUnordered<_> = names
        .iter()
        .map(|name| {
            let lifecycle = &lifecycle;
            async move { lifecycle.wait_ready(name, PHASE_LIMIT).await }
        })
        .collect();
    let mut ready_at = Vec::with_capacity(n);
    let mut not_ready = 0;
    while let Some(result) = waits.next().await {
        match result {
            Ok(_) => ready_at.push(began.elapsed()),
            Err(_) => not_ready += 1,
        }
    }
    drop(waits);
    let all_ready = began.elapsed();
    ready_at.sort();
    println!(
        "first apply to all ready: {:.2} s for {} of {n} (applies took {:.2} s; 50 % ready at {:.2} s, 90 % at {:.2} s) (goal <= 60 s: {})",
        all_ready.as_secs_f64(),
        ready_at.len(),
        applied.as_secs_f64(),
        percentile(&ready_at, 50).as_secs_f64(),
        percentile(&ready_at, 90).as_secs_f64(),
        verdict(not_ready == 0 && all_ready <= Duration::from_secs(60))
    );

    // 3. Memory (measured before the steady window, right after all Ready).
    let rss_after = host_rss();
    let fds_after = open_fds();
    let per_server = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    println!(
        "host memory: RSS {:.1} MiB before, {:.1} MiB with all ready: {:.1} KiB per server (goal < 64 KiB: {})",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        per_server / 1024.0,
        verdict(per_server < 64.0 * 1024.0)
    );
    println!(
        "host file descriptors: {fds_before} before, {fds_after} with all ready ({:.1} per server)",
        (fds_after - fds_before) as f64 / n as f64
    );
    let running = pids(&lifecycle, &local, &names).await;
    let (mut rss, mut pss) = (0u64, 0u64);
    for pid in running.iter().filter_map(|(_, _, pid)| *pid) {
        rss += proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Rss").unwrap_or(0);
        pss += proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss").unwrap_or(0);
    }
    println!(
        "servers' own memory (separate processes, not in the goal): RSS {:.0} MiB in total ({:.1} MiB each), PSS {:.0} MiB ({:.1} MiB each)",
        rss as f64 / 1048576.0,
        rss as f64 / 1048576.0 / n as f64,
        pss as f64 / 1048576.0,
        pss as f64 / 1048576.0 / n as f64,
    );

    // 2. A steady window: nothing but liveness probes (and the periodic
    // resync and freshness ticks, which are part of the steady cost).
    let cpu0 = cpu_time();
    let probes0 = prober.liveness.load(Ordering::Relaxed);
    let wall0 = Instant::now();
    tokio::time::sleep(steady).await;
    let wall = wall0.elapsed();
    let cpu = cpu_time() - cpu0;
    let probes = prober.liveness.load(Ordering::Relaxed) - probes0;
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    let expected = n as f64 * wall.as_secs_f64() / 30.0;
    let per_probe = match probes {
        0 => "no probe was due".to_owned(),
        _ => format!(
            "{:.0} µs per probe",
            cpu.as_secs_f64() * 1e6 / probes as f64
        ),
    };
    println!(
        "steady probing: {probes} liveness probes in {:.1} s (about {expected:.0} expected at one per server per 30 s); host CPU {:.3} s: {per_probe}, {share:.2} % of one core (goal < 10 %: {})",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        verdict(share < 10.0)
    );

    // 4. Kill 10 % of the servers' processes; time until all are Ready again.
    let step = (100 / KILL_PERCENT).max(1);
    let victims: Vec<&(String, InstanceId, Option<u32>)> = running.iter().step_by(step).collect();
    let mut events = lifecycle.subscribe();
    let killed_at = Instant::now();
    for (_, _, pid) in &victims {
        if let Some(pid) = pid {
            kill(Pid::from_raw(*pid as i32), Signal::SIGKILL)?;
        }
    }
    let victim_names: BTreeSet<&str> = victims.iter().map(|(name, _, _)| name.as_str()).collect();
    let mut failed_at: HashMap<String, Duration> = HashMap::new();
    let mut restarting_at: HashMap<String, Duration> = HashMap::new();
    let mut ready_again: HashMap<String, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while ready_again.len() < victims.len() {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => break,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(missed))) => {
                println!("warning: missed {missed} lifecycle events");
                continue;
            }
            Ok(Err(_)) => break,
            Ok(Ok(event)) => event,
        };
        if event.kind != LifecycleEventKind::InstancePhaseChanged
            || !victim_names.contains(event.server.as_str())
        {
            continue;
        }
        let at = killed_at.elapsed();
        if event.message.starts_with("failed") {
            failed_at.entry(event.server.clone()).or_insert(at);
        } else if event.message.ends_with("-> starting") {
            restarting_at.entry(event.server.clone()).or_insert(at);
        } else if event.message.ends_with("-> ready") && failed_at.contains_key(&event.server) {
            ready_again.entry(event.server.clone()).or_insert(at);
        }
    }
    let recovered = killed_at.elapsed();
    let max = |m: &HashMap<String, Duration>| m.values().max().copied().unwrap_or_default();
    let restart_to_ready = ready_again
        .iter()
        .filter_map(|(s, r)| restarting_at.get(s).map(|st| r.saturating_sub(*st)))
        .max()
        .unwrap_or_default();
    let all_back = ready_again.len() == victims.len();
    let goal = backoff + Duration::from_secs(6);
    println!(
        "killed {} of {n} servers (SIGKILL): all ready again after {:.2} s ({} of {}) = detected within {:.3} s, restarted after the {:?} backoff by {:.2} s, slowest restart to ready {:.3} s (goal <= backoff + 6 s = {:?}: {})",
        victims.len(),
        recovered.as_secs_f64(),
        ready_again.len(),
        victims.len(),
        max(&failed_at).as_secs_f64(),
        backoff,
        max(&restarting_at).as_secs_f64(),
        restart_to_ready.as_secs_f64(),
        goal,
        verdict(all_back && recovered <= goal)
    );

    // 5. Shutdown; then no process of ours may be left.
    let mut groups: BTreeSet<i32> = running
        .iter()
        .filter_map(|(_, _, pid)| pid.map(|p| p as i32))
        .collect();
    groups.extend(
        pids(&lifecycle, &local, &names)
            .await
            .iter()
            .filter_map(|(_, _, pid)| pid.map(|p| p as i32)),
    );
    let me = std::process::id() as i32;
    let before: usize = processes()
        .iter()
        .filter(|(_, ppid, pgid, _)| *ppid == me || groups.contains(pgid))
        .count();
    let stopping = Instant::now();
    lifecycle.shutdown().await?;
    let shutdown_took = stopping.elapsed();
    let ours = |procs: Vec<(i32, i32, i32, char)>| -> Vec<(i32, i32, i32, char)> {
        procs
            .into_iter()
            .filter(|(_, ppid, pgid, _)| *ppid == me || groups.contains(pgid))
            .collect()
    };
    let left = ours(processes());
    let restarted = left
        .iter()
        .filter(|(pid, ..)| !groups.contains(pid))
        .count();
    println!(
        "shutdown: {before} server processes before, shutdown took {:.2} s; {} left (children or members of their process groups, zombies included; {restarted} of them started during shutdown) (goal 0: {})",
        shutdown_took.as_secs_f64(),
        left.len(),
        verdict(left.is_empty())
    );
    // What a host that holds only the `Lifecycle` gets: the orchestrator's
    // last handle goes too, which kills every process group it still knows.
    drop(local);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left_after_drop = ours(processes());
    println!(
        "after dropping the orchestrator's last handle as well: {} left (goal 0: {})",
        left_after_drop.len(),
        verdict(left_after_drop.is_empty())
    );
    for (pid, ppid, pgid, state) in left_after_drop.iter().take(10) {
        println!("  left: pid {pid} ppid {ppid} pgid {pgid} state {state}");
    }
    Ok(())
}
