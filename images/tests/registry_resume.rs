//! Blob downloads from a registry that drops, stalls or trickles connections: a download goes on
//! for as long as attempts keep bringing enough bytes, gives up a connection that goes quiet or
//! crawls, and gives up the download when attempts in a row bring too little. The registry is a
//! small HTTP server on 127.0.0.1 that serves one blob with Range and misbehaves by plan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use images::vhdx::check::error_line;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use images::oci::Repository;
use images::oci::registry::speed::SpeedFloor;
use images::oci::registry::{Patience, Registry};

/// What the server does on one connection, after the headers of a 206 (or 200) answer.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Sends this many bytes of the range, then closes the connection.
    DropAfter(usize),
    /// Sends this many bytes, then holds the connection open without a word for this long.
    StallAfter(usize, Duration),
    /// Sends the range one byte at a time, this far apart, until the client hangs up.
    Trickle(Duration),
    /// Sends the whole range.
    Whole,
    /// Ignores Range: answers 200 with the whole blob, sends this many bytes of it, then closes
    /// the connection.
    IgnoreRange(usize),
}

/// Serves `blob` at `/v2/repo/blobs/DIGEST`, one connection per entry of `plan`, each on its own
/// thread; returns the registry's `host:port` and the accepting thread (done once the plan is).
fn serve(blob: Arc<Vec<u8>>, plan: Vec<Cut>) -> (String, JoinHandle<()>) {
    let (host, _, handle) = serve_counted(blob, plan);
    (host, handle)
}

/// [`serve`], also counting the connections accepted so far.
fn serve_counted(blob: Arc<Vec<u8>>, plan: Vec<Cut>) -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let handle = std::thread::spawn(move || {
        for cut in plan {
            let (stream, _) = listener.accept().unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let blob = blob.clone();
            std::thread::spawn(move || answer(stream, &blob, cut));
        }
    });
    (host, connections, handle)
}

fn answer(mut stream: TcpStream, blob: &[u8], cut: Cut) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut from = 0;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 2 {
        if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=")
            && !matches!(cut, Cut::IgnoreRange(_))
        {
            from = range.trim().trim_end_matches('-').parse().unwrap();
        }
        line.clear();
    }
    let size = blob.len();
    let head = if from == 0 {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{size}\r\n\r\n",
            size - from,
            size - 1
        )
    };
    let rest = &blob[from..];
    let sent = match cut {
        Cut::DropAfter(n) | Cut::StallAfter(n, _) | Cut::IgnoreRange(n) => {
            &rest[..n.min(rest.len())]
        }
        Cut::Trickle(_) => &[],
        Cut::Whole => rest,
    };
    // A client that gave up makes the writes fail; the server does not care.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(sent))
        .and_then(|()| stream.flush());
    if let Cut::StallAfter(_, hold) = cut {
        std::thread::sleep(hold);
    }
    if let Cut::Trickle(gap) = cut {
        for byte in rest.chunks(1) {
            if stream
                .write_all(byte)
                .and_then(|()| stream.flush())
                .is_err()
            {
                break;
            }
            std::thread::sleep(gap);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn blob(len: usize) -> (Arc<Vec<u8>>, String) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i * 7 % 253).unwrap())
        .collect();
    let digest = images::oci::artifact::digest_of(&bytes);
    (Arc::new(bytes), digest)
}

/// The default patience with retry delays short enough for a test, and progress and the speed
/// floor scaled down to the test's blobs.
fn quick(stall: Duration) -> Patience {
    Patience {
        stall,
        floor: SpeedFloor {
            bytes_per_sec: 1024,
            window: Duration::from_secs(1),
        },
        progress: 4096,
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..Patience::DEFAULT
    }
}

#[test]
fn a_download_dropped_more_often_than_the_attempt_limit_completes_while_each_attempt_progresses() {
    let (bytes, digest) = blob(130_000);
    // Each connection brings 10 000 bytes and drops: twelve drops, more than the attempt limit,
    // and each brings bytes; the thirteenth brings the rest.
    let drops = 12;
    assert!(drops > Patience::DEFAULT.attempts);
    let mut plan = vec![Cut::DropAfter(10_000); drops as usize];
    plan.push(Cut::Whole);
    let (host, server) = serve(bytes.clone(), plan);
    let mut registry =
        Registry::new(&host, "repo", true).with_patience(quick(Duration::from_secs(5)));
    let mut out = Vec::new();
    registry.get_blob(&digest, 130_000, &mut out).unwrap();
    assert_eq!(out, *bytes);
    assert_eq!(registry.bytes_received, 130_000);
    server.join().unwrap();
}

