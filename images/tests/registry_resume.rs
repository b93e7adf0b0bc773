//! Blob downloads from a registry that drops or stalls connections: a download goes on for as
//! long as attempts keep bringing bytes, gives up a connection that goes quiet, and gives up the
//! download when attempts in a row bring nothing. The registry is a small HTTP server on
//! 127.0.0.1 that serves one blob with Range and misbehaves by plan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use images::oci::Repository;
use images::oci::registry::{Patience, Registry};

/// What the server does on one connection, after the headers of a 206 (or 200) answer.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Sends this many bytes of the range, then closes the connection.
    DropAfter(usize),
    /// Sends this many bytes, then holds the connection open without a word for this long.
    StallAfter(usize, Duration),
    /// Sends the whole range.
    Whole,
}

/// Serves `blob` at `/v2/repo/blobs/DIGEST`, one connection per entry of `plan`, each on its own
/// thread; returns the registry's `host:port` and the accepting thread (done once the plan is).
fn serve(blob: Arc<Vec<u8>>, plan: Vec<Cut>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        for cut in plan {
            let (stream, _) = listener.accept().unwrap();
            let blob = blob.clone();
            std::thread::spawn(move || answer(stream, &blob, cut));
        }
    });
    (host, handle)
}

fn answer(mut stream: TcpStream, blob: &[u8], cut: Cut) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut from = 0;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 2 {
        if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
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
        Cut::DropAfter(n) | Cut::StallAfter(n, _) => &rest[..n.min(rest.len())],
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
    let _ = stream.shutdown(Shutdown::Both);
}

fn blob(len: usize) -> (Arc<Vec<u8>>, String) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i * 7 % 253).unwrap())
        .collect();
    let digest = images::oci::artifact::digest_of(&bytes);
    (Arc::new(bytes), digest)
}

/// The default patience with retry delays short enough for a test.
fn quick(stall: Duration) -> Patience {
    Patience {
        stall,
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
            "{} attempts in a row received nothing",
            patience.attempts
        )) && text.contains("20000 of 50000 bytes held"),
        "{text}"
    );
    server.join().unwrap();
}
