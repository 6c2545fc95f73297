//! WAL benchmark: appends/s, MB/s and sync latency for batch sizes 1, 16,
//! 256 and payloads 64 B, 1 KiB, 16 KiB, with 1 and 8 concurrent writers,
//! for both write methods (mmap+msync, pwrite+fdatasync), next to a plain
//! pwrite-then-fdatasync loop writing the same bytes per batch into a
//! preallocated file; then recovery time per GiB.
//!
//!     cargo run --release --example bench_wal -- [--json] [--seconds S]
//!         [--dir DIR] [--method mmap|pwrite|both|pwrite,mmap] [--recovery-mib N]
//!         [--batch N] [--payload N]   (restrict to one configuration)
//!
//! Each configuration runs for a bounded time (default 2 s in total, as 20
//! slices interleaved with the baseline's and the other configurations' of
//! the same batch and payload, so that all see the same disk weather);
//! medians over the slices are reported. With both methods, each
//! configuration's pwrite/mmap throughput ratio of the same run is printed
//! too ("pwrite_vs_mmap" in the JSON).

use embraft::core::{Entry, EntryKind, Payload};
use embraft::wal::{SyncMode, Wal, WalOptions, WriteMethod};
use parking_lot::Mutex;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const PAYLOADS: [usize; 3] = [64, 1024, 16384];
const WRITER_COUNTS: [usize; 2] = [1, 8];
/// Record header bytes and commit record bytes (docs/DISK-FORMAT.md).
const RECORD_HEADER: usize = 32;
const COMMIT_RECORD: usize = 40;
/// Interleaved slices per configuration.
const ROUNDS: u32 = 20;
/// Size of the baseline's preallocated file.
const RAW_FILE_BYTES: u64 = 1 << 30;

struct Args {
    json: bool,
    seconds: f64,
    dir: PathBuf,
    methods: Vec<WriteMethod>,
    recovery_mib: u64,
    /// Restrict the run to one batch size / payload (for quick checks).
    only_batch: Option<usize>,
    only_payload: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        json: false,
        seconds: 2.0,
        dir: std::env::temp_dir().join(format!("embraft-bench-wal-{}", std::process::id())),
        methods: vec![WriteMethod::Mmap, WriteMethod::Pwrite],
        recovery_mib: 256,
        only_batch: None,
        only_payload: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--json" => args.json = true,
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--dir" => args.dir = PathBuf::from(value()?),
            "--recovery-mib" => {
                args.recovery_mib = value()?
                    .parse()
                    .map_err(|e| format!("--recovery-mib: {e}"))?
            }
            "--method" => {
                // A list runs in its order within each round, so that
                // `pwrite,mmap` shows whether going second helps or hurts.
                args.methods = Vec::new();
                for name in value()?.split(',') {
                    match name {
                        "mmap" => args.methods.push(WriteMethod::Mmap),
                        "pwrite" => args.methods.push(WriteMethod::Pwrite),
                        "both" => args
                            .methods
                            .extend([WriteMethod::Mmap, WriteMethod::Pwrite]),
                        other => return Err(format!("unknown method {other}")),
                    }
                }
            }
            "--batch" => {
                args.only_batch = Some(value()?.parse().map_err(|e| format!("--batch: {e}"))?)
            }
            "--payload" => {
                args.only_payload = Some(value()?.parse().map_err(|e| format!("--payload: {e}"))?)
            }
            "--bench" => {} // passed by `cargo bench`-style runners
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Throughput and sync latency of one configuration: the median over its
/// interleaved slices, and latency percentiles over all their samples.
#[derive(Clone, Copy, Default)]
struct Measured {
    appends_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One timed slice of a configuration.
struct Slice {
    appends: usize,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summarize(slices: Vec<Slice>) -> Measured {
    let rate = |f: &dyn Fn(&Slice) -> f64| {
        median(
            slices
                .iter()
                .map(|s| f(s) / s.elapsed.as_secs_f64())
                .collect(),
        )
    };
    let appends_per_s = rate(&|s| s.appends as f64);
    let mb_per_s = rate(&|s| s.bytes as f64 / 1e6);
    let mut latencies: Vec<Duration> = slices.into_iter().flat_map(|s| s.latencies).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Measured {
        appends_per_s,
        mb_per_s,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

/// Bytes one batch occupies in a segment (no hard state).
fn batch_bytes(batch: usize, payload: usize) -> usize {
    batch * (RECORD_HEADER + payload.div_ceil(8) * 8) + COMMIT_RECORD
}

fn fresh_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).expect("create benchmark directory");
}

/// A configuration of the WAL side.
#[derive(Clone, Copy)]
struct WalConfig {
    method: WriteMethod,
    writers: usize,
    batch: usize,
    payload: usize,
}

/// Warm-up after opening: lets the background preparation of the next
/// segment (started by open) finish, as it would long have in a running
/// node, and faults in the first pages.
const WARM_UP: Duration = Duration::from_millis(100);

/// An open WAL taking part in the interleaved measurement.
struct WalContender {
    config: WalConfig,
    wal: Wal,
    next: Mutex<u64>,
    data: Payload,
}

impl WalContender {
    fn open(dir: &Path, config: WalConfig) -> WalContender {
        fresh_dir(dir);
        let options = WalOptions {
            write_method: config.method,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir, options).expect("open WAL");
        let c = WalContender {
            config,
            wal,
            next: Mutex::new(1),
            data: vec![0xa5u8; config.payload].into(),
        };
        c.run(1, WARM_UP);
        c
    }

