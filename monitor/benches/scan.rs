//! The /proc scan on this machine, and the mountinfo parser on a synthetic
//! table of container-sized lines.
//!
//! Run as root for a representative figure (as a user, other users'
//! namespaces are unreadable and the walk is refused):
//! `cargo bench -p monitor --bench scan`.
//!
//! Measured on the dev VM (2 cores, kernel 6.18, release build, quiet):
//!
//! | machine state                          | full   | +devices | minimal |
//! |----------------------------------------|--------|----------|---------|
//! | 87 processes (57 kernel threads), 1 ns | 1.6 ms | 3.7 ms   | 1.0 ms  |
//! | 577 processes in 101 namespaces        | 47 ms  | 70 ms    | 23 ms   |
//!
//! Per process: stat 18 us, status 24 us, cgroup 16 us, readlinks ~5 us
//! each; per namespace: reading mountinfo ~77 us for 21 lines. Parsing
//! 1000 overlay lines takes 1.1 ms.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mountleak::procfs::{mountinfo, ScanOptions, Scanner};

fn scan(c: &mut Criterion) {
    let mut scanner = Scanner::new();
    let me = scanner
        .scan(&ScanOptions::default())
        .ok()
        .and_then(|out| out.snapshot.self_ns);

    c.bench_function("scan/full", |b| {
        let opts = ScanOptions::default();
        b.iter(|| black_box(scanner.scan(&opts).ok()))
    });
    c.bench_function("scan/full+devices", |b| {
        let opts = ScanOptions::default().with_all_devices();
        b.iter(|| black_box(scanner.scan(&opts).ok()))
    });
    c.bench_function("scan/full-minimal", |b| {
        let opts = ScanOptions {
            process_details: false,
            namespace_owner: false,
            ..ScanOptions::default()
        };
        b.iter(|| black_box(scanner.scan(&opts).ok()))
    });
    if let Some(me) = me {
        c.bench_function("scan/targeted-own-ns", |b| {
            let opts = ScanOptions::default();
            b.iter(|| black_box(scanner.scan_namespaces(&[me], &opts).ok()))
        });
    }
}

fn parse(c: &mut Criterion) {
    // 1000 overlay mounts like Docker's, with escapes in a few paths.
    let mut text = Vec::new();
    for i in 0..1000u32 {
        let dir = if i % 10 == 0 {
            "with\\040space"
        } else {
            "plain"
        };
        text.extend_from_slice(
            format!(
                "{id} 29 0:{dev} / /var/lib/docker/overlay2/{i:064x}/{dir}/merged rw,relatime shared:{i} - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/{i:064x}/diff,workdir=/var/lib/docker/overlay2/{i:064x}/work\n",
                id = 100 + i,
                dev = 100 + i,
            )
            .as_bytes(),
        );
    }
    c.bench_function("mountinfo/parse-1000-overlay-lines", |b| {
        b.iter(|| black_box(mountinfo::parse(black_box(&text))))
    });
}

criterion_group!(benches, scan, parse);
criterion_main!(benches);