#[test]
fn a_stalled_connection_is_given_up_after_the_stall_timeout_and_the_download_resumes() {
    let (bytes, digest) = blob(40_000);
    let stall = Duration::from_secs(1);
    let hold = Duration::from_secs(10);
    let (host, server) = serve(
        bytes.clone(),
        vec![Cut::StallAfter(15_000, hold), Cut::Whole],
    );
    let mut registry = Registry::new(&host, "repo", true).with_patience(quick(stall));
    let mut out = Vec::new();
    let start = Instant::now();
    registry.get_blob(&digest, 40_000, &mut out).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(out, *bytes);
    // Not before the stall timeout, and without waiting for the server to close the quiet
    // connection.
    assert!(elapsed >= stall, "resumed after {elapsed:?}");
    assert!(elapsed < hold / 2, "resumed after {elapsed:?}");
    server.join().unwrap();
}

#[test]
fn attempts_in_a_row_that_bring_nothing_end_the_download() {
    let (bytes, digest) = blob(50_000);
    let patience = quick(Duration::from_secs(5));
    // Some bytes first (which start the count again), then nothing, attempt after attempt.
    let mut plan = vec![Cut::DropAfter(20_000)];
    plan.extend(vec![Cut::DropAfter(0); patience.attempts as usize]);
    let (host, server) = serve(bytes, plan);
    let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
    let mut out = Vec::new();
    let err = registry.get_blob(&digest, 50_000, &mut out).unwrap_err();
    assert_eq!(out.len(), 20_000);
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "{} attempts in a row moved less than 4096 bytes each",
            patience.attempts
        )) && text.contains("20000 of 50000 bytes held"),
        "{text}"
    );
    server.join().unwrap();
}

#[test]
fn a_registry_that_sends_one_byte_per_connection_ends_the_download_within_the_attempt_limit() {
    let (bytes, digest) = blob(50_000);
    let patience = quick(Duration::from_secs(5));
    // A byte and a hang-up, connection after connection: each attempt brings a byte, which is
    // not progress. More connections are planned than the download may use.
    let planned = 200;
    let (host, connections, _server) = serve_counted(bytes, vec![Cut::DropAfter(1); planned]);
    let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
    let mut out = Vec::new();
    let err = registry.get_blob(&digest, 50_000, &mut out).unwrap_err();
    let seen = connections.load(Ordering::SeqCst);
    assert!(
        seen <= patience.attempts as usize,
        "{seen} connections for a byte each"
    );
    assert_eq!(out.len(), seen);
    let text = error_line(&err);
    assert!(
        text.contains(&format!(
            "{} attempts in a row moved less than 4096 bytes each",
            patience.attempts
        )),
        "{text}"
    );
}

#[test]
fn attempts_that_each_progress_are_still_bounded_in_all() {
    let (bytes, digest) = blob(200_000);
    let patience = Patience {
        total_attempts: 5,
        ..quick(Duration::from_secs(5))
    };
    // Each connection brings 5000 bytes, more than `progress`, and hangs up: the download
    // would complete after 40, and gives up after `total_attempts`.
    let (host, connections, _server) = serve_counted(bytes, vec![Cut::DropAfter(5000); 60]);
    let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
    let mut out = Vec::new();
    let err = registry.get_blob(&digest, 200_000, &mut out).unwrap_err();
    assert_eq!(connections.load(Ordering::SeqCst), 5);
    let text = error_line(&err);
    assert!(
        text.contains("5 attempts failed in all") && text.contains("25000 of 200000 bytes held"),
        "{text}"
    );
}

#[test]
fn a_registry_that_trickles_under_the_speed_floor_is_given_up_as_too_slow() {
    let (bytes, digest) = blob(50_000);
    let stall = Duration::from_secs(1);
    // A byte every 200 ms never lets the stall timeout fire, and is 5 bytes/s, far under the
    // floor of 1 KiB/s over 1 s. Two attempts, each given up after about a second.
    let patience = Patience {
        attempts: 2,
        ..quick(stall)
    };
    let (host, connections, _server) =
        serve_counted(bytes, vec![Cut::Trickle(Duration::from_millis(200)); 10]);
    let (done, result) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
        let mut out = Vec::new();
        let _ = done.send(registry.get_blob(&digest, 50_000, &mut out));
    });
    let err = result
        .recv_timeout(Duration::from_secs(20))
        .expect("the download still ran after 20 s")
        .unwrap_err();
    let elapsed = start.elapsed();
    let text = error_line(&err);
    assert!(text.contains("too slow"), "{text}");
    assert!(
        text.contains("2 attempts in a row moved less than 4096 bytes each"),
        "{text}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // Each attempt is judged once its first window (1 s) is over.
    assert!(
        elapsed >= Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "gave up after {elapsed:?}"
    );
}