    /// `writers` threads append batches for `limit`: each takes the next
    /// indexes under a lock, writes, and waits for durability outside it.
    fn run(&self, writers: usize, limit: Duration) -> Slice {
        let batch = self.config.batch;
        let start = Instant::now();
        let results: Vec<Vec<Duration>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..writers)
                .map(|_| {
                    s.spawn(|| {
                        let mut latencies = Vec::new();
                        let mut entries: Vec<Entry> = (0..batch)
                            .map(|_| Entry {
                                index: 0,
                                term: 1,
                                kind: EntryKind::Normal,
                                data: self.data.clone(),
                            })
                            .collect();
                        while start.elapsed() < limit {
                            let began = Instant::now();
                            let ticket = {
                                let mut next = self.next.lock();
                                for (i, e) in entries.iter_mut().enumerate() {
                                    e.index = *next + i as u64;
                                }
                                *next += batch as u64;
                                self.wal.write(&entries, None).expect("write")
                            };
                            self.wal.wait_durable(ticket).expect("sync");
                            latencies.push(began.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("writer"))
                .collect()
        });
        let elapsed = start.elapsed();
        let latencies: Vec<Duration> = results.into_iter().flatten().collect();
        Slice {
            appends: latencies.len(),
            bytes: (latencies.len() * batch * self.config.payload) as u64,
            elapsed,
            latencies,
        }
    }
}

/// The baseline: pwrite the same bytes per batch as the WAL writes, then
/// fdatasync, into a freshly preallocated file.
struct RawContender {
    file: std::fs::File,
    offset: u64,
    buf: Vec<u8>,
    batch: usize,
    payload: usize,
}

impl RawContender {
    fn open(dir: &Path, batch: usize, payload: usize) -> RawContender {
        fresh_dir(dir);
        let path = dir.join("raw");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create raw file");
        // SAFETY: plain system call on our own descriptor.
        let rc =
            unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, RAW_FILE_BYTES as libc::off_t) };
        assert_eq!(rc, 0, "posix_fallocate failed: {rc}");
        file.sync_all().expect("fsync");
        let mut raw = RawContender {
            file,
            offset: 0,
            buf: vec![0xa5u8; batch_bytes(batch, payload)],
            batch,
            payload,
        };
        raw.run(WARM_UP);
        raw
    }

    fn run(&mut self, limit: Duration) -> Slice {
        let mut latencies = Vec::new();
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.offset + self.buf.len() as u64 > RAW_FILE_BYTES {
                self.offset = 0; // wrapped: rare, only for the largest batches
            }
            let began = Instant::now();
            self.file
                .write_all_at(&self.buf, self.offset)
                .expect("pwrite");
            self.file.sync_data().expect("fdatasync");
            latencies.push(began.elapsed());
            self.offset += self.buf.len() as u64;
        }
        Slice {
            appends: latencies.len(),
            bytes: (latencies.len() * self.batch * self.payload) as u64,
            elapsed: start.elapsed(),
            latencies,
        }
    }
}

struct Recovery {
    log_bytes: u64,
    seconds: f64,
    entries: usize,
}

/// Writes about `mib` MiB of 1 KiB entries, syncs, and times a reopen
/// (warm page cache: the files were just written).
fn run_recovery(dir: &Path, mib: u64) -> Recovery {
    fresh_dir(dir);
    let payload = 1024;
    let batch = 256;
    let options = WalOptions {
        sync: SyncMode::Never,
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(dir, options.clone()).expect("open WAL");
        let mut next = 1;
        let batches = (mib << 20) / batch_bytes(batch, payload) as u64;
        for _ in 0..batches {
            let entries: Vec<Entry> = (0..batch as u64)
                .map(|i| Entry {
                    index: next + i,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: vec![(next + i) as u8; payload].into(),
                })
                .collect();
            wal.append(&entries, None).expect("append");
            next += batch as u64;
        }
    }
    let log_bytes: u64 = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    let start = Instant::now();
    let (wal, recovered) = Wal::open(dir, options).expect("reopen");
    let seconds = start.elapsed().as_secs_f64();
    let entries = recovered.entries.len();
    drop(wal);
    fresh_dir(dir);
    Recovery {
        log_bytes,
        seconds,
        entries,
    }
}

struct Row {
    method: WriteMethod,
    writers: usize,
    batch: usize,
    payload: usize,
    wal: Measured,
    raw: Measured,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.raw.appends_per_s > 0.0 {
            self.wal.appends_per_s / self.raw.appends_per_s
        } else {
            0.0
        }
    }
}

fn method_name(m: WriteMethod) -> &'static str {
    match m {
        WriteMethod::Mmap => "mmap",
        WriteMethod::Pwrite => "pwrite",
    }
}

