//! Runs random fault schedules of kompact-kv in the deterministic simulator and
//! checks every history for linearizability.
//!
//! ```text
//! cargo run --release -p scenarios --bin simulate -- --seeds 0..1000
//! cargo run --release -p scenarios --bin simulate -- --seed 42 --trace
//! ```
//!
//! Ends with the line `N passed, M failed`; each failing seed is listed with the
//! command that replays it. Exit status 1 if any seed failed.

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use kv_components::kv_replica::{PlantedBug, set_planted_bug};
use scenarios::scenarios::random;

/// Random fault schedules in the deterministic simulator.
#[derive(Parser, Debug)]
#[command(name = "simulate")]
struct Args {
    /// A range of seeds, `A..B` (B excluded).
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<String>,
    /// One seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the event trace (deliveries, faults, operations) of each run.
    #[arg(long)]
    trace: bool,
    /// Also print Kompact's logs at this level (error, warning, info, debug, trace).
    #[arg(long)]
    log: Option<String>,
    /// Write each run's history (JSON lines) to DIR/seed-S.jsonl.
    #[arg(long, value_name = "DIR")]
    history: Option<std::path::PathBuf>,
    /// Worker threads (each run is single-threaded; runs go in parallel).
    #[arg(long)]
    threads: Option<usize>,
    /// Plant a bug in every replica, to see the checks catch it: `local-read` or
    /// `local-delete`.
    #[arg(long)]
    plant: Option<String>,
}

/// A failing seed and what went wrong.
type Failure = (u64, Vec<String>);

fn parse_range(s: &str) -> anyhow::Result<Range<u64>> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("--seeds {s:?}: expected A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("--seeds {s:?}: bad start"))?;
    let b: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("--seeds {s:?}: bad end"))?;
    if b < a {
        bail!("--seeds {s:?}: the end is before the start");
    }
    Ok(a..b)
}

fn parse_level(s: &str) -> anyhow::Result<slog::Level> {
    s.parse::<slog::Level>()
        .map_err(|_| anyhow::anyhow!("--log {s:?}: expected error, warning, info, debug or trace"))
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("simulate: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<i32> {
    let args = Args::parse();
    let seeds = match (&args.seeds, args.seed) {
        (Some(r), _) => parse_range(r)?,
        (None, Some(s)) => s..s + 1,
        (None, None) => 0..100,
    };
    let log = args.log.as_deref().map(parse_level).transpose()?;
    let plant = match args.plant.as_deref() {
        None => None,
        Some("local-read") => Some(PlantedBug::LocalRead),
        Some("local-delete") => Some(PlantedBug::LocalDelete),
        Some(other) => bail!("--plant {other:?}: the planted bugs are local-read and local-delete"),
    };
    if let Some(dir) = &args.history {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let single = seeds.end - seeds.start == 1;
    let threads = if args.trace || single {
        1
    } else {
        args.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    };

    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(seeds.start));
    let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
    let passed = Arc::new(AtomicU64::new(0));
    let end = seeds.end;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let next = next.clone();
            let failures = failures.clone();
            let passed = passed.clone();
            let trace = args.trace;
            let history = args.history.clone();
            std::thread::spawn(move || {
                set_planted_bug(plant);
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let t = Instant::now();
                    let mut sc = random::scenario(seed).trace(trace);
                    sc.log = log;
                    let outcome = sc.run();
                    let problems = random::check(&outcome);
                    if let Some(dir) = &history {
                        let path = dir.join(format!("seed-{seed}.jsonl"));
                        if let Err(e) = std::fs::write(&path, outcome.history_jsonl()) {
                            eprintln!("cannot write {}: {e}", path.display());
                        }
                    }
                    if single || trace {
                        println!(
                            "{} (wall {:.3}s)",
                            outcome.summary(),
                            t.elapsed().as_secs_f64()
                        );
                        println!("trace hash {:016x}", outcome.hash);
                    }
                    if problems.is_empty() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("seed {seed} FAILED");
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((seed, problems));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    failures.sort_by_key(|(s, _)| *s);
    let out = std::io::stdout();
    let mut out = out.lock();
    for (seed, problems) in &failures {
        writeln!(out, "seed {seed} failed:")?;
        for p in problems {
            for line in p.lines() {
                writeln!(out, "    {line}")?;
            }
        }
        writeln!(
            out,
            "  replay: cargo run --release -p scenarios --bin simulate -- --seed {seed} --trace"
        )?;
    }
    let n = passed.load(Ordering::Relaxed);
    let m = failures.len();
    eprintln!(
        "{} seeds in {:.1}s wall",
        seeds.end - seeds.start,
        started.elapsed().as_secs_f64()
    );
    writeln!(out, "{n} passed, {m} failed")?;
    Ok(if m == 0 { 0 } else { 1 })
}