#[test]
fn a_manifest_trickled_under_the_speed_floor_is_given_up_as_too_slow() {
    let (bytes, _) = blob(50_000);
    // The server answers any GET with a 200 and trickles the body: a byte every 200 ms never
    // lets the stall timeout (1 s) fire, and is far under the floor of 1 KiB/s over 1 s.
    let (host, connections, _server) =
        serve_counted(bytes, vec![Cut::Trickle(Duration::from_millis(200)); 4]);
    let (text, elapsed) = manifest_given_up(host);
    assert!(
        text.contains("too slow") && text.contains("manifest"),
        "{text}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // Judged once its first window (1 s) is over.
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after {elapsed:?}"
    );
}

/// Fetches manifest `latest` from the registry at `host` with a patience of 1 s, in a thread
/// the test never waits on for more than 20 s; returns the error's line and the time it took.
fn manifest_given_up(host: String) -> (String, Duration) {
    let (done, result) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let mut registry =
            Registry::new(&host, "repo", true).with_patience(quick(Duration::from_secs(1)));
        let _ = done.send(registry.get_manifest("latest"));
    });
    let err = result
        .recv_timeout(Duration::from_secs(20))
        .expect("the fetch still ran after 20 s")
        .unwrap_err();
    (error_line(&err), start.elapsed())
}

/// A registry at which every request is refused with a bearer challenge whose token service is
/// `realm_host`; returns its `host:port`.
fn serve_challenge(realm_host: &str, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let head = format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{realm_host}/token\",service=\"test\"\r\nContent-Length: 0\r\n\r\n"
    );
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    host
}

#[test]
fn a_token_trickled_under_the_speed_floor_is_given_up_as_too_slow() {
    let (bytes, _) = blob(50_000);
    // The token service answers with a 200 and a byte every 200 ms, under the stall timeout
    // (1 s) and far under the floor of 1 KiB/s over 1 s.
    let (token_host, tokens, _server) =
        serve_counted(bytes, vec![Cut::Trickle(Duration::from_millis(200)); 4]);
    let host = serve_challenge(&token_host, 4);
    let (text, elapsed) = manifest_given_up(host);
    assert!(
        text.contains("too slow") && text.contains("registry token"),
        "{text}"
    );
    assert_eq!(tokens.load(Ordering::SeqCst), 1);
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after {elapsed:?}"
    );
}

#[test]
fn a_registry_that_ignores_range_restarts_the_blob_and_its_bytes_count_as_progress() {
    let (bytes, digest) = blob(60_000);
    let patience = quick(Duration::from_secs(5));
    // 20 000 bytes held; then answers that ignore Range and drop before reaching the held
    // offset, more of them than the attempt limit, each bringing 10 000 bytes from the start;
    // then the whole blob (a 200 again).
    let ignored = patience.attempts as usize + 2;
    let mut plan = vec![Cut::DropAfter(20_000)];
    plan.extend(vec![Cut::IgnoreRange(10_000); ignored]);
    plan.push(Cut::IgnoreRange(60_000));
    let (host, connections, server) = serve_counted(bytes.clone(), plan);
    let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
    let mut out = Vec::new();
    registry.get_blob(&digest, 60_000, &mut out).unwrap();
    assert_eq!(out, *bytes);
    assert_eq!(connections.load(Ordering::SeqCst), ignored + 2);
    assert_eq!(
        registry.bytes_received,
        20_000 + 10_000 * ignored as u64 + 60_000
    );
    server.join().unwrap();
}

#[test]
fn a_registry_that_always_ignores_range_and_drops_early_ends_within_the_attempt_limit() {
    let (bytes, digest) = blob(60_000);
    let patience = Patience {
        total_attempts: 5,
        ..quick(Duration::from_secs(5))
    };
    // 20 000 bytes held, then every answer ignores Range and drops at 10 000 bytes, before the
    // held offset: the blob never completes, and the download ends after `total_attempts`.
    let mut plan = vec![Cut::DropAfter(20_000)];
    plan.extend(vec![Cut::IgnoreRange(10_000); 50]);
    let (host, connections, _server) = serve_counted(bytes, plan);
    let mut registry = Registry::new(&host, "repo", true).with_patience(patience);
    let mut out = Vec::new();
    let err = registry.get_blob(&digest, 60_000, &mut out).unwrap_err();
    assert_eq!(connections.load(Ordering::SeqCst), 5);
    // What the last answer brought, from the start of the blob: the partial blob was started
    // again, not kept at the offset the registry would not resume from.
    assert_eq!(out.len(), 10_000);
    let text = error_line(&err);
    assert!(
        text.contains("5 attempts failed in all") && text.contains("10000 of 60000 bytes held"),
        "{text}"
    );
}