/// pwrite's throughput over mmap's for each configuration both ran: the two
/// were interleaved in the same run, so the ratio is free of the drift
/// between runs that comparing separate runs' figures would carry.
fn method_ratios(rows: &[Row]) -> Vec<(&Row, &Row, f64)> {
    rows.iter()
        .filter(|p| p.method == WriteMethod::Pwrite)
        .filter_map(|p| {
            let m = rows.iter().find(|m| {
                m.method == WriteMethod::Mmap
                    && (m.writers, m.batch, m.payload) == (p.writers, p.batch, p.payload)
            })?;
            let ratio = if m.wal.appends_per_s > 0.0 {
                p.wal.appends_per_s / m.wal.appends_per_s
            } else {
                0.0
            };
            Some((p, m, ratio))
        })
        .collect()
}

/// The checks the issue sets, per write method.
fn targets(rows: &[Row], method: WriteMethod) -> Vec<(String, f64, f64)> {
    let find = |w: usize, b: usize, p: usize| {
        rows.iter()
            .find(|r| r.method == method && r.writers == w && r.batch == b && r.payload == p)
    };
    let mut out = Vec::new();
    for p in PAYLOADS {
        if let Some(r) = find(1, 1, p) {
            out.push((format!("batch1_p{p}_vs_raw_syncs"), r.ratio(), 0.9));
        }
        if let (Some(one), Some(eight)) = (find(1, 1, p), find(8, 1, p)) {
            let scale = eight.wal.appends_per_s / one.wal.appends_per_s.max(f64::MIN_POSITIVE);
            out.push((format!("writers8_vs_writers1_p{p}"), scale, 4.0));
        }
        if let Some(r) = find(1, 256, p) {
            out.push((format!("batch256_p{p}_vs_raw_bandwidth"), r.ratio(), 0.8));
        }
    }
    out
}

fn print_json(rows: &[Row], recovery: &Recovery, args: &Args) {
    let mut s = String::from("{\"seconds_per_config\":");
    s.push_str(&format!("{},\"configs\":[", args.seconds));
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"method\":\"{}\",\"writers\":{},\"batch\":{},\"payload\":{},\
             \"appends_per_s\":{:.1},\"entries_per_s\":{:.1},\"mb_per_s\":{:.2},\
             \"p50_sync_us\":{:.1},\"p99_sync_us\":{:.1},\
             \"raw_appends_per_s\":{:.1},\"raw_mb_per_s\":{:.2},\"raw_p50_sync_us\":{:.1},\
             \"raw_p99_sync_us\":{:.1},\"ratio_wal_to_raw\":{:.3}}}",
            method_name(r.method),
            r.writers,
            r.batch,
            r.payload,
            r.wal.appends_per_s,
            r.wal.appends_per_s * r.batch as f64,
            r.wal.mb_per_s,
            r.wal.p50_us,
            r.wal.p99_us,
            r.raw.appends_per_s,
            r.raw.mb_per_s,
            r.raw.p50_us,
            r.raw.p99_us,
            r.ratio()
        ));
    }
    s.push_str("],\"targets\":[");
    let mut first = true;
    for m in &args.methods {
        for (name, value, goal) in targets(rows, *m) {
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(&format!(
                "{{\"method\":\"{}\",\"name\":\"{name}\",\"value\":{value:.3},\"goal\":{goal},\"met\":{}}}",
                method_name(*m),
                value >= goal
            ));
        }
    }
    s.push_str("],\"pwrite_vs_mmap\":[");
    for (i, (p, m, ratio)) in method_ratios(rows).into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"writers\":{},\"batch\":{},\"payload\":{},\"pwrite_appends_per_s\":{:.1},\
             \"mmap_appends_per_s\":{:.1},\"ratio_pwrite_to_mmap\":{ratio:.3}}}",
            p.writers, p.batch, p.payload, p.wal.appends_per_s, m.wal.appends_per_s
        ));
    }
    let per_gib = recovery.seconds * (1u64 << 30) as f64 / recovery.log_bytes.max(1) as f64;
    s.push_str(&format!(
        "],\"recovery\":{{\"log_bytes\":{},\"entries\":{},\"seconds\":{:.4},\
         \"seconds_per_gib\":{:.3},\"extrapolated\":{},\"page_cache\":\"warm\"}}}}",
        recovery.log_bytes,
        recovery.entries,
        recovery.seconds,
        per_gib,
        recovery.log_bytes < (1 << 30)
    ));
    println!("{s}");
}

fn print_table(rows: &[Row], recovery: &Recovery, args: &Args) {
    println!(
        "{:<7} {:>3} {:>5} {:>6} | {:>10} {:>9} {:>8} {:>8} | {:>10} {:>9} {:>8} | {:>6}",
        "method",
        "wr",
        "batch",
        "bytes",
        "appends/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "raw app/s",
        "raw MB/s",
        "raw p50",
        "ratio"
    );
    for r in rows {
        println!(
            "{:<7} {:>3} {:>5} {:>6} | {:>10.0} {:>9.1} {:>8.0} {:>8.0} | {:>10.0} {:>9.1} {:>8.0} | {:>6.2}",
            method_name(r.method),
            r.writers,
            r.batch,
            r.payload,
            r.wal.appends_per_s,
            r.wal.mb_per_s,
            r.wal.p50_us,
            r.wal.p99_us,
            r.raw.appends_per_s,
            r.raw.mb_per_s,
            r.raw.p50_us,
            r.ratio()
        );
    }
    let ratios = method_ratios(rows);
    if !ratios.is_empty() {
        println!("\npwrite/mmap appends/s, same run:");
        for (p, _, ratio) in ratios {
            println!(
                "  wr {:>2} batch {:>3} bytes {:>5}: {ratio:.2}",
                p.writers, p.batch, p.payload
            );
        }
    }
    println!();
    for m in &args.methods {
        for (name, value, goal) in targets(rows, *m) {
            let verdict = if value >= goal { "met" } else { "MISSED" };
            println!(
                "{:<7} {name:<32} {value:>6.2} (goal >= {goal}) {verdict}",
                method_name(*m)
            );
        }
    }
    println!(
        "\nrecovery: {} entries, {:.1} MiB in {:.3} s = {:.2} s/GiB (extrapolated from the smaller log; warm page cache)",
        recovery.entries,
        recovery.log_bytes as f64 / (1 << 20) as f64,
        recovery.seconds,
        recovery.seconds * (1u64 << 30) as f64 / recovery.log_bytes.max(1) as f64
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_wal: {e}");
            std::process::exit(2);
        }
    };
    let limit = Duration::from_secs_f64(args.seconds);
    // The machine is shared, so its disk speed drifts: every configuration
    // runs in ROUNDS slices interleaved with its baseline, and the medians
    // are compared.
    let slice = limit.div_f64(ROUNDS as f64);
    let mut rows = Vec::new();
    for batch in BATCH_SIZES {
        for payload in PAYLOADS {
            if args.only_batch.is_some_and(|b| b != batch)
                || args.only_payload.is_some_and(|p| p != payload)
            {
                continue;
            }
            let configs: Vec<WalConfig> = args
                .methods
                .iter()
                .flat_map(|&method| {
                    WRITER_COUNTS.map(|writers| WalConfig {
                        method,
                        writers,
                        batch,
                        payload,
                    })
                })
                .collect();
            let mut raw = RawContender::open(&args.dir.join("raw"), batch, payload);
            let wals: Vec<WalContender> = configs
                .iter()
                .enumerate()
                .map(|(i, c)| WalContender::open(&args.dir.join(format!("wal{i}")), *c))
                .collect();
            let mut raw_slices = Vec::new();
            let mut wal_slices: Vec<Vec<Slice>> = configs.iter().map(|_| Vec::new()).collect();
            for _ in 0..ROUNDS {
                raw_slices.push(raw.run(slice));
                for (w, slices) in wals.iter().zip(&mut wal_slices) {
                    slices.push(w.run(w.config.writers, slice));
                }
            }
            drop(wals);
            drop(raw);
            fresh_dir(&args.dir);
            let raw = summarize(raw_slices);
            for (c, slices) in configs.into_iter().zip(wal_slices) {
                let wal = summarize(slices);
                if !args.json {
                    eprintln!(
                        "{} writers={} batch={batch} payload={payload}: {:.0} appends/s, raw {:.0}",
                        method_name(c.method),
                        c.writers,
                        wal.appends_per_s,
                        raw.appends_per_s
                    );
                }
                rows.push(Row {
                    method: c.method,
                    writers: c.writers,
                    batch,
                    payload,
                    wal,
                    raw,
                });
            }
        }
    }
    let recovery = run_recovery(&args.dir.join("recovery"), args.recovery_mib);
    let _ = std::fs::remove_dir_all(&args.dir);
    if args.json {
        print_json(&rows, &recovery, &args);
    } else {
        print_table(&rows, &recovery, &args);
    }
}
